"""Tests for sfu.proto.dtls: the sans-I/O DTLS server against an in-memory pyOpenSSL client."""

from __future__ import annotations

import datetime
import struct
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from sfu.proto.dtls import (
    DTLS_MTU,
    DtlsCertificate,
    DtlsServer,
    DtlsState,
    _application_records,
    split_records,
)
from tests.fuzzing import examples

BOTH_PROFILES = b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"
DTLS1_0_VERSION = 0xFEFF


class Identity:
    """A self-signed client certificate and its SDP fingerprint."""

    def __init__(self, use_rsa: bool = False) -> None:
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            rsa.generate_private_key(65537, 2048)
            if use_rsa
            else ec.generate_private_key(ec.SECP256R1())
        )
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-client")])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        self.key = key

    def fingerprint(self, algorithm: hashes.HashAlgorithm | None = None) -> str:
        digest = self.certificate.fingerprint(algorithm or hashes.SHA256())
        return ":".join(f"{b:02X}" for b in digest)


@pytest.fixture(scope="module")
def server_certificate() -> DtlsCertificate:
    return DtlsCertificate()


@pytest.fixture(scope="module")
def client_identity() -> Identity:
    return Identity()


def make_client(
    identity: Identity, profiles: bytes | None = BOTH_PROFILES, max_version: int | None = None
) -> SSL.Connection:
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(identity.certificate)
    ctx.use_privatekey(identity.key)
    if profiles is not None:
        ctx.set_tlsext_use_srtp(profiles)
    if max_version is not None:
        ctx.set_max_proto_version(max_version)
        ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    return conn


def drain(conn: SSL.Connection) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = conn.bio_read(65536)
        except SSL.WantReadError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


class Exchange:
    """Moves datagrams between the client and the server until both are done."""

    def __init__(self, server: DtlsServer, client: SSL.Connection) -> None:
        self.server = server
        self.client = client
        self.client_done = False
        self.client_error: SSL.Error | None = None
        self.server_datagrams: list[bytes] = []

    def client_step(self) -> None:
        if self.client_done or self.client_error is not None:
            return
        try:
            self.client.do_handshake()
            self.client_done = True
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            self.client_error = exc

    def run(self, rounds: int = 12) -> Exchange:
        for _ in range(rounds):
            self.client_step()
            flight = drain(self.client)
            if flight:
                self.server.receive(flight)
            for datagram in self.server.datagrams_to_send():
                self.server_datagrams.append(datagram)
                self.client.bio_write(datagram)
            if self.server.state in (DtlsState.CONNECTED, DtlsState.FAILED, DtlsState.CLOSED) and (
                self.client_done or self.client_error is not None
            ):
                break
        return self


def connect(
    certificate: DtlsCertificate,
    identity: Identity,
    profiles: bytes | None = BOTH_PROFILES,
    fingerprints: list[tuple[str, str]] | None = None,
    max_version: int | None = None,
) -> Exchange:
    server = DtlsServer(
        certificate.create_context(),
        fingerprints if fingerprints is not None else [("sha-256", identity.fingerprint())],
    )
    return Exchange(server, make_client(identity, profiles, max_version)).run()


# -- successful handshakes ------------------------------------------------------------


def test_handshake_with_both_profiles_connects_with_aead_gcm(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity)
    assert exchange.client_done
    assert exchange.server.state is DtlsState.CONNECTED
    assert exchange.server.failure is None
    assert exchange.server.keys is not None
    assert exchange.server.keys.profile == "AEAD_AES_128_GCM"
    assert exchange.client.get_selected_srtp_profile() == b"SRTP_AEAD_AES_128_GCM"


def test_server_prefers_gcm_even_when_client_lists_aes_cm_first(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(
        server_certificate,
        client_identity,
        profiles=b"SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM",
    )
    assert exchange.server.keys is not None
    assert exchange.server.keys.profile == "AEAD_AES_128_GCM"


def test_client_offering_only_aes_cm_gets_aes_cm(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity, profiles=b"SRTP_AES128_CM_SHA1_80")
    assert exchange.server.state is DtlsState.CONNECTED
    assert exchange.server.keys is not None
    assert exchange.server.keys.profile == "AES_CM_128_HMAC_SHA1_80"
    assert len(exchange.server.keys.local_key) == 16 + 14


@pytest.mark.parametrize(
    ("profiles", "key_len", "salt_len"),
    [(BOTH_PROFILES, 16, 12), (b"SRTP_AES128_CM_SHA1_80", 16, 14)],
)
def test_keys_match_the_clients_exported_keying_material(
    server_certificate: DtlsCertificate,
    client_identity: Identity,
    profiles: bytes,
    key_len: int,
    salt_len: int,
) -> None:
    exchange = connect(server_certificate, client_identity, profiles=profiles)
    keys = exchange.server.keys
    assert keys is not None
    material = exchange.client.export_keying_material(
        b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len)
    )
    client_key, server_key = material[:key_len], material[key_len : 2 * key_len]
    client_salt = material[2 * key_len : 2 * key_len + salt_len]
    server_salt = material[2 * key_len + salt_len :]
    # RFC 5764 4.2: the client writes with client_write key+salt, which the server reads.
    assert keys.remote_key == client_key + client_salt
    assert keys.local_key == server_key + server_salt
    assert keys.local_key != keys.remote_key


def test_cipher_is_ecdhe(server_certificate: DtlsCertificate, client_identity: Identity) -> None:
    exchange = connect(server_certificate, client_identity)
    assert exchange.server.cipher is not None
    assert exchange.server.cipher.startswith("ECDHE-")


def test_version_is_known_once_connected(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    server = DtlsServer(server_certificate.create_context(), [])
    assert server.version is None
    exchange = connect(server_certificate, client_identity)
    assert exchange.server.version == "DTLSv1.2"


def test_client_with_rsa_certificate_connects(server_certificate: DtlsCertificate) -> None:
    identity = Identity(use_rsa=True)  # GStreamer's webrtcbin uses an RSA certificate
    exchange = connect(server_certificate, identity, profiles=b"SRTP_AES128_CM_SHA1_80")
    assert exchange.server.state is DtlsState.CONNECTED


def test_fingerprint_is_checked_with_the_strongest_offered_hash(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    # RFC 8122 section 5: a wrong weaker fingerprint does not matter when the strongest matches.
    fingerprints = [
        ("sha-256", "00:" * 31 + "00"),
        ("sha-512", client_identity.fingerprint(hashes.SHA512())),
    ]
    exchange = connect(server_certificate, client_identity, fingerprints=fingerprints)
    assert exchange.server.state is DtlsState.CONNECTED


def test_matching_weaker_fingerprint_does_not_excuse_a_wrong_stronger_one(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    fingerprints = [
        ("sha-256", client_identity.fingerprint()),
        ("sha-384", "00:" * 47 + "00"),
    ]
    exchange = connect(server_certificate, client_identity, fingerprints=fingerprints)
    assert exchange.server.state is DtlsState.FAILED


def test_server_datagrams_never_exceed_the_mtu(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity)
    assert exchange.server_datagrams
    assert all(len(d) <= DTLS_MTU for d in exchange.server_datagrams)


def test_keys_are_hidden_from_repr(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    keys = connect(server_certificate, client_identity).server.keys
    assert keys is not None
    assert keys.local_key.hex() not in repr(keys)
    assert "AEAD_AES_128_GCM" in repr(keys)


def test_close_after_connect_sends_close_notify_and_forgets_keys(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity)
    exchange.server.close()
    assert exchange.server.state is DtlsState.CLOSED
    assert exchange.server.keys is None
    alert = exchange.server.datagrams_to_send()
    assert alert and alert[0][0] == 21  # DTLS alert record
    for datagram in alert:
        exchange.client.bio_write(datagram)
    with pytest.raises(SSL.ZeroReturnError):
        exchange.client.recv(100)


def test_client_close_notify_closes_the_server(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity)
    try:
        exchange.client.shutdown()
    except SSL.Error:
        pass
    exchange.server.receive(drain(exchange.client))
    assert exchange.server.state is DtlsState.CLOSED


# -- refused handshakes -------------------------------------------------------------


def test_certificate_not_matching_the_fingerprint_fails(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    other = Identity()
    exchange = connect(
        server_certificate, client_identity, fingerprints=[("sha-256", other.fingerprint())]
    )
    assert exchange.server.state is DtlsState.FAILED
    assert exchange.server.keys is None
    assert exchange.server.failure is not None and "fingerprint" in exchange.server.failure


def test_unknown_fingerprint_algorithm_never_matches(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(
        server_certificate, client_identity, fingerprints=[("md5", client_identity.fingerprint())]
    )
    assert exchange.server.state is DtlsState.FAILED


def test_empty_fingerprint_list_fails(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity, fingerprints=[])
    assert exchange.server.state is DtlsState.FAILED
    assert exchange.server.failure is not None and "fingerprint" in exchange.server.failure


def test_client_offering_no_srtp_profile_fails(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity, profiles=None)
    assert exchange.server.state is DtlsState.FAILED
    assert exchange.server.keys is None
    assert exchange.server.failure is not None and "SRTP" in exchange.server.failure


def test_dtls_1_0_only_client_is_refused(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity, max_version=DTLS1_0_VERSION)
    assert exchange.server.state is DtlsState.FAILED
    assert exchange.server.keys is None
    assert not exchange.client_done


def test_failed_server_ignores_further_datagrams(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity, profiles=None)
    exchange.server.datagrams_to_send()
    exchange.server.receive(b"\x16\xfe\xfd" + bytes(50))
    assert exchange.server.state is DtlsState.FAILED
    assert exchange.server.datagrams_to_send() == []


def test_garbage_handshake_record_fails_without_raising(
    server_certificate: DtlsCertificate,
) -> None:
    server = DtlsServer(server_certificate.create_context(), [])
    server.receive(b"\x16\xfe\xfd" + bytes(8) + struct.pack("!H", 30) + b"\xff" * 30)
    assert server.state is DtlsState.FAILED
    assert server.failure is not None and server.failure.startswith("DTLS handshake failed")
    assert server.keys is None


# -- timers --------------------------------------------------------------------------


def test_timeout_is_none_before_any_datagram(server_certificate: DtlsCertificate) -> None:
    server = DtlsServer(server_certificate.create_context(), [])
    assert server.state is DtlsState.NEW
    assert server.get_timeout() is None


def _server_after_client_hello(
    certificate: DtlsCertificate, identity: Identity
) -> tuple[DtlsServer, list[bytes]]:
    server = DtlsServer(certificate.create_context(), [("sha-256", identity.fingerprint())])
    client = make_client(identity)
    Exchange(server, client).client_step()
    server.receive(drain(client))  # ClientHello -> the server's first flight
    return server, server.datagrams_to_send()


def test_timeout_is_a_positive_float_while_connecting(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    server, flight = _server_after_client_hello(server_certificate, client_identity)
    assert flight
    assert server.state is DtlsState.CONNECTING
    timeout = server.get_timeout()
    assert isinstance(timeout, float)
    assert 0.0 < timeout <= 60.0


def test_handle_timeout_after_expiry_retransmits_the_last_flight(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    server, flight = _server_after_client_hello(server_certificate, client_identity)
    timeout = server.get_timeout()
    assert timeout is not None
    time.sleep(timeout + 0.05)  # OpenSSL's DTLS timer reads the wall clock
    server.handle_timeout()
    again = server.datagrams_to_send()
    assert server.state is DtlsState.CONNECTING
    assert sum(len(d) for d in again) >= sum(len(d) for d in flight) * 0.9
    assert all(len(d) <= DTLS_MTU for d in again)


def test_timeout_is_none_once_connected(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = connect(server_certificate, client_identity)
    assert exchange.server.get_timeout() is None
    exchange.server.handle_timeout()  # a no-op once connected
    assert exchange.server.state is DtlsState.CONNECTED


# -- split_records ---------------------------------------------------------------------


def record(length: int, content_type: int = 22, fill: int = 0xAB) -> bytes:
    return (
        bytes([content_type, 0xFE, 0xFD])
        + bytes(8)
        + struct.pack("!H", length)
        + bytes([fill]) * length
    )


def record_boundaries(datagram: bytes) -> list[int]:
    """Lengths of the whole records making up a datagram (asserts there is no partial one)."""
    lengths, pos = [], 0
    while pos < len(datagram):
        (length,) = struct.unpack_from("!H", datagram, pos + 11)
        pos += 13 + length
        lengths.append(length)
    assert pos == len(datagram), "a record was split across datagrams"
    return lengths


def test_split_records_keeps_small_records_in_one_datagram() -> None:
    data = record(10) + record(20, 20) + record(30, 23)
    assert split_records(data) == [data]


def test_split_records_starts_a_new_datagram_before_exceeding_the_mtu() -> None:
    first, second = record(700), record(700)
    assert split_records(first + second) == [first, second]


def test_split_records_fills_exactly_up_to_the_mtu() -> None:
    first, second = record(600 - 13), record(600 - 13)
    assert split_records(first + second + record(1)) == [first + second, record(1)]


def test_split_records_never_splits_an_oversized_record() -> None:
    big = record(1500)
    assert split_records(record(5) + big + record(5)) == [record(5), big, record(5)]


def test_split_records_of_nothing_is_nothing() -> None:
    assert split_records(b"") == []


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.integers(0, DTLS_MTU - 13), min_size=1, max_size=20))
def test_split_records_preserves_bytes_and_order_within_the_mtu(lengths: list[int]) -> None:
    records = [record(n, fill=i % 256) for i, n in enumerate(lengths)]
    data = b"".join(records)
    datagrams = split_records(data)
    assert b"".join(datagrams) == data
    assert all(len(d) <= DTLS_MTU for d in datagrams)
    assert [n for d in datagrams for n in record_boundaries(d)] == lengths
    # Greedy packing: no datagram could have taken the next one's first record.
    for current, following in zip(datagrams, datagrams[1:], strict=False):
        first_len = record_boundaries(following)[0] + 13
        assert len(current) + first_len > DTLS_MTU


# Application data (data channels, RFC 8261) ------------------------------------------


def data_exchange(certificate: DtlsCertificate, identity: Identity) -> Exchange:
    """A data-channel transport: no SRTP profile, application data kept."""
    server = DtlsServer(certificate.create_context(), [("sha-256", identity.fingerprint())])
    server.keep_application_data = True
    exchange = Exchange(server, make_client(identity, None)).run()
    assert exchange.server.state is DtlsState.CONNECTED
    return exchange


def client_records(client: SSL.Connection, *payloads: bytes) -> bytes:
    for payload in payloads:
        client.send(payload)
    return drain(client)


def test_every_application_record_of_a_datagram_is_received_in_order(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = data_exchange(server_certificate, client_identity)
    datagram = client_records(exchange.client, b"one", b"two" * 300, b"three")
    assert _application_records(datagram) == 3
    exchange.server.receive(datagram)
    assert exchange.server.application_data() == [b"one", b"two" * 300, b"three"]
    assert exchange.server.datagrams_to_send() == []


def test_application_data_is_drained_when_not_kept(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = data_exchange(server_certificate, client_identity)
    exchange.server.keep_application_data = False
    exchange.server.receive(client_records(exchange.client, b"media transports carry none"))
    assert exchange.server.application_data() == []
    exchange.server.keep_application_data = True
    exchange.server.receive(client_records(exchange.client, b"next"))
    assert exchange.server.application_data() == [b"next"]


def test_replayed_application_record_is_dropped_and_the_next_one_read(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = data_exchange(server_certificate, client_identity)
    first = client_records(exchange.client, b"first")
    exchange.server.receive(first)
    second = client_records(exchange.client, b"second")
    exchange.server.receive(first + second)  # the replay is discarded by OpenSSL
    assert exchange.server.application_data() == [b"first", b"second"]
    assert exchange.server.state is DtlsState.CONNECTED


def test_application_record_then_close_notify_in_one_datagram(
    server_certificate: DtlsCertificate, client_identity: Identity
) -> None:
    exchange = data_exchange(server_certificate, client_identity)
    exchange.client.send(b"last words")
    try:
        exchange.client.shutdown()
    except SSL.Error:
        pass
    datagram = drain(exchange.client)
    assert _application_records(datagram) == 0  # an alert record: the careful path
    exchange.server.receive(datagram)
    assert exchange.server.application_data() == [b"last words"]
    assert exchange.server.state is DtlsState.CLOSED


@pytest.mark.parametrize("size", [1, 1188, 5000])
def test_sent_application_data_reaches_the_client_in_datagrams_within_the_mtu(
    server_certificate: DtlsCertificate, client_identity: Identity, size: int
) -> None:
    exchange = data_exchange(server_certificate, client_identity)
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert exchange.server.send_application_data(payload)
    datagrams = exchange.server.datagrams_to_send()
    assert datagrams
    assert all(len(d) <= DTLS_MTU for d in datagrams) or len(datagrams) == 1
    for datagram in datagrams:
        exchange.client.bio_write(datagram)
    assert exchange.client.recv(16384) == payload


def test_application_records_counts_only_whole_application_data_records() -> None:
    def record(content_type: int, body: bytes) -> bytes:
        return (
            bytes([content_type]) + b"\xfe\xfd" + b"\x00" * 8 + struct.pack("!H", len(body)) + body
        )

    assert _application_records(record(23, b"a")) == 1
    assert _application_records(record(23, b"a") + record(23, b"bc" * 100)) == 2
    assert _application_records(record(23, b"a") + record(21, b"\x01\x00")) == 0
    assert _application_records(record(22, b"hello")) == 0
    assert _application_records(record(23, b"abc")[:-1]) == 0  # truncated body
    assert _application_records(record(23, b"abc") + b"\x17\xfe") == 0  # truncated header
    assert _application_records(b"") == 0
