"""Tests for sfu.routing.worker: dispatch of every datagram on the media port, ICE binding,
DTLS through the worker, and a 10,000-datagram fuzz that must never raise."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import random
import struct

import pytest
from aioice import stun as aioice_stun
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from pylibsrtp import Policy, Session

from sfu.proto.dtls import SrtpKeys
from sfu.proto.srtp import RESYNC_AFTER
from sfu.routing.consumer import Consumer
from sfu.routing.producer import Producer
from sfu.routing.transport import Address, Transport
from sfu.routing.worker import MAX_DATAGRAM, Worker
from sfu.wire.sdp import Codec
from sfu.wire.stun import MAGIC_COOKIE

REMOTE_UFRAG = "peerUfrag"
PEER: Address = ("127.0.0.1", 50000)
# Counters that record a datagram dropped by the worker or a transport.
DROP_COUNTERS = {
    "oversized",
    "malformed_stun",
    "stun_rejected",
    "stun_ignored",
    "unknown_sender",
    "unknown_class",
    "rtp_before_keys",
    "srtp_unprotect_failed",
    "srtcp_unprotect_failed",
    "srtp_replay",
    "srtcp_replay",
    "malformed_rtp",
    "malformed_rtcp",
    "rtp_unknown_ssrc",
    "handler_errors",
}


class Harness:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []
        self.worker = Worker(sender=lambda data, addr: self.sent.append((data, addr)))

    def transport(
        self, now: float = 0.0, fingerprints: list[tuple[str, str]] | None = None
    ) -> Transport:
        return self.worker.create_transport("owner", REMOTE_UFRAG, fingerprints or [], now)

    def drops(self) -> int:
        return sum(n for name, n in self.worker.counters.items() if name in DROP_COUNTERS)


@pytest.fixture
def harness() -> Harness:
    return Harness()


def binding_request(
    transport: Transport,
    remote_ufrag: str = REMOTE_UFRAG,
    nominate: bool = False,
    message_class: aioice_stun.Class = aioice_stun.Class.REQUEST,
) -> bytes:
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, message_class)
    msg.attributes["USERNAME"] = f"{transport.ice.ufrag}:{remote_ufrag}"
    msg.attributes["PRIORITY"] = 1845501695
    msg.attributes["ICE-CONTROLLING"] = 7
    if nominate:
        msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(transport.ice.pwd.encode())
    return bytes(msg)


def binding_indication() -> bytes:
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.INDICATION)
    msg.add_fingerprint()
    return bytes(msg)


# -- ICE ----------------------------------------------------------------------------


def test_valid_binding_request_gets_exactly_one_response_to_the_sender(harness: Harness) -> None:
    transport = harness.transport()
    request = binding_request(transport)
    harness.worker.on_datagram(request, PEER, 1.0)
    assert len(harness.sent) == 1
    data, addr = harness.sent[0]
    assert addr == PEER
    response = aioice_stun.parse_message(data)
    assert response.message_class == aioice_stun.Class.RESPONSE
    assert response.transaction_id == aioice_stun.parse_message(request).transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == PEER
    assert response.check_message_integrity(transport.ice.pwd.encode())
    assert harness.worker.counters["datagrams_out"] == 1


def test_valid_binding_request_binds_the_senders_address(harness: Harness) -> None:
    transport = harness.transport()
    harness.worker.on_datagram(binding_request(transport), PEER, 1.0)
    assert transport.addr == PEER
    assert harness.worker.by_addr[PEER] is transport
    assert transport in harness.worker.handshaking
    assert transport.last_heard == 1.0


def test_binding_request_with_wrong_password_gets_no_answer(harness: Harness) -> None:
    transport = harness.transport()
    other = harness.transport()
    forged = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    forged.attributes["USERNAME"] = f"{transport.ice.ufrag}:{REMOTE_UFRAG}"
    forged.add_message_integrity(other.ice.pwd.encode())
    harness.worker.on_datagram(bytes(forged), PEER, 1.0)
    assert harness.sent == []
    assert transport.addr is None and PEER not in harness.worker.by_addr
    assert harness.worker.counters["stun_rejected"] == 1


def test_binding_request_for_a_closed_transport_gets_no_answer(harness: Harness) -> None:
    transport = harness.transport()
    harness.worker.on_datagram(binding_request(transport), PEER, 1.0)
    harness.worker.close_transport(transport, "test")
    harness.sent.clear()
    harness.worker.on_datagram(binding_request(transport), PEER, 2.0)
    assert harness.sent == []
    assert harness.worker.by_ufrag == {} and harness.worker.by_addr == {}
    assert transport.closed and transport.close_reason == "test"


def test_nominated_request_from_a_new_address_moves_the_transport(harness: Harness) -> None:
    transport = harness.transport()
    harness.worker.on_datagram(binding_request(transport), PEER, 1.0)
    new_addr = ("127.0.0.1", 50001)
    harness.worker.on_datagram(binding_request(transport, nominate=True), new_addr, 2.0)
    assert transport.addr == new_addr
    assert harness.worker.by_addr == {new_addr: transport}
    assert [addr for _, addr in harness.sent] == [PEER, new_addr]


def test_unnominated_request_from_another_address_keeps_the_binding(harness: Harness) -> None:
    transport = harness.transport()
    harness.worker.on_datagram(binding_request(transport, nominate=True), PEER, 1.0)
    other = ("127.0.0.1", 50002)
    harness.worker.on_datagram(binding_request(transport), other, 2.0)
    assert transport.addr == PEER
    assert harness.worker.by_addr == {PEER: transport}
    assert len(harness.sent) == 2  # still answered: it is a valid check


def test_binding_indication_from_the_bound_address_counts_as_liveness(harness: Harness) -> None:
    transport = harness.transport()
    harness.worker.on_datagram(binding_request(transport), PEER, 1.0)
    harness.worker.on_datagram(binding_indication(), PEER, 20.0)
    assert transport.last_heard == 20.0
    assert len(harness.sent) == 1  # indications are never answered


@pytest.mark.parametrize("case", ["indication_from_unknown_address", "wrong_remote_ufrag"])
def test_stun_that_gets_no_answer_is_counted_as_dropped(harness: Harness, case: str) -> None:
    transport = harness.transport()
    if case == "indication_from_unknown_address":
        data = binding_indication()
    else:
        data = binding_request(transport, remote_ufrag="someoneElse")
    harness.worker.on_datagram(data, PEER, 1.0)
    assert harness.sent == []
    assert transport.addr is None
    assert harness.drops() == 1, dict(harness.worker.counters)


# -- other classes ------------------------------------------------------------------


def test_oversized_datagram_is_counted(harness: Harness) -> None:
    harness.worker.on_datagram(b"\x80\x60" + bytes(MAX_DATAGRAM), PEER, 0.0)
    assert harness.worker.counters["oversized"] == 1


@pytest.mark.parametrize("first", [0x16, 0x80, 0x81, 0x50, 0xFF])
def test_non_stun_from_an_unknown_address_is_counted_as_unknown_sender(
    harness: Harness, first: int
) -> None:
    harness.worker.on_datagram(bytes([first, 0x60]) + bytes(40), PEER, 0.0)
    assert harness.worker.counters["unknown_sender"] == 1
    assert harness.sent == []


def test_unknown_class_from_the_bound_address_is_counted(harness: Harness) -> None:
    transport = harness.transport()
    harness.worker.on_datagram(binding_request(transport), PEER, 1.0)
    harness.worker.on_datagram(b"\x50" + bytes(30), PEER, 2.0)  # TURN channel range
    assert harness.worker.counters["unknown_class"] == 1


def test_rtp_and_rtcp_before_dtls_keys_are_counted(harness: Harness) -> None:
    transport = harness.transport()
    harness.worker.on_datagram(binding_request(transport), PEER, 1.0)
    harness.worker.on_datagram(struct.pack("!BBHII", 0x80, 96, 1, 0, 1) + bytes(20), PEER, 2.0)
    harness.worker.on_datagram(struct.pack("!BBHI", 0x80, 201, 1, 1) + bytes(20), PEER, 2.0)
    assert harness.worker.counters["rtp_before_keys"] == 2


# -- DTLS through the worker --------------------------------------------------------


def _client_identity() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    fingerprint = ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
    return cert, key, fingerprint


def _read_all(conn: SSL.Connection) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = conn.bio_read(65536)
        except SSL.WantReadError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def test_dtls_handshake_through_the_worker_makes_the_transport_ready(harness: Harness) -> None:
    cert, key, fingerprint = _client_identity()
    transport = harness.transport(fingerprints=[("sha-256", fingerprint)])
    harness.worker.on_datagram(binding_request(transport, nominate=True), PEER, 1.0)
    harness.sent.clear()
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)
    ctx.set_tlsext_use_srtp(b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80")
    client = SSL.Connection(ctx, None)
    client.set_connect_state()
    done = False
    for _ in range(10):
        try:
            client.do_handshake()
            done = True
        except SSL.WantReadError:
            pass
        flight = _read_all(client)
        if flight:
            harness.worker.on_datagram(flight, PEER, 1.1)
        for data, addr in harness.sent:
            assert addr == PEER
            client.bio_write(data)
        harness.sent.clear()
        if done and transport.ready:
            break
    assert done and transport.ready
    assert transport not in harness.worker.handshaking
    # SRTP from the peer now decrypts: an unannounced SSRC is the only thing left to drop.
    material = client.export_keying_material(b"EXTRACTOR-dtls_srtp", 56)
    peer_tx = Session(
        Policy(
            key=material[:16] + material[32:44],
            ssrc_type=Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        )
    )
    packet = struct.pack("!BBHII", 0x80, 96, 1, 0, 0x1234) + b"\x10\x00payload"
    harness.worker.on_datagram(peer_tx.protect(packet), PEER, 1.2)
    assert harness.worker.counters["rtp_unknown_ssrc"] == 1
    assert harness.worker.counters["srtp_unprotect_failed"] == 0


def test_dtls_with_a_certificate_not_in_the_sdp_closes_the_transport(harness: Harness) -> None:
    cert, key, _ = _client_identity()
    _, _, other_fingerprint = _client_identity()
    closed: list[tuple[Transport, str]] = []
    harness.worker.on_transport_closed = lambda t, reason: closed.append((t, reason))
    transport = harness.transport(fingerprints=[("sha-256", other_fingerprint)])
    harness.worker.on_datagram(binding_request(transport), PEER, 1.0)
    harness.sent.clear()
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    client = SSL.Connection(ctx, None)
    client.set_connect_state()
    for _ in range(10):
        try:
            client.do_handshake()
        except (SSL.WantReadError, SSL.Error):
            pass
        flight = _read_all(client)
        if flight:
            harness.worker.on_datagram(flight, PEER, 1.1)
        for data, _addr in harness.sent:
            client.bio_write(data)
        harness.sent.clear()
        if transport.closed:
            break
    assert transport.closed and "fingerprint" in transport.close_reason
    assert [(t, "fingerprint" in r) for t, r in closed] == [(transport, True)]
    assert harness.worker.by_ufrag == {} and harness.worker.by_addr == {}
    assert harness.worker.counters["handler_errors"] == 0


# -- forwarding through SRTP ---------------------------------------------------------


def srtp_aes_cm_protect(master: bytes, packet: bytes) -> bytes:
    """AES_CM_128_HMAC_SHA1_80 protection of a packet with ROC 0 (RFC 3711 4.1.1, 4.2, 4.3).

    Written out here because pylibsrtp refuses to protect packets above 1356 bytes.
    """
    master_key, master_salt = master[:16], master[16:]

    def keystream(key: bytes, iv: int, size: int) -> bytes:
        encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
        return encryptor.update(bytes(size)) + encryptor.finalize()

    def derive(label: int, size: int) -> bytes:
        x = (label << 48) ^ int.from_bytes(master_salt, "big")
        return keystream(master_key, x << 16, size)

    session_key, auth_key, salt = derive(0, 16), derive(1, 20), derive(2, 14)
    seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
    iv = (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (seq << 16)
    payload = packet[12:]
    encrypted = packet[:12] + bytes(
        a ^ b for a, b in zip(payload, keystream(session_key, iv, len(payload)), strict=True)
    )
    tag = hmac.new(auth_key, encrypted + bytes(4), hashlib.sha1).digest()[:10]
    return encrypted + tag


def test_reference_srtp_protection_matches_libsrtp() -> None:
    master = os.urandom(30)
    packet = struct.pack("!BBHII", 0x80, 96, 7, 9000, 0x1234) + os.urandom(300)
    rx = Session(Policy(key=master, ssrc_type=Policy.SSRC_ANY_INBOUND))
    assert rx.unprotect(srtp_aes_cm_protect(master, packet)) == packet


def _keyed_transport(harness: Harness, addr: Address) -> tuple[Transport, SrtpKeys]:
    transport = harness.transport()
    harness.worker.on_datagram(binding_request(transport, nominate=True), addr, 0.0)
    keys = SrtpKeys("AES_CM_128_HMAC_SHA1_80", os.urandom(30), os.urandom(30))
    transport.start_srtp(keys)
    harness.worker.handshake_done(transport)
    return transport, keys


@pytest.mark.parametrize("size", [1000, 1400])
def test_published_packet_reaches_every_subscriber_encrypted_for_each(
    harness: Harness, size: int
) -> None:
    vp8 = Codec(96, "VP8", 90000, rtcp_fbs=["nack", "nack pli"])
    publisher, publisher_keys = _keyed_transport(harness, PEER)
    producer = Producer("track", "alice", "video", "camera", vp8, publisher, "0", 0x1234)
    publisher.producers_by_mid["0"] = producer
    publisher.producers_by_ssrc[0x1234] = producer
    subscribers = []
    for index in range(2):
        addr = ("127.0.0.1", 51000 + index)
        transport, keys = _keyed_transport(harness, addr)
        consumer = Consumer(f"c{index}", transport, "video", vp8, "0", 0xC000 + index, "cn")
        transport.consumers_by_ssrc[consumer.ssrc] = consumer
        consumer.attach(producer, 0.0)
        subscribers.append((addr, keys))
    harness.sent.clear()
    keyframe = struct.pack("!BBHII", 0x80, 96, 7, 9000, 0x1234) + b"\x10\x00" + bytes(size - 14)
    harness.worker.on_datagram(srtp_aes_cm_protect(publisher_keys.remote_key, keyframe), PEER, 1.0)
    assert harness.worker.counters["handler_errors"] == 0
    for addr, keys in subscribers:
        datagrams = [data for data, to in harness.sent if to == addr]
        assert len(datagrams) == 1, f"{addr} got {len(datagrams)} datagrams"
        rx = Session(Policy(key=keys.local_key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        plain = rx.unprotect(datagrams[0])
        assert len(plain) == size
        assert plain[12:] == keyframe[12:]


def _one_subscriber(harness: Harness) -> tuple[SrtpKeys, Address, SrtpKeys]:
    vp8 = Codec(96, "VP8", 90000, rtcp_fbs=["nack", "nack pli"])
    publisher, publisher_keys = _keyed_transport(harness, PEER)
    producer = Producer("track", "alice", "video", "camera", vp8, publisher, "0", 0x1234)
    publisher.producers_by_mid["0"] = producer
    publisher.producers_by_ssrc[0x1234] = producer
    addr = ("127.0.0.1", 51000)
    transport, keys = _keyed_transport(harness, addr)
    consumer = Consumer("c0", transport, "video", vp8, "0", 0xC000, "cn")
    transport.consumers_by_ssrc[consumer.ssrc] = consumer
    consumer.attach(producer, 0.0)
    harness.sent.clear()
    return publisher_keys, addr, keys


def test_a_stream_resumes_after_more_than_32768_lost_packets(harness: Harness) -> None:
    """libsrtp alone rejects every packet after such a gap (see tests/proto/test_srtp.py)."""
    publisher_keys, addr, keys = _one_subscriber(harness)
    tx = Session(Policy(key=publisher_keys.remote_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))

    def packet(index: int) -> bytes:
        header = struct.pack("!BBHII", 0x80, 96, index & 0xFFFF, index * 3000 & 0xFFFFFFFF, 0x1234)
        return header + b"\x10\x00" + index.to_bytes(6, "big")

    start, gap = 50_000, 40_000
    for i in range(start, start + 20):
        harness.worker.on_datagram(tx.protect(packet(i)), PEER, 1.0)
    for i in range(start + 20, start + 20 + gap, 1000):  # lost on the way
        tx.protect(packet(i))
    resume = start + 20 + gap
    for i in range(resume, resume + 40):
        harness.worker.on_datagram(tx.protect(packet(i)), PEER, 2.0)
    rx = Session(Policy(key=keys.local_key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    plain = [rx.unprotect(data) for data, to in harness.sent if to == addr]
    got = [int.from_bytes(p[14:], "big") for p in plain]
    assert got[:20] == list(range(start, start + 20))
    after = got[20:]
    # All but the few that failed before the resync attempt, in order...
    assert len(after) > 40 - RESYNC_AFTER, dict(harness.worker.counters)
    assert after == list(range(resume + 40 - len(after), resume + 40))
    # ...numbered on from where the subscriber's stream left off: a jump of over 2^15
    # passed on would break the subscriber's SRTP just as it broke ours.
    out_seqs = [int.from_bytes(p[2:4], "big") for p in plain]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(out_seqs, out_seqs[1:], strict=False))
    assert harness.worker.counters["srtp_roc_resync"] == 1


def test_a_replayed_packet_is_dropped_and_counted_as_a_replay(harness: Harness) -> None:
    publisher_keys, addr, _ = _one_subscriber(harness)
    tx = Session(Policy(key=publisher_keys.remote_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    datagram = tx.protect(struct.pack("!BBHII", 0x80, 96, 5, 0, 0x1234) + b"\x10\x00media")
    for _ in range(3):
        harness.worker.on_datagram(datagram, PEER, 1.0)
    assert len([1 for _, to in harness.sent if to == addr]) == 1
    assert harness.worker.counters["srtp_replay"] == 2
    assert harness.worker.counters["srtp_unprotect_failed"] == 0


# -- fuzz ---------------------------------------------------------------------------

# RFC 7983 first-byte ranges, plus the gaps between them.
FIRST_BYTE_RANGES = [(0, 3), (4, 19), (20, 63), (64, 79), (80, 127), (128, 191), (192, 255)]


def random_datagram(rng: random.Random) -> bytes:
    choice = rng.random()
    low, high = rng.choice(FIRST_BYTE_RANGES)
    if choice < 0.15 and low == 0:
        # Structurally valid STUN (cookie and length right) with random type and attributes.
        body = bytearray()
        for _ in range(rng.randrange(4)):
            value = rng.randbytes(rng.randrange(24))
            body += struct.pack("!HH", rng.randrange(0x10000), len(value)) + value
            body += bytes(-len(value) % 4)
        message_type = rng.randrange(0x4000)
        if message_type == 0x0011:  # indications are covered by their own test
            message_type = 0x0001
        return struct.pack("!HHI", message_type, len(body), MAGIC_COOKIE) + rng.randbytes(12) + body
    if choice < 0.2:
        size = rng.randrange(MAX_DATAGRAM - 10, MAX_DATAGRAM + 50)
    else:
        size = rng.randrange(0, 200)
    data = bytearray(rng.randbytes(size))
    if data:
        data[0] = rng.randint(low, high)
    if len(data) > 1 and low == 128 and rng.random() < 0.5:
        data[1] = rng.randint(192, 223)  # RTCP packet types
    return bytes(data)


def test_ten_thousand_random_datagrams_from_strangers_are_all_counted_as_dropped(
    harness: Harness,
) -> None:
    rng = random.Random(7983)
    transport = harness.transport()
    addresses = [("127.0.0.1", 40000 + i) for i in range(8)] + [("::1", 9)]
    for _ in range(10_000):
        harness.worker.on_datagram(random_datagram(rng), rng.choice(addresses), 1.0)
    counters = harness.worker.counters
    assert counters["datagrams_in"] == 10_000
    assert counters["handler_errors"] == 0
    assert harness.drops() == 10_000, dict(counters)
    assert counters["malformed_stun"] > 0 and counters["stun_rejected"] > 0
    assert counters["unknown_sender"] > 0 and counters["oversized"] > 0
    assert harness.sent == []
    assert transport.addr is None and harness.worker.by_addr == {}


def test_ten_thousand_random_datagrams_from_bound_peers_never_raise(harness: Harness) -> None:
    rng = random.Random(5764)
    transport: Transport | None = None
    for i in range(10_000):
        if transport is None or transport.closed or i % 1000 == 0:
            # A fresh transport bound to PEER, half of them with SRTP keys in place.
            transport = harness.transport(now=float(i))
            harness.worker.on_datagram(binding_request(transport, nominate=True), PEER, float(i))
            assert harness.worker.by_addr.get(PEER) is transport
            if rng.random() < 0.5:
                keys = SrtpKeys("AES_CM_128_HMAC_SHA1_80", os.urandom(30), os.urandom(30))
                transport.start_srtp(keys)
        harness.worker.on_datagram(random_datagram(rng), PEER, float(i))
    counters = harness.worker.counters
    assert counters["handler_errors"] == 0, dict(counters)
    assert counters["datagrams_in"] >= 10_000
    assert counters["srtp_unprotect_failed"] + counters["srtcp_unprotect_failed"] > 0
    assert counters["rtp_before_keys"] > 0


def test_timers_survive_a_mix_of_transports(harness: Harness) -> None:
    idle = harness.transport(now=0.0)
    bound = harness.transport(now=0.0)
    harness.worker.on_datagram(binding_request(bound), PEER, 0.0)
    harness.worker.on_dtls_timer(1.0)
    harness.worker.on_report_timer(harness.worker.silence_timeout_s + 1.0)
    assert idle.closed and bound.closed
    assert harness.worker.by_ufrag == {}
