"""STUN messages (RFC 8489) as far as ICE-lite needs them (RFC 8445 section 7.3).

Parsing is strict about lengths and never trusts an attribute length; integrity and
fingerprint checks work on the received bytes, not on a re-serialization.
"""

from __future__ import annotations

import binascii
import hmac
import socket
import struct
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_SIZE = 20

BINDING_REQUEST = 0x0001
BINDING_INDICATION = 0x0011
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_PRIORITY = 0x0024
ATTR_USE_CANDIDATE = 0x0025
ATTR_FINGERPRINT = 0x8028
ATTR_ICE_CONTROLLED = 0x8029
ATTR_ICE_CONTROLLING = 0x802A

_FINGERPRINT_XOR = 0x5354554E
_MI_SIZE = 24  # 4-byte attribute header + 20-byte HMAC-SHA1
_FP_SIZE = 8


class StunError(ValueError):
    """Malformed STUN message."""

    code = "bad_stun"


@dataclass(slots=True)
class StunMessage:
    """A parsed STUN message; attributes are kept raw, in order."""

    message_type: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    # Offsets of MESSAGE-INTEGRITY and FINGERPRINT in the received bytes (-1 if absent).
    integrity_offset: int = -1
    fingerprint_offset: int = -1

    def get(self, attr_type: int) -> bytes | None:
        """First value of an attribute, or None."""
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return None

    @property
    def username(self) -> str | None:
        raw = self.get(ATTR_USERNAME)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None


def is_stun(data: bytes) -> bool:
    """Cheap check: top two bits zero, cookie present, length multiple of 4 and fits."""
    return (
        len(data) >= HEADER_SIZE
        and data[0] < 4
        and data[4:8] == b"\x21\x12\xa4\x42"
        and (data[2] << 8 | data[3]) == len(data) - HEADER_SIZE
    )


def parse_stun(data: bytes) -> StunMessage:
    """Parse a STUN message; raise StunError on anything malformed."""
    if len(data) < HEADER_SIZE:
        raise StunError("STUN message shorter than its header")
    message_type, length, cookie = struct.unpack_from("!HHI", data, 0)
    if message_type & 0xC000:
        raise StunError("top bits of STUN message type are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunError("STUN magic cookie missing")
    if length % 4 or length != len(data) - HEADER_SIZE:
        raise StunError("STUN length does not match the datagram")
    msg = StunMessage(message_type, bytes(data[8:20]))
    pos = HEADER_SIZE
    while pos < len(data):
        if pos + 4 > len(data):
            raise StunError("truncated STUN attribute header")
        attr_type, attr_len = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + attr_len
        if end > len(data):
            raise StunError(f"STUN attribute 0x{attr_type:04x} overruns the message")
        if msg.fingerprint_offset >= 0:
            raise StunError("STUN attribute after FINGERPRINT")
        if attr_type == ATTR_MESSAGE_INTEGRITY:
            if attr_len != 20:
                raise StunError("MESSAGE-INTEGRITY must be 20 bytes")
            msg.integrity_offset = pos
        elif attr_type == ATTR_FINGERPRINT:
            if attr_len != 4:
                raise StunError("FINGERPRINT must be 4 bytes")
            msg.fingerprint_offset = pos
        elif msg.integrity_offset >= 0:
            # RFC 8489 14.5: only FINGERPRINT may follow MESSAGE-INTEGRITY.
            raise StunError("STUN attribute after MESSAGE-INTEGRITY")
        msg.attributes.append((attr_type, bytes(data[pos + 4 : end])))
        pos = end + (-attr_len % 4)
        if pos > len(data):
            raise StunError("STUN attribute padding overruns the message")
    return msg


def _with_length(data: bytes, end: int) -> bytes:
    """The message prefix data[:end] with its length field set to cover `end` bytes."""
    prefix = bytearray(data[:end])
    struct.pack_into("!H", prefix, 2, end - HEADER_SIZE)
    return bytes(prefix)


def verify_integrity(data: bytes, msg: StunMessage, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY (short-term credentials: key is the password)."""
    pos = msg.integrity_offset
    if pos < 0:
        return False
    # hmac.digest: OpenSSL's one-shot HMAC, a third of the cost of an HMAC object.
    expected = hmac.digest(key, _with_length(data, pos + _MI_SIZE)[:pos], "sha1")
    return hmac.compare_digest(expected, data[pos + 4 : pos + _MI_SIZE])


def verify_fingerprint(data: bytes, msg: StunMessage) -> bool:
    """Check the FINGERPRINT attribute if present (absent counts as valid)."""
    pos = msg.fingerprint_offset
    if pos < 0:
        return True
    crc = binascii.crc32(_with_length(data, pos + _FP_SIZE)[:pos]) ^ _FINGERPRINT_XOR
    received: int = struct.unpack_from("!I", data, pos + 4)[0]
    return received == crc


def xor_mapped_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """Encode an XOR-MAPPED-ADDRESS value (RFC 8489 14.2). ``host`` is an address as
    the socket gives it (an IPv6 zone, "%eth0", is not part of the address); anything
    else raises ValueError. Every consent check is answered with one: inet_pton, not
    ipaddress, which costs ten times as much."""
    xport = port ^ (MAGIC_COOKIE >> 16)
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        except OSError:
            raise ValueError(f"not an IP address: {host!r}") from None
        mask = int.from_bytes(_COOKIE_BYTES + transaction_id, "big")
        xaddr6 = int.from_bytes(packed, "big") ^ mask
        return struct.pack("!BBH", 0, 2, xport) + xaddr6.to_bytes(16, "big")
    xaddr = int.from_bytes(packed, "big") ^ MAGIC_COOKIE
    return struct.pack("!BBHI", 0, 1, xport, xaddr)


def build_stun(
    message_type: int,
    transaction_id: bytes,
    attributes: list[tuple[int, bytes]],
    integrity_key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """Serialize a STUN message, appending MESSAGE-INTEGRITY and FINGERPRINT as asked."""
    body = bytearray()
    for attr_type, value in attributes:
        body += struct.pack("!HH", attr_type, len(value)) + value + b"\x00" * (-len(value) % 4)
    msg = bytearray(struct.pack("!HHI", message_type, len(body), MAGIC_COOKIE))
    msg += transaction_id + body
    if integrity_key is not None:
        struct.pack_into("!H", msg, 2, len(msg) - HEADER_SIZE + _MI_SIZE)
        digest = hmac.digest(integrity_key, bytes(msg), "sha1")
        msg += struct.pack("!HH", ATTR_MESSAGE_INTEGRITY, 20) + digest
    if fingerprint:
        struct.pack_into("!H", msg, 2, len(msg) - HEADER_SIZE + _FP_SIZE)
        crc = binascii.crc32(bytes(msg)) ^ _FINGERPRINT_XOR
        msg += struct.pack("!HHI", ATTR_FINGERPRINT, 4, crc)
    struct.pack_into("!H", msg, 2, len(msg) - HEADER_SIZE)
    return bytes(msg)
