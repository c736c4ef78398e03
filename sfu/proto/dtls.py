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
MAX_RECORD = 16384
# One read of OpenSSL's outgoing memory BIO; it holds a flight or a record or two.
_BIO_READ_SIZE = 65536
_APPLICATION_DATA = 23
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


def _application_records(data: bytes) -> int:
    """How many records a datagram holds if all are whole application data records
    (content type 23, RFC 6347 section 4.1), else 0."""
    count = 0
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] != _APPLICATION_DATA or pos + 13 > end:
            return 0
        pos += 13 + ((data[pos + 11] << 8) | data[pos + 12])
        count += 1
    return count if pos == end else 0


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
        self.version: str | None = None  # "DTLSv1.2", once connected
        self._conn = SSL.Connection(context, None)
        self._conn.set_accept_state()
        self._conn.set_ciphertext_mtu(DTLS_MTU)
        self._outgoing: list[bytes] = []
        self._received: list[bytes] = []
        self.keep_application_data = False

    def application_data(self) -> list[bytes]:
        """The application records received since the last call (SCTP packets)."""
        out, self._received = self._received, []
        return out

    def send_application_data(self, data: bytes) -> bool:
        """Encrypt one record for the peer (False when not connected)."""
        if self.state != DtlsState.CONNECTED:
            return False
        try:
            self._conn.send(data)
        except SSL.Error as exc:
            log.debug("dtls write error=%s", exc)
            return False
        self._collect()
        return True

    def receive(self, data: bytes) -> None:
        """Feed one datagram of DTLS records."""
        state = self.state
        if state is DtlsState.CONNECTED:
            self._conn.bio_write(data)
            records = _application_records(data)
            self._read_application_data(records)
            if not records:
                self._collect()
            # Reading application data records of DTLS 1.2 makes OpenSSL write
            # nothing (no renegotiation, no key update), so there is nothing to
            # collect; were it ever otherwise, the next send or datagram collects it.
            return
        if state in (DtlsState.FAILED, DtlsState.CLOSED):
            return
        self._conn.bio_write(data)
        self.state = DtlsState.CONNECTING
        self._handshake()
        if self.state is DtlsState.CONNECTED:
            self._read_application_data(0)
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
        if profile is None and not self.keep_application_data:
            self._fail("no SRTP profile negotiated")
            return
        self.cipher = self._conn.get_cipher_name()
        self.version = self._conn.get_protocol_version_name()
        if profile is None:  # a data-channel transport needs no SRTP keys
            self.state = DtlsState.CONNECTED
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

    def _read_application_data(self, records: int) -> None:
        """Read what the records written so far hold. Media transports carry none;
        data-channel transports carry one SCTP packet per record (RFC 8261), kept
        only when asked for, else drained.

        `records` > 0 says the datagram held exactly that many application data
        records and nothing else: after that many reads OpenSSL has nothing left, so
        the last read, which would only raise WantReadError, is skipped (a record
        OpenSSL discards, say a replay, just ends the loop early). 0: read until
        OpenSSL wants more."""
        recv = self._conn.recv
        keep = self.keep_application_data
        received = self._received
        try:
            if records:
                for _ in range(records):
                    record = recv(MAX_RECORD)
                    if keep:
                        received.append(record)
            else:
                while record := recv(MAX_RECORD):
                    if keep:
                        received.append(record)
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
        """Move what OpenSSL wrote to its memory BIO into datagrams to send.

        A memory BIO hands out everything it holds in one read, so a read that
        returns less than asked for leaves it empty: no second read (which would
        raise WantReadError) is needed."""
        try:
            chunk = self._conn.bio_read(_BIO_READ_SIZE)
        except SSL.WantReadError:
            return
        if len(chunk) == _BIO_READ_SIZE:
            pending = bytearray(chunk)
            while len(chunk) == _BIO_READ_SIZE:
                try:
                    chunk = self._conn.bio_read(_BIO_READ_SIZE)
                except SSL.WantReadError:
                    break
                pending += chunk
            chunk = bytes(pending)
        if not chunk:
            return
        if len(chunk) <= DTLS_MTU:
            # Whole records from OpenSSL that fit one datagram (what split_records
            # would return, without its work): one SCTP packet, one record, one datagram.
            self._outgoing.append(chunk)
        else:
            self._outgoing.extend(split_records(chunk))

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
