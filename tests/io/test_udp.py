"""MediaPort on a real loopback socket: batched reads, overload shedding and recovery.

The worker is wired by hand (as in tests/routing/test_worker.py): one publisher with
an audio and a video track, one subscriber to both. The publisher's packets go
through the kernel to the port's socket; the subscriber's arrive on a socket of ours.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pylibsrtp import Policy, Session

from sfu.io.udp import OVERLOAD_LATE_S, MediaPort
from sfu.proto.dtls import SrtpKeys
from sfu.routing.consumer import Consumer
from sfu.routing.producer import Producer
from sfu.routing.transport import Transport
from sfu.wire.rtcp import RtcpPli, parse_rtcp
from sfu.wire.rtp import RtpHeader
from sfu.wire.sdp import Codec
from tests.routing.test_worker import REMOTE_UFRAG, binding_request

OPUS = Codec(111, "OPUS", 48000, 2)
VP8 = Codec(96, "VP8", 90000, rtcp_fbs=["nack", "nack pli"])
AUDIO_SSRC, VIDEO_SSRC = 0x1111, 0x2222


@dataclass
class Room:
    port: MediaPort
    publisher: socket.socket
    subscriber: socket.socket
    tx: Session  # the publisher's SRTP
    rx_publisher: Session  # what the SFU sends the publisher (RTCP)
    rx_subscriber: Session

    @property
    def server(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port.port)

    def send(self, kind: str, index: int, size: int = 1000) -> None:
        pt, ssrc = (OPUS.payload_type, AUDIO_SSRC) if kind == "audio" else (96, VIDEO_SSRC)
        header = struct.pack("!BBHII", 0x80, pt, index & 0xFFFF, index * 960, ssrc)
        # VP8 descriptor + key frame tag; the index in the payload identifies the packet.
        payload = b"\x10\x00" + index.to_bytes(4, "big") + bytes(size)
        self.publisher.sendto(self.tx.protect(header + payload), self.server)

    def received(self) -> list[tuple[int, int]]:
        """(payload type, index) of what reached the subscriber so far."""
        out = []
        while True:
            try:
                data = self.subscriber.recv(4096)
            except BlockingIOError:
                return out
            if data[0] >> 6 != 2 or 192 <= data[1] <= 223:
                continue  # the STUN answer to our binding request, RTCP
            plain = self.rx_subscriber.unprotect(data)
            out.append((plain[1] & 0x7F, int.from_bytes(plain[14:18], "big")))

    def keyframe_requests(self) -> int:
        count = 0
        while True:
            try:
                data = self.publisher.recv(4096)
            except BlockingIOError:
                return count
            if data[0] >> 6 == 2 and 192 <= data[1] <= 223:
                packets = parse_rtcp(self.rx_publisher.unprotect_rtcp(data))
                count += sum(isinstance(packet, RtcpPli) for packet in packets)


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _keyed(port: MediaPort, sock: socket.socket, owner: str) -> tuple[Transport, SrtpKeys]:
    worker = port.worker
    transport = worker.create_transport(owner, REMOTE_UFRAG, [], time.monotonic())
    addr = sock.getsockname()
    worker.on_datagram(binding_request(transport, nominate=True), addr, time.monotonic())
    keys = SrtpKeys("AES_CM_128_HMAC_SHA1_80", os.urandom(30), os.urandom(30))
    transport.start_srtp(keys)
    worker.handshake_done(transport)
    return transport, keys


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    port = MediaPort("127.0.0.1", 0, 30.0, "python")
    await port.start()
    pub_sock, sub_sock = _udp_socket(), _udp_socket()
    publisher, pub_keys = _keyed(port, pub_sock, "alice")
    subscriber, sub_keys = _keyed(port, sub_sock, "bob")
    now = time.monotonic()
    for kind, codec, ssrc, mid in (
        ("audio", OPUS, AUDIO_SSRC, "0"),
        ("video", VP8, VIDEO_SSRC, "1"),
    ):
        producer = Producer(f"t-{kind}", "alice", kind, "camera", codec, publisher, mid, ssrc)
        publisher.producers_by_mid[mid] = producer
        publisher.producers_by_ssrc[ssrc] = producer
        consumer = Consumer(f"c-{kind}", subscriber, kind, codec, mid, 0xC000 + ssrc, "cn")
        subscriber.consumers_by_ssrc[consumer.ssrc] = consumer
        consumer.attach(producer, now)
    tx = Session(Policy(key=pub_keys.remote_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx_pub = Session(Policy(key=pub_keys.local_key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    rx_sub = Session(Policy(key=sub_keys.local_key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    yield Room(port, pub_sock, sub_sock, tx, rx_pub, rx_sub)
    await port.stop()
    pub_sock.close()
    sub_sock.close()


async def _drain(room: Room, seconds: float = 0.2) -> None:
    """Let the port read everything queued (it reads on the event loop)."""
    await asyncio.sleep(seconds)


async def test_packets_flow_and_nothing_is_shed_when_the_port_keeps_up(room: Room) -> None:
    for i in range(20):
        room.send("audio", i, size=100)
        room.send("video", i)
        await asyncio.sleep(0.002)
    await _drain(room)
    got = room.received()
    assert [i for pt, i in got if pt == OPUS.payload_type] == list(range(20))
    assert [i for pt, i in got if pt == VP8.payload_type] == list(range(20))
    counters = room.port.worker.counters
    assert counters["overload_shed"] == 0 and counters["overload_episodes"] == 0


async def test_a_stall_is_not_an_overload(room: Room) -> None:
    """A long callback leaves a backlog that drains at once: nothing is shed."""
    worker = room.port.worker
    room.send("video", 0)
    await _drain(room)
    for i in range(1, 61):
        room.send("video", i, size=300)
        if i % 15 == 0:
            room.send("audio", i, size=100)
    time.sleep(5 * OVERLOAD_LATE_S)  # the event loop is blocked while they queue
    await _drain(room)
    got = room.received()
    assert [i for pt, i in got if pt == VP8.payload_type] == list(range(61))
    assert [i for pt, i in got if pt == OPUS.payload_type] == [15, 30, 45, 60]
    assert worker.counters["overload_episodes"] == 0
    assert worker.counters["overload_shed"] == 0
    # The wait is on record (sfu_receive_queue_seconds): over 100 ms, the last bucket.
    assert worker.receive_queue.counts[-1] >= 1


async def test_a_worker_behind_sheds_video_keeps_audio_and_recovers(
    room: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packets arrive faster than the worker handles them, for longer than a stall."""
    worker = room.port.worker
    room.send("video", 0)  # the subscriber's video starts (a key frame)
    await _drain(room)
    room.keyframe_requests()
    assert room.received() == [(VP8.payload_type, 0)]

    # Every decrypted packet now costs 2 ms: the worker handles 500 packets/s, and the
    # publisher sends 700/s of video and 50/s of audio for 1.5 s, from another thread.
    forward = Producer.on_rtp

    def slow_on_rtp(self: Producer, packet: bytes, header: RtpHeader, now: float) -> None:
        time.sleep(0.002)
        forward(self, packet, header, now)

    monkeypatch.setattr(Producer, "on_rtp", slow_on_rtp)
    audio: list[int] = []

    def publish() -> None:
        began = time.monotonic()
        for i in range(1, 1051):
            room.send("video", i, size=200)
            if i % 14 == 0:
                audio.append(i)
                room.send("audio", i, size=100)
            time.sleep(max(0.0, began + i / 700 - time.monotonic()))

    await asyncio.to_thread(publish)
    await _drain(room, 1.0)
    during = room.received()
    assert worker.counters["overload_episodes"] == 1, dict(worker.counters)
    assert worker.counters["overload_shed"] >= 300, dict(worker.counters)
    # Audio went through the overload untouched, in order.
    assert [i for pt, i in during if pt == OPUS.payload_type] == audio
    monkeypatch.setattr(Producer, "on_rtp", forward)

    # The queue is empty again and the episode has lasted its second: the next datagram
    # ends it, and the publisher is asked for a key frame so that pictures recover.
    await asyncio.sleep(0.5)
    room.send("video", 2000)
    await _drain(room)
    assert not worker.shedding
    assert room.keyframe_requests() == 1, dict(worker.counters)
    room.send("video", 2001)
    await _drain(room)
    after = [i for pt, i in room.received() if pt == VP8.payload_type]
    assert after[-1] == 2001
    assert worker.counters["handler_errors"] == 0


async def test_a_datagram_over_the_size_limit_is_counted_not_truncated(room: Room) -> None:
    room.publisher.sendto(b"\x80" + bytes(4000), room.server)
    await _drain(room, 0.1)
    assert room.port.worker.counters["oversized"] == 1


async def test_an_idle_port_runs_no_timer_until_a_transport_or_handshake_needs_one() -> None:
    port = MediaPort("127.0.0.1", 0, 30.0, "python")
    await port.start()
    try:
        assert port._fast_timer is None and port._report_timer is None
        transport = port.worker.create_transport("alice", REMOTE_UFRAG, [], time.monotonic())
        assert port._report_timer is not None and port._fast_timer is None
        with _udp_socket() as peer:
            addr = peer.getsockname()
            port.worker.on_datagram(binding_request(transport), addr, time.monotonic())
        assert port._fast_timer is not None  # the DTLS handshake has retransmissions to time
        port.worker.handshake_done(transport)
        await asyncio.sleep(0.1)
        assert port._fast_timer is None  # the next tick found nothing to time
        port.worker.close_transport(transport, "test")
        await asyncio.sleep(1.1)
        assert port._report_timer is None
    finally:
        await port.stop()


async def test_a_transport_that_never_finishes_ice_is_closed_by_the_report_timer() -> None:
    port = MediaPort("127.0.0.1", 0, 0.5, "python")
    await port.start()
    try:
        transport = port.worker.create_transport("alice", REMOTE_UFRAG, [], time.monotonic())
        await asyncio.sleep(1.2)
        assert transport.closed and port.worker.counters["ice_timeouts"] == 1
    finally:
        await port.stop()
