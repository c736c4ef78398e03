"""ICE-lite responder (RFC 8445 section 2.5): answer valid binding requests, nothing else.

A lite agent never sends checks; it learns the peer's address from a binding request
that carries valid short-term credentials (USERNAME "local:remote", MESSAGE-INTEGRITY
keyed with the local password).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

from sfu.wire import stun

_ICE_CHARS = string.ascii_letters + string.digits


def random_ice_string(length: int) -> str:
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


@dataclass(frozen=True, slots=True)
class IceCredentials:
    ufrag: str
    pwd: str

    @classmethod
    def generate(cls) -> IceCredentials:
        # RFC 8445 5.3: ufrag >= 24 bits, pwd >= 128 bits of randomness.
        return cls(random_ice_string(8), random_ice_string(24))


@dataclass(frozen=True, slots=True)
class IceCheck:
    """A binding request that passed authentication."""

    local_ufrag: str
    remote_ufrag: str
    nominated: bool
    response: bytes


def answer_binding_request(
    data: bytes,
    msg: stun.StunMessage,
    addr: tuple[str, int],
    credentials_for: Callable[[str], IceCredentials | None],
) -> IceCheck | None:
    """Authenticate a binding request and build its success response, or return None.

    Unauthenticated requests get no answer at all: a lite agent has nothing to say to
    strangers, and silence gives an attacker no reflection.
    """
    if msg.message_type != stun.BINDING_REQUEST or msg.integrity_offset < 0:
        return None
    username = msg.username
    if username is None or ":" not in username:
        return None
    local_ufrag, _, remote_ufrag = username.partition(":")
    creds = credentials_for(local_ufrag)
    if creds is None:
        return None
    key = creds.pwd.encode()
    if not stun.verify_fingerprint(data, msg) or not stun.verify_integrity(data, msg, key):
        return None
    response = stun.build_stun(
        stun.BINDING_SUCCESS,
        msg.transaction_id,
        [
            (
                stun.ATTR_XOR_MAPPED_ADDRESS,
                stun.xor_mapped_address(addr[0], addr[1], msg.transaction_id),
            )
        ],
        integrity_key=key,
    )
    nominated = msg.get(stun.ATTR_USE_CANDIDATE) is not None
    return IceCheck(local_ufrag, remote_ufrag, nominated, response)
