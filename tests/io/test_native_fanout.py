"""The native fan-out sends exactly the bytes the Python reference sends.

Both datapaths get the same packet stream, legs with the same numbering and SRTP
contexts made from the same keys; the Python datapath's datagrams are captured, the
native one's are read from real loopback sockets, and they must be identical.
"""

from __future__ import annotations

import os
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sfu.io.datapath import create_datapath
from sfu.proto.dtls import SrtpKeys
from sfu.proto.srtp import SrtpPair
from sfu.routing.fanout import PythonDatapath
from sfu.wire.rtp import parse_rtp_header

KEY_LEN = {"AEAD_AES_128_GCM": 28, "AES_CM_128_HMAC_SHA1_80": 30}


@dataclass
class Step:
    packet: bytes
    keyframe: bool
    now: float
    action: str = ""  # "", "switch", "pause:<i>", "resume:<i>", "unroute:<i>", "reroute:<i>"


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, *, marker: bool = False,
        csrcs: int = 0, extension: bool = False, padding: int = 0) -> bytes:  # fmt: skip
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension else 0) | csrcs
    out = struct.pack("!BBHII", first, (0x80 if marker else 0) | 96, seq & 0xFFFF,
                      ts & 0xFFFFFFFF, ssrc)  # fmt: skip
    out += b"".join(struct.pack("!I", 0x1000 + i) for i in range(csrcs))
    if extension:
        out += b"\xbe\xde\x00\x01" + b"\x10\xab\x00\x00"  # one-byte form, id 1
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return out


def stream(seed: int) -> Iterator[Step]:
    rng = random.Random(seed)
    seq, ts, now = 65500, 0xFFFFF000, 100.0  # wraps both counters
    ssrc = 0xAAAA
    for i in range(400):
        if i == 200:  # another publisher: unrelated numbering
            yield Step(b"", False, now, "switch")
            seq, ts, ssrc = rng.randrange(65536), rng.randrange(2**32), 0xBBBB
        for action, at in (("pause:1", 50), ("resume:1", 80), ("unroute:2", 120),
                           ("reroute:2", 150)):  # fmt: skip
            if i == at:
                yield Step(b"", False, now, action)
        keyframe = i in (0, 3, 203, 260) or (i > 150 and i % 97 == 0)
        payload = (b"\x10\x00\x9d\x01" if keyframe else b"\x10\x01") + rng.randbytes(
            rng.randrange(1, 1200)
        )
        packet = rtp(seq, ts, ssrc, payload, marker=rng.random() < 0.3,
                     csrcs=rng.choice([0, 0, 1, 2]), extension=rng.random() < 0.5,
                     padding=rng.choice([0, 0, 0, 4]))  # fmt: skip
        yield Step(packet, keyframe, now)
        seq += 1 if rng.random() > 0.05 else rng.randrange(2, 5)  # occasional loss
        ts += 3000
        now += 0.033


class Receiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr: tuple[str, int] = self.sock.getsockname()

    def drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096))
            except BlockingIOError:
                return out


@pytest.mark.parametrize("profile", sorted(KEY_LEN))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_native_and_python_fanout_send_identical_bytes(profile: str, seed: int) -> None:
    rng = random.Random(seed)
    keys = [
        SrtpKeys(profile, rng.randbytes(KEY_LEN[profile]), rng.randbytes(KEY_LEN[profile]))
        for _ in range(3)
    ]
    receivers = [Receiver() for _ in range(3)]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    captured: dict[tuple[str, int], list[bytes]] = {r.addr: [] for r in receivers}
    python = PythonDatapath(lambda data, addr: captured[addr].append(data))
    native = create_datapath("native", lambda data, addr: None)
    native.set_socket(sender.fileno())
    try:
        paths = []
        for datapath in (python, native):
            fanout = datapath.new_track("video")
            legs = []
            for i, receiver in enumerate(receivers):
                leg = datapath.new_leg(0x5000 + i, 100 + i, True, 90000, (65530 + i, 0xFFFFFF00))
                leg.set_route(SrtpPair(keys[i]), receiver.addr)
                fanout.add(leg)
                legs.append(leg)
            paths.append((fanout, legs))
        wants: list[list[bool]] = [[], []]
        for step in stream(seed):
            for index, (fanout, legs) in enumerate(paths):
                kind, _, arg = step.action.partition(":")
                if kind == "switch":
                    for leg in legs:
                        leg.synced = False
                elif kind in ("pause", "resume"):
                    legs[int(arg)].paused = kind == "pause"
                elif kind == "unroute":
                    legs[int(arg)].set_route(None, None)
                elif kind == "reroute":
                    # A fresh context from the same keys on both sides keeps them equal.
                    n = int(arg)
                    legs[n].set_route(SrtpPair(keys[n]), receivers[n].addr)
                else:
                    header = parse_rtp_header(step.packet)
                    wants[index].append(
                        fanout.forward(step.packet, header, step.keyframe, step.now)
                    )
        assert wants[0] == wants[1]
        for receiver in receivers:
            native_sent = receiver.drain()
            assert len(native_sent) == len(captured[receiver.addr]) > 100
            assert native_sent == captured[receiver.addr]
        for py_leg, native_leg in zip(paths[0][1], paths[1][1], strict=True):
            for field in ("seq_offset", "ts_offset", "last_seq", "last_ts", "first_seq",
                          "packets_sent", "octets_sent", "synced"):  # fmt: skip
                assert getattr(py_leg, field) == getattr(native_leg, field), field
        assert native.forwarded_packets == python.forwarded_packets
        assert native.forwarded_bytes == python.forwarded_bytes
        assert native.datagrams_sent == sum(len(v) for v in captured.values())
    finally:
        sender.close()
        for receiver in receivers:
            receiver.sock.close()


def test_native_leg_stops_sending_when_its_route_is_removed() -> None:
    native = create_datapath("native", lambda data, addr: None)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = Receiver()
    native.set_socket(sender.fileno())
    try:
        fanout = native.new_track("audio")
        leg = native.new_leg(1, 111, False, 48000, (1, 1))
        keys = SrtpKeys("AEAD_AES_128_GCM", os.urandom(28), os.urandom(28))
        leg.set_route(SrtpPair(keys), receiver.addr)
        fanout.add(leg)
        packet = rtp(1, 960, 7, b"opus")
        fanout.forward(packet, parse_rtp_header(packet), False, 1.0)
        assert len(receiver.drain()) == 1
        leg.set_route(None, None)
        assert not leg.ready and leg.srtp is None
        fanout.forward(packet, parse_rtp_header(packet), False, 1.1)
        assert receiver.drain() == []
        with pytest.raises(ValueError, match="not an IP address"):
            leg.set_route(SrtpPair(keys), ("not-an-ip", 5))
    finally:
        sender.close()
        receiver.sock.close()
