"""The native receive path does what the Python one does, byte for byte.

Two Workers, one per datapath, get the same publisher, subscribers, keys and
numbering, and the same SRTP datagrams from the publisher: in order and out of
order, lost, repeated, corrupted, malformed under valid SRTP, from an unknown SSRC,
beyond the rate limit, while muted, while shedding, with a late subscriber waiting
for a keyframe. The native Worker's datagrams go through NativeDatapath.process as
the media port's recvmmsg loop hands them over (what C does not handle goes on to
the Worker); the Python Worker gets them all. Every datagram each subscriber
receives, every RTCP request the publisher gets, the receive statistics, the NACK
cache and the counters must be the same.
"""

from __future__ import annotations

import os
import random
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aioice import stun as aioice_stun
from pylibsrtp import Policy, Session

import sfu.routing.consumer as consumer_module
from sfu.io.datapath import create_datapath
from sfu.proto.dtls import SrtpKeys
from sfu.proto.ice import IceCredentials
from sfu.proto.srtp import _PROFILES as PROFILES
from sfu.routing.consumer import Consumer
from sfu.routing.producer import Producer
from sfu.routing.transport import Address, Transport
from sfu.routing.worker import Worker
from sfu.wire.rtcp import RtcpNack, RtcpReceiverReport, serialize_rtcp
from sfu.wire.sdp import Codec

PEER: Address = ("127.0.0.1", 50000)
REMOTE_UFRAG = "peerUfrag"
VP8 = Codec(96, "VP8", 90000, rtcp_fbs=["nack", "nack pli"])
OPUS = Codec(111, "opus", 48000, 2)
AUDIO_SSRC, VIDEO_SSRC, STRAY_SSRC = 0x1111, 0x2222, 0x3333
SUBSCRIBED_SSRC = {"audio": 0xA000, "video": 0xB000}
KEY_LEN = {"AEAD_AES_128_GCM": 28, "AES_CM_128_HMAC_SHA1_80": 30}
KEYFRAME = b"\x10\x00\x9d\x01\x2a"
DELTA = b"\x10\x01\x00\x00\x00"
# Counters both paths must agree on (the native one's are added in, as /metrics does).
COMPARED = (
    "datagrams_in",
    "srtp_replay",
    "srtp_unprotect_failed",
    "malformed_rtp",
    "rtp_unknown_ssrc",
    "rate_limited",
    "bitrate_limited",
    "overload_shed",
    "unknown_sender",
    "handler_errors",
)


class FixedSecrets:
    """Consumers draw their first sequence number and timestamp at random: the same
    draws for both worlds."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)


def client(keys: SrtpKeys) -> Session:
    """What the peer protects with: our remote key."""
    policy = Policy(
        key=keys.remote_key,
        ssrc_type=Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=PROFILES[keys.profile],
    )
    return Session(policy)


def binding_request(ice: IceCredentials) -> bytes:
    msg = aioice_stun.Message(
        aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST, transaction_id=b"\x01" * 12
    )
    msg.attributes["USERNAME"] = f"{ice.ufrag}:{REMOTE_UFRAG}"
    msg.attributes["PRIORITY"] = 1845501695
    msg.attributes["ICE-CONTROLLING"] = 7
    msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(ice.pwd.encode())
    return bytes(msg)


@dataclass
class World:
    """A Worker with a publisher (audio + video) and subscribers, on one datapath."""

    name: str
    worker: Worker
    publisher: Transport
    producers: dict[str, Producer]
    subscribers: list[Transport]
    sent: list[tuple[bytes, Address]]
    sock: socket.socket | None
    monkeypatch: pytest.MonkeyPatch
    secrets: FixedSecrets = field(default_factory=lambda: FixedSecrets(7))
    consumers: list[Consumer] = field(default_factory=list)

    def feed(self, data: bytes, addr: Address, now: float) -> None:
        """As the media port does: C first (native), the rest to the Worker."""
        process: Callable[[bytes, Address, float], bool] | None = getattr(
            self.worker.datapath, "process", None
        )
        if process is None or not process(data, addr, now):
            self.worker.on_datagram(data, addr, now)

    def counters(self) -> Counter[str]:
        counters = self.worker.counters.copy()
        counters.update(self.worker.datapath.counters)
        return counters

    def subscribe(self, index: int, kind: str, now: float) -> Consumer:
        transport = self.subscribers[index]
        codec = OPUS if kind == "audio" else VP8
        self.monkeypatch.setattr(consumer_module, "secrets", self.secrets)
        consumer = Consumer(
            f"c{index}{kind}",
            transport,
            kind,
            codec,
            "0",
            0xC000 + 16 * index + len(codec.name),
            "cn",
        )
        transport.consumers_by_ssrc[consumer.ssrc] = consumer
        consumer.attach(self.producers[kind], now)
        self.consumers.append(consumer)
        return consumer


def make_world(
    name: str,
    keys: list[SrtpKeys],
    ices: list[IceCredentials],
    receivers: list[socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    sent: list[tuple[bytes, Address]] = []
    worker = Worker(lambda data, addr: sent.append((data, addr)))
    sock = None
    if name == "native":
        worker.datapath = create_datapath("native", worker.send)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        worker.datapath.set_socket(sock.fileno())
    worker.track_pps = {"audio": 60.0, "video": 4000.0}
    worker.track_bps = {"audio": 256_000.0, "video": 8_000_000.0}
    addrs = [PEER] + [r.getsockname() for r in receivers]
    transports = []
    for index, (ice, addr) in enumerate(zip(ices, addrs, strict=True)):
        transport = worker.create_transport(f"t{index}", REMOTE_UFRAG, [], 0.0, ice)
        transport.rtcp_ssrc = 0x5000 + index
        worker.on_datagram(binding_request(ice), addr, 0.0)
        transport.start_srtp(keys[index])
        worker.handshake_done(transport)
        transports.append(transport)
    publisher = transports[0]
    producers = {}
    for kind, codec, ssrc, mid in (
        ("audio", OPUS, AUDIO_SSRC, "0"),
        ("video", VP8, VIDEO_SSRC, "1"),
    ):
        producer = Producer(f"p-{kind}", "alice", kind, kind, codec, publisher, mid, ssrc)
        publisher.producers_by_mid[mid] = producer
        publisher.bind_producer(ssrc, producer)
        producers[kind] = producer
    sent.clear()
    return World(name, worker, publisher, producers, transports[1:], sent, sock, monkeypatch)


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, rng: random.Random) -> bytes:
    csrcs = rng.choice([0, 0, 0, 1])
    extension = rng.random() < 0.3
    padding = rng.choice([0, 0, 0, 0, 4])
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension else 0) | csrcs
    out = struct.pack("!BBHII", first, (0x80 if rng.random() < 0.3 else 0) | 96, seq & 0xFFFF,
                      ts & 0xFFFFFFFF, ssrc)  # fmt: skip
    out += b"".join(struct.pack("!I", 0x1000 + i) for i in range(csrcs))
    if extension:
        out += b"\xbe\xde\x00\x01" + b"\x10\xab\x00\x00"
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return out


@dataclass
class Step:
    now: float
    datagram: bytes = b""
    action: str = ""


def script(seed: int, tx: Session) -> Iterator[Step]:
    """The publisher's datagrams, and what happens around them."""
    rng = random.Random(seed)
    seq = {AUDIO_SSRC: 65000, VIDEO_SSRC: 65400, STRAY_SSRC: 9}
    ts = {AUDIO_SSRC: 0xFFFF0000, VIDEO_SSRC: 5, STRAY_SSRC: 0}
    now = 10.0
    held: list[bytes] = []
    for i in range(700):
        now += 0.004
        for at, action in ((100, "subscribe:1:video"), (250, "mute"), (280, "unmute"),
                           (330, "shed"), (380, "unshed"), (420, "pause:0"),
                           (470, "resume:0"), (520, "subscribe:2:audio")):  # fmt: skip
            if i == at:
                yield Step(now, action=action)
        if i % 5 == 0:
            ssrc, payload = AUDIO_SSRC, rng.randbytes(rng.randrange(20, 160))
            ts[ssrc] += 960
        else:
            ssrc = VIDEO_SSRC
            key = i in (1, 2, 160, 401) or i % 150 == 0
            payload = (KEYFRAME if key else DELTA) + rng.randbytes(rng.randrange(1, 1150))
            ts[ssrc] += 3000
        if 200 <= i < 230:  # audio beyond its 60 packets/s, same instant
            for _ in range(3):
                extra = rtp(seq[AUDIO_SSRC], ts[AUDIO_SSRC], AUDIO_SSRC, b"\xaa" * 40, rng)
                seq[AUDIO_SSRC] += 1
                yield Step(now, tx.protect(extra))
        packet = rtp(seq[ssrc], ts[ssrc], ssrc, payload, rng)
        seq[ssrc] += 1 if rng.random() > 0.03 else rng.randrange(2, 6)  # loss
        datagram = tx.protect(packet)
        roll = rng.random()
        if roll < 0.03:
            held.append(datagram)  # comes later: reordered
            continue
        if 0.97 < roll <= 0.98:  # damaged on the way, then the intact one
            corrupt = bytearray(datagram)
            corrupt[-1] ^= 0x40
            yield Step(now, bytes(corrupt))
        yield Step(now, datagram)
        if roll > 0.98:
            yield Step(now, datagram)  # a replay
        if held and rng.random() < 0.3:
            yield Step(now, held.pop(0))
        if i % 97 == 0:  # a track the SDP never announced
            seq[STRAY_SSRC] += 1
            stray = rtp(seq[STRAY_SSRC], 0, STRAY_SSRC, b"x" * 30, rng)
            yield Step(now, tx.protect(stray))
        if i % 131 == 0:  # valid SRTP around invalid RTP: padding count zero
            bad = bytearray(rtp(seq[AUDIO_SSRC], ts[AUDIO_SSRC], AUDIO_SSRC, b"y" * 30, rng))
            bad[0] |= 0x20
            bad[-1] = 0
            seq[AUDIO_SSRC] += 1
            yield Step(now, tx.protect(bytes(bad)))
    for datagram in held:
        yield Step(now, datagram)


def apply(world: World, step: Step) -> None:
    kind, _, arg = step.action.partition(":")
    if kind == "subscribe":
        index, track = arg.split(":")
        world.subscribe(int(index), track, step.now)
    elif kind in ("mute", "unmute"):
        world.producers["audio"].muted = kind == "mute"
    elif kind in ("shed", "unshed"):
        world.worker.set_overloaded(kind == "shed", step.now)
    elif kind in ("pause", "resume"):
        world.consumers[int(arg)].paused = kind == "pause"
    else:
        world.feed(step.datagram, PEER, step.now)


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


@pytest.mark.parametrize("profile", sorted(KEY_LEN))
@pytest.mark.parametrize("seed", [1, 2])
def test_native_receive_path_matches_the_python_one(
    profile: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    keys = [
        SrtpKeys(profile, rng.randbytes(KEY_LEN[profile]), rng.randbytes(KEY_LEN[profile]))
        for _ in range(4)
    ]
    ices = [IceCredentials(f"u{i}{seed}abcd", "p" * 24) for i in range(4)]
    receivers = []
    for _ in range(3):
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        receivers.append(receiver)
    worlds = [make_world(name, keys, ices, receivers, monkeypatch) for name in ("python", "native")]
    python, native = worlds
    try:
        for world in worlds:
            world.subscribe(0, "video", 10.0)
            world.subscribe(0, "audio", 10.0)
        tx = client(keys[0])  # one protected stream, fed to both worlds
        received: dict[Address, list[bytes]] = {r.getsockname(): [] for r in receivers}
        for step in script(seed, tx):
            for world in worlds:
                apply(world, step)
            for receiver in receivers:  # keep the socket buffers from filling
                received[receiver.getsockname()] += drain(receiver)
        for receiver in receivers:
            received[receiver.getsockname()] += drain(receiver)

        # What each subscriber got: the Python world's captured sends, the native
        # world's datagrams off the wire (the fan-out sends with sendmmsg).
        for addr, got in received.items():
            expected = [data for data, to in python.sent if to == addr]
            assert len(got) == len(expected), addr
            assert got == expected, addr
        assert sum(len(v) for v in received.values()) > 600
        # What the publisher got (keyframe requests), and nothing else went anywhere.
        to_publisher = [data for data, to in python.sent if to == PEER]
        assert [data for data, to in native.sent if to == PEER] == to_publisher
        assert to_publisher, "the late subscriber's keyframe requests"
        assert [to for _, to in native.sent if to != PEER] == []

        for kind in ("audio", "video"):
            ours, theirs = python.producers[kind], native.producers[kind]
            assert ours.packets == theirs.packets > 0, kind
            assert ours.dropped_rate == theirs.dropped_rate, kind
            assert ours.stats.report_block(20.0) == theirs.stats.report_block(20.0), kind
            assert ours.stats.jitter == theirs.stats.jitter, kind
        assert python.producers["audio"].dropped_rate > 0
        ours_cache, theirs_cache = python.producers["video"].cache, native.producers["video"].cache
        assert ours_cache is not None and theirs_cache is not None
        for seq in range(65536):
            assert ours_cache.get(seq) == theirs_cache.get(seq), seq
        ours_counters, theirs_counters = python.counters(), native.counters()
        for name in COMPARED:
            assert ours_counters[name] == theirs_counters[name], name
        for name in ("srtp_replay", "srtp_unprotect_failed", "malformed_rtp", "rate_limited",
                     "overload_shed", "rtp_unknown_ssrc"):  # fmt: skip
            assert ours_counters[name] > 0, name
        assert python.worker.forward_latency.count == native.worker.forward_latency.count > 0
        # Most of it never reached Python in the native world.
        assert native.worker.datapath.counters["datagrams_in"] > 0.8 * ours_counters["datagrams_in"]

        # NACK answers come from the cache, resent by the Worker in both worlds.
        for world in worlds:
            world.sent.clear()
            subscriber = world.subscribers[0]
            consumer = world.consumers[0]
            lost = [(consumer.leg.first_seq + k) & 0xFFFF for k in range(0, 300, 7)]
            nack = serialize_rtcp(
                [RtcpReceiverReport(0x77, []), RtcpNack(0x77, consumer.ssrc, lost)]
            )
            world.feed(client(keys[1]).protect_rtcp(nack), subscriber.addr or PEER, 30.0)
        assert native.sent == python.sent
        assert len(python.sent) > 5
    finally:
        for world in worlds:
            if world.sock is not None:
                world.sock.close()
        for receiver in receivers:
            receiver.close()


def _one_route(monkeypatch: pytest.MonkeyPatch) -> tuple[World, Session, socket.socket]:
    keys = [SrtpKeys("AES_CM_128_HMAC_SHA1_80", os.urandom(30), os.urandom(30)) for _ in range(2)]
    ices = [IceCredentials(f"solo{i}xyz", "q" * 24) for i in range(2)]
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    world = make_world("native", keys, ices, [receiver], monkeypatch)
    world.subscribe(0, "video", 0.0)
    return world, client(keys[0]), receiver


def test_a_stream_resumes_after_more_than_32768_lost_packets_on_the_native_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libsrtp loses the rollover counter after such a gap; C hands the failures to
    Python, which resynchronises, and the stream goes back to C afterwards."""
    world, tx, receiver = _one_route(monkeypatch)
    native: Any = world.worker.datapath
    try:

        def packet(index: int) -> bytes:
            header = struct.pack(
                "!BBHII", 0x80, 96, index & 0xFFFF, index * 3000 & 0xFFFFFFFF, VIDEO_SSRC
            )
            return header + KEYFRAME + index.to_bytes(6, "big")

        start, gap = 50_000, 40_000
        for i in range(start, start + 20):
            world.feed(tx.protect(packet(i)), PEER, 1.0)
        fast_before = native.counters["datagrams_in"]
        assert fast_before == 20
        for i in range(start + 20, start + 20 + gap, 1000):  # lost on the way
            tx.protect(packet(i))
        resume = start + 20 + gap
        for i in range(resume, resume + 60):
            world.feed(tx.protect(packet(i)), PEER, 2.0)
        assert world.worker.counters["srtp_roc_resync"] == 1
        assert not world.publisher.ingress or not world.publisher.ingress.slow
        # After the resync the stream is back on the fast path.
        assert native.counters["datagrams_in"] > fast_before + 40
        got = drain(receiver)
        assert len(got) >= 20 + 60 - 2 * 16  # all but the failures before the resync
    finally:
        assert world.sock is not None
        world.sock.close()
        receiver.close()


def test_an_unrouted_or_closed_transport_leaves_everything_to_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, tx, receiver = _one_route(monkeypatch)
    native: Any = world.worker.datapath
    try:
        payload = struct.pack("!BBHII", 0x80, 96, 1, 0, VIDEO_SSRC) + KEYFRAME
        assert native.process(tx.protect(payload), PEER, 1.0)
        other = ("127.0.0.1", PEER[1] + 1)  # same keys, another address: not routed
        assert not native.process(tx.protect(payload[:3] + b"\x02" + payload[4:]), other, 1.0)
        world.worker.close_transport(world.publisher, "test")
        again = payload[:3] + b"\x03" + payload[4:]
        assert not native.process(tx.protect(again), PEER, 1.0)
        assert world.publisher.ingress is not None and not world.publisher.ingress.routed
    finally:
        assert world.sock is not None
        world.sock.close()
        receiver.close()


def test_receive_reads_batches_from_a_real_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    world, tx, receiver = _one_route(monkeypatch)
    native: Any = world.worker.datapath
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    media.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
    media.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    try:
        # The publisher's address is the sender's now: ICE moves it there.
        world.worker.bind_address(world.publisher, sender.getsockname())
        assert native.receive(media.fileno()) is None  # nothing waiting
        for i in range(70):
            header = struct.pack("!BBHII", 0x80, 96, 100 + i, i * 3000, VIDEO_SSRC)
            sender.sendto(tx.protect(header + KEYFRAME + bytes(100)), media.getsockname())
        sender.sendto(b"\x00\x01 not media", media.getsockname())
        result = native.receive(media.fileno())
        assert result is not None
        count, slow, queued_ns, _overflow = result
        assert count == 64 and slow == [] and 0 <= queued_ns < 10_000_000_000
        result = native.receive(media.fileno())
        assert result is not None
        count, slow, _queued_ns, _overflow = result
        assert count == 7
        assert slow == [(b"\x00\x01 not media", sender.getsockname())]
        assert len(drain(receiver)) == 70
        assert world.worker.forward_latency.count == 70
    finally:
        media.close()
        sender.close()
        assert world.sock is not None
        world.sock.close()
        receiver.close()
