"""DTLS-SRTP client side (RFC 5764) over OpenSSL memory BIOs, sans-I/O.

The mirror of sfu/proto/dtls.py: the load client is DTLS client (``a=setup:active``),
checks the server certificate against the answer's sha-256 fingerprint and exports
SRTP keys from its own point of view (local = client write key).
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from sfu.proto.dtls import DtlsCertificate, SrtpKeys, split_records

DTLS1_2_VERSION = 0xFEFD
DTLS_MTU = 1200
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


# The client's certificate is made the way the SFU makes its own: a fresh self-signed
# ECDSA P-256 one, as a browser makes per connection. The context is role-agnostic.
ClientCertificate = DtlsCertificate


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
