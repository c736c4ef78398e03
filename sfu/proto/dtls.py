"""DTLS-SRTP server side (RFC 5764, RFC 8827), sans-I/O over OpenSSL memory BIOs.

The SFU always answers a=setup:passive, so it is always the DTLS server and picks
the SRTP profile: AEAD_AES_128_GCM first, AES_CM_128_HMAC_SHA1_80 accepted.
"""

from __future__ import annotations

import datetime
import hmac
import logging
import secrets
import struct
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

log = logging.getLogger(__name__)

DTLS1_2_VERSION = 0xFEFD
DTLS_MTU = 1200
_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"
)
# (OpenSSL name, SDP/stats name, key length, salt length)
_PROFILES = {
    b"SRTP_AEAD_AES_128_GCM": ("AEAD_AES_128_GCM", 16, 12),
    b"SRTP_AES128_CM_SHA1_80": ("AES_CM_128_HMAC_SHA1_80", 16, 14),
}
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha-1": hashes.SHA1(),
    "sha-256": hashes.SHA256(),
    "sha-384": hashes.SHA384(),
    "sha-512": hashes.SHA512(),
}


class DtlsState(Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """Keying material for one DTLS association, from the server's point of view."""

    profile: str
    local_key: bytes  # key || salt the SFU protects with
    remote_key: bytes  # key || salt the peer protects with

    def __repr__(self) -> str:  # never print keys
        return f"SrtpKeys(profile={self.profile!r})"


def _fingerprint(der: bytes, algo: hashes.HashAlgorithm) -> str:
    digest = hashes.Hash(algo)
    digest.update(der)
    return ":".join(f"{b:02X}" for b in digest.finalize())


class DtlsCertificate:
    """The SFU's DTLS identity: a fresh self-signed ECDSA P-256 certificate per process."""

    def __init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(8))])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        self._key = key
        self.fingerprint_sha256 = _fingerprint(
            self.certificate.public_bytes(Encoding.DER), hashes.SHA256()
        )

    def create_context(self) -> SSL.Context:
        """An OpenSSL context for DTLS 1.2+ server sessions with this certificate."""
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_min_proto_version(DTLS1_2_VERSION)
        ctx.use_certificate(self.certificate)
        ctx.use_privatekey(self._key)
        ctx.set_cipher_list(_CIPHERS)
        ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET)
        # Any certificate is accepted by OpenSSL; its fingerprint is checked against the SDP.
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_args: True)
        ctx.set_tlsext_use_srtp(b":".join(_PROFILES))
        return ctx


def split_records(data: bytes) -> list[bytes]:
    """Pack DTLS records into datagrams of at most DTLS_MTU bytes, never splitting a record."""
    datagrams: list[bytes] = []
    current = bytearray()
    pos = 0
    while pos + 13 <= len(data):
        (length,) = struct.unpack_from("!H", data, pos + 11)
        record = data[pos : pos + 13 + length]
        pos += 13 + length
        if current and len(current) + len(record) > DTLS_MTU:
            datagrams.append(bytes(current))
            current = bytearray()
        current += record
    if current:
        datagrams.append(bytes(current))
    return datagrams


class DtlsServer:
    """One DTLS association; the caller moves bytes and time in and out."""

    def __init__(self, context: SSL.Context, remote_fingerprints: list[tuple[str, str]]) -> None:
        self.remote_fingerprints = remote_fingerprints
        self.state = DtlsState.NEW
        self.keys: SrtpKeys | None = None
        self.failure: str | None = None
        self.cipher: str | None = None
        self._conn = SSL.Connection(context, None)
        self._conn.set_accept_state()
        self._conn.set_ciphertext_mtu(DTLS_MTU)
        self._outgoing: list[bytes] = []

    def receive(self, data: bytes) -> None:
        """Feed one datagram of DTLS records."""
        if self.state in (DtlsState.FAILED, DtlsState.CLOSED):
            return
        self._conn.bio_write(data)
        if self.state in (DtlsState.NEW, DtlsState.CONNECTING):
            self.state = DtlsState.CONNECTING
            self._handshake()
        else:
            self._read_application_data()
        self._collect()

    def _handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as exc:
            self._fail(f"DTLS handshake failed: {exc}")
            return
        self._on_handshake_done()

    def _on_handshake_done(self) -> None:
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            self._fail("peer sent no DTLS certificate")
            return
        der = cert.public_bytes(Encoding.DER)
        if not self._fingerprint_matches(der):
            self._fail("peer DTLS certificate does not match the SDP fingerprint")
            return
        profile_name = self._conn.get_selected_srtp_profile()
        profile = _PROFILES.get(profile_name)
        if profile is None:
            self._fail("no SRTP profile negotiated")
            return
        name, key_len, salt_len = profile
        material = self._conn.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len)
        )
        client_key = material[:key_len]
        server_key = material[key_len : 2 * key_len]
        client_salt = material[2 * key_len : 2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len :]
        self.keys = SrtpKeys(name, server_key + server_salt, client_key + client_salt)
        self.cipher = self._conn.get_cipher_name()
        self.state = DtlsState.CONNECTED

    def _fingerprint_matches(self, der: bytes) -> bool:
        # RFC 8122 section 5: compare with the strongest hash function offered.
        offered = [algo for algo, _ in self.remote_fingerprints if algo in _HASHES]
        if not offered:
            return False
        strongest = max(offered, key=list(_HASHES).index)
        actual = _fingerprint(der, _HASHES[strongest])
        return any(
            hmac.compare_digest(actual, expected)
            for algo, expected in self.remote_fingerprints
            if algo == strongest
        )

    def _read_application_data(self) -> None:
        # WebRTC sends no DTLS application data on media transports; drain and notice close.
        try:
            while self._conn.recv(1500):
                pass
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self.state = DtlsState.CLOSED
        except SSL.Error as exc:
            log.debug("dtls read error=%s", exc)

    def _fail(self, reason: str) -> None:
        self.state = DtlsState.FAILED
        self.failure = reason

    def _collect(self) -> None:
        pending = bytearray()
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            pending += chunk
        if pending:
            self._outgoing.extend(split_records(bytes(pending)))

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timeout(self) -> float | None:
        """Seconds until a handshake retransmission is due, or None."""
        if self.state != DtlsState.CONNECTING:
            return None
        return self._conn.DTLSv1_get_timeout()

    def handle_timeout(self) -> None:
        if self.state != DtlsState.CONNECTING:
            return
        try:
            self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(f"DTLS retransmission failed: {exc}")
        self._collect()

    def close(self) -> None:
        """Send close_notify if connected, and forget the keys."""
        if self.state == DtlsState.CONNECTED:
            try:
                self._conn.shutdown()
            except SSL.Error:
                pass
            self._collect()
        self.keys = None
        self.state = DtlsState.CLOSED
