"""DTLS-SRTP client side (RFC 5764) over OpenSSL memory BIOs, sans-I/O.

The mirror of sfu/proto/dtls.py: the load client is DTLS client (``a=setup:active``),
checks the server certificate against the answer's sha-256 fingerprint and exports
SRTP keys from its own point of view (local = client write key).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from sfu.proto.dtls import SrtpKeys, split_records

DTLS1_2_VERSION = 0xFEFD
DTLS_MTU = 1200
_CIPHERS = b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
SRTP_PROFILES = b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"
# OpenSSL profile name -> (SrtpKeys profile name, key length, salt length)
_PROFILES = {
    b"SRTP_AEAD_AES_128_GCM": ("AEAD_AES_128_GCM", 16, 12),
    b"SRTP_AES128_CM_SHA1_80": ("AES_CM_128_HMAC_SHA1_80", 16, 14),
}


class DtlsClientError(Exception):
    """The handshake failed or its result cannot be trusted."""


def sha256_fingerprint(der: bytes) -> str:
    """Upper-case colon-separated SHA-256 of a DER certificate, as SDP writes it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


class ClientCertificate:
    """A fresh self-signed ECDSA P-256 certificate, as a browser makes per connection."""

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
            .not_valid_after(now + datetime.timedelta(days=2))
            .sign(key, hashes.SHA256())
        )
        self.key = key
        self.fingerprint_sha256 = sha256_fingerprint(self.certificate.public_bytes(Encoding.DER))

    def create_context(self) -> SSL.Context:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_min_proto_version(DTLS1_2_VERSION)
        ctx.use_certificate(self.certificate)
        ctx.use_privatekey(self.key)
        ctx.set_cipher_list(_CIPHERS)
        ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET)
        # The server's certificate is self-signed: trust comes from the SDP fingerprint,
        # checked after the handshake.
        ctx.set_verify(SSL.VERIFY_PEER, lambda *_args: True)
        ctx.set_tlsext_use_srtp(SRTP_PROFILES)
        return ctx


class DtlsClient:
    """One DTLS association as client; bytes and timer ticks in, datagrams and keys out."""

    def __init__(self, certificate: ClientCertificate, server_fingerprint_sha256: str) -> None:
        self.server_fingerprint = server_fingerprint_sha256.upper()
        self.keys: SrtpKeys | None = None
        self.failure: str | None = None
        self._conn = SSL.Connection(certificate.create_context(), None)
        self._conn.set_connect_state()
        self._conn.set_ciphertext_mtu(DTLS_MTU)
        self._outgoing: list[bytes] = []

    @property
    def connected(self) -> bool:
        return self.keys is not None

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def start(self) -> None:
        """Produce the ClientHello."""
        self._handshake()

    def receive(self, data: bytes) -> None:
        """Feed one datagram of DTLS records."""
        if self.failed:
            return
        self._conn.bio_write(data)
        if self.connected:
            self._drain_application_data()
        else:
            self._handshake()
        self._collect()

    def _handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._collect()
            return
        except SSL.Error as exc:
            self.failure = f"DTLS handshake failed: {exc}"
            return
        self._collect()
        self._finish()

    def _finish(self) -> None:
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            self.failure = "server sent no DTLS certificate"
            return
        actual = sha256_fingerprint(cert.public_bytes(Encoding.DER))
        if not hmac.compare_digest(actual, self.server_fingerprint):
            self.failure = "server DTLS certificate does not match the answer's fingerprint"
            return
        profile = _PROFILES.get(self._conn.get_selected_srtp_profile())
        if profile is None:
            self.failure = "no SRTP profile negotiated"
            return
        name, key_len, salt_len = profile
        material = self._conn.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len)
        )
        # RFC 5764 4.2: client key | server key | client salt | server salt.
        client_key = material[:key_len]
        server_key = material[key_len : 2 * key_len]
        client_salt = material[2 * key_len : 2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len :]
        self.keys = SrtpKeys(name, client_key + client_salt, server_key + server_salt)

    def _drain_application_data(self) -> None:
        # Media transports carry no DTLS application data; read to notice close_notify.
        try:
            while self._conn.recv(1500):
                pass
        except SSL.Error:  # WantRead (nothing left), ZeroReturn (closed) or a bad record
            pass

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

    def timer_due(self) -> bool:
        """True when a handshake flight should be retransmitted now."""
        if self.connected or self.failed:
            return False
        timeout = self._conn.DTLSv1_get_timeout()
        return timeout is not None and timeout <= 0

    def handle_timeout(self) -> None:
        try:
            self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self.failure = f"DTLS retransmission failed: {exc}"
        self._collect()
