"""The load generator's C receive loop (benchmarks/loadgen/fastrx.c) against the Python path.

The same SRTP streams, impaired on purpose, go over loopback UDP to a Python subscriber
(MediaTransport._on_readable -> Subscriber.on_rtp) and to the C loop; every count the
report carries must come out the same.
"""

from __future__ import annotations

import ctypes
import os
import random
import socket
import struct
import subprocess
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from benchmarks.baseline.build import BaselineUnavailable
from benchmarks.loadgen import fastrx
from benchmarks.loadgen.clients import ClientSpec, Subscriber, Window
from benchmarks.loadgen.media import PROBE, read_probe
from benchmarks.loadgen.offer import AUDIO_PT, VIDEO_PT, AnswerSection
from benchmarks.loadgen.runner import LoadSpec, client_rx_library_for, run_load
from benchmarks.loadgen.stats import LatencySamples, StreamStats
from benchmarks.loadgen.transport import MediaTransport
from benchmarks.loadgen.worker import KINDS
from sfu.proto.dtls import SrtpKeys
from sfu.proto.srtp import MAX_PACKET, SrtpPair
from sfu.wire import stun
from sfu.wire.rtp import RtpHeader

FINGERPRINT = ":".join(["AB"] * 32)
PROFILES = {
    "AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
}
AUDIO_SSRC = 0x11111111  # announced in the answer: its kind comes from the SSRC
VIDEO_SSRC = 0x22222222  # not announced: kind from payload type 96
OTHER_SSRC = 0x33333333  # payload type 100, unknown: "video" by the fallback
OTHER_PT = 100
BIG_SSRC = 0x44444444  # authentic but over sfu.proto.srtp.MAX_PACKET: refused unread
REMOTE_UFRAG, REMOTE_PWD = "srvufrag", "s" * 24
LOCAL_UFRAG, LOCAL_PWD = "cliufrag", "c" * 24
TICKS = 240  # one audio and three video packets each
CHUNK = 48  # datagrams sent before the receiver catches up (socket buffers stay small)
CATCH_UP_S = 5.0
RUN_S = 30.0  # the C loop's own bound in these tests; it is stopped long before


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    try:
        return fastrx.load(fastrx.build(tmp_path_factory.mktemp("fastrx")))
    except fastrx.FastRxUnavailable as exc:
        pytest.skip(f"fastrx cannot be built here: {exc}")


# -- the library ------------------------------------------------------------------


def test_fastrx_compiles_without_warnings(lib: ctypes.CDLL, tmp_path: Path) -> None:
    done = subprocess.run(
        fastrx.compile_command(tmp_path / "fastrx.so"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_no_compiler_means_python_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_compiler() -> str:
        raise BaselineUnavailable("no C compiler (gcc or cc) on PATH")

    monkeypatch.setattr(fastrx, "compiler", no_compiler)
    assert client_rx_library_for("c") is None
    assert "warning: subscribers receive in Python" in capsys.readouterr().err
    assert client_rx_library_for("python") is None


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 0xFFFF),
    steps=st.lists(st.integers(-40, 40) | st.sampled_from([0x7FFF, -0x7FFF, 0x8000]), max_size=300),
)
def test_sequence_statistics_are_those_of_stream_stats(
    lib: ctypes.CDLL, start: int, steps: list[int]
) -> None:
    seqs = [start]
    for step in steps:  # small moves (loss, reordering, repeats) and jumps near half the space
        seqs.append((seqs[-1] + step) & 0xFFFF)
    python = StreamStats()
    for seq in seqs:
        python.on_packet(seq)
    state = fastrx._SeqStats(-1, -1, 0, 0, 0, 0)
    seen = fastrx._Seen(*([-1] * fastrx.HISTORY))
    lib.fastrx_seq_feed(ctypes.byref(state), seen, (ctypes.c_uint16 * len(seqs))(*seqs), len(seqs))
    counts = python.counts
    assert (state.received, state.expected, state.out_of_order, state.duplicates) == (
        counts.received,
        counts.expected,
        counts.out_of_order,
        counts.duplicates,
    )
    assert (state.base, state.highest) == (python._base, python._highest)
    assert list(seen) == list(python._seen)


# -- one impaired SRTP stream, two receivers -------------------------------------


def _rtp(
    pt: int,
    seq: int,
    ssrc: int,
    payload: bytes,
    *,
    csrcs: int = 0,
    extension: bool = False,
    padding: int = 0,
    padding_byte: int | None = None,
) -> bytes:
    """An RTP packet; padding_byte overrides the padding count (for malformed ones)."""
    b0 = 0x80 | csrcs | (0x10 if extension else 0) | (0x20 if padding else 0)
    data = struct.pack("!BBHII", b0, pt, seq, seq * 960, ssrc)
    data += b"".join(struct.pack("!I", 0xC0000000 + n) for n in range(csrcs))
    if extension:
        data += struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    data += payload
    if padding:
        count = padding if padding_byte is None else padding_byte
        data += b"\x00" * (padding - 1) + bytes((count,))
    return data


def _audio_payload(send_ns: int, counter: int, size: int = 100) -> bytes:
    probe = PROBE.pack(send_ns, counter)
    return probe + bytes(size - len(probe))


def _video_payload(send_ns: int, counter: int, size: int = 1000) -> bytes:
    head = b"\x10\x11\x00\x00" + PROBE.pack(send_ns, counter)
    return head + bytes(size - len(head))


@dataclass
class Traffic:
    """What the server side sends, in order, and what the receivers must be told."""

    datagrams: list[bytes] = field(default_factory=list)  # from the server address
    strangers: list[int] = field(default_factory=list)  # indices sent from elsewhere
    consent_transactions: list[bytes] = field(default_factory=list)


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(12, len(data))
    return data[:at] + bytes((data[at] ^ 0x5A,)) + data[at + 1 :]


def _build_traffic(profile: str, key: bytes, window: Window, seed: int) -> Traffic:
    rng = random.Random(seed)
    sender = Session(
        Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILES[profile][0])
    )
    traffic = Traffic()
    out = traffic.datagrams
    held: bytes | None = None  # a packet kept back to arrive after the next one
    sent_ns = window.start_ns + 1000
    seqs = {AUDIO_SSRC: 20000, VIDEO_SSRC: 65500}  # video wraps its sequence numbers

    def emit(datagram: bytes) -> None:
        nonlocal held
        roll = rng.random()
        if roll < 0.03:
            return  # lost
        if roll < 0.06 and held is None:
            held = datagram
            return
        if roll < 0.08:
            out.append(_corrupt(datagram, rng))  # fails authentication; the original follows
        out.append(datagram)
        if roll > 0.98:
            out.append(datagram)  # a replay: libsrtp refuses it
        if held is not None:
            out.append(held)
            held = None

    for tick in range(TICKS):
        # A little before and after the window too: received, not measured.
        in_window = 10 <= tick < TICKS - 10
        send_ns = sent_ns + tick * 1000 if in_window else window.start_ns - 1 - tick
        if tick >= TICKS - 10:
            send_ns = window.end_ns + tick
        seq = seqs[AUDIO_SSRC] = (seqs[AUDIO_SSRC] + 1) & 0xFFFF
        size = 5 if tick % 50 == 7 else 100  # too short for the probe: a bad payload
        payload = _audio_payload(send_ns, tick) if size == 100 else bytes(size)
        emit(sender.protect(_rtp(AUDIO_PT, seq, AUDIO_SSRC, payload)))
        for part in range(3):
            seq = seqs[VIDEO_SSRC] = (seqs[VIDEO_SSRC] + 1) & 0xFFFF
            counter = 3 * tick + part
            payload = _video_payload(send_ns, counter, 1000 if part < 2 else 300)
            shape = counter % 7
            if shape == 1:
                packet = _rtp(VIDEO_PT, seq, VIDEO_SSRC, payload, csrcs=2)
            elif shape == 2:
                packet = _rtp(VIDEO_PT, seq, VIDEO_SSRC, payload, extension=True)
            elif shape == 3:
                packet = _rtp(VIDEO_PT, seq, VIDEO_SSRC, payload, padding=4, csrcs=1)
            elif counter % 61 == 4:
                packet = _rtp(VIDEO_PT, seq, VIDEO_SSRC, payload, padding=2, padding_byte=0)
            elif counter % 61 == 5:
                packet = _rtp(VIDEO_PT, seq, VIDEO_SSRC, payload[:6], padding=1, padding_byte=99)
            elif counter % 53 == 6:
                packet = _rtp(VIDEO_PT, seq, VIDEO_SSRC, payload[:10], extension=True)
            else:
                packet = _rtp(VIDEO_PT, seq, VIDEO_SSRC, payload)
            emit(sender.protect(packet))
        if tick == 100:
            # Nine in a row that fail for one SSRC: the eighth tries a ROC resync, in vain.
            for _ in range(9):
                seq = seqs[AUDIO_SSRC] = (seqs[AUDIO_SSRC] + 1) & 0xFFFF
                packet = sender.protect(_rtp(AUDIO_PT, seq, AUDIO_SSRC, _audio_payload(0, 0)))
                out.append(_corrupt(packet, rng))
            out.append(b"\x80\x60" + bytes(6) + struct.pack("!I", VIDEO_SSRC) + bytes(3088))
        if tick == 130:
            out += _edge_cases(sender, seqs, window, key, profile)
        if tick == 120:
            rtcp = sender.protect_rtcp(b"\x80\xc9\x00\x01" + struct.pack("!I", 0xABCDEF01))
            out += [rtcp, _corrupt(rtcp, rng), rtcp]  # good, forged, replayed
            out.append(b"\x64" + bytes(40))  # neither RTP, STUN nor DTLS: counted, ignored
        if tick in (60, 180):
            transaction = os.urandom(12)
            traffic.consent_transactions.append(transaction)
            out.append(
                stun.build_stun(
                    stun.BINDING_SUCCESS, transaction, [], integrity_key=REMOTE_PWD.encode()
                )
            )
            out.append(  # unknown transaction: no consent
                stun.build_stun(
                    stun.BINDING_SUCCESS, os.urandom(12), [], integrity_key=REMOTE_PWD.encode()
                )
            )
        if tick == 90:
            out.append(
                stun.build_stun(
                    stun.BINDING_REQUEST,
                    os.urandom(12),
                    [(stun.ATTR_USERNAME, f"{LOCAL_UFRAG}:{REMOTE_UFRAG}".encode())],
                    integrity_key=LOCAL_PWD.encode(),
                )
            )
            traffic.strangers.append(len(out))
            out.append(out[-2])  # a copy of media from another address: not ours
    # A third stream that loses more than half the sequence space: libsrtp guesses the
    # wrong rollover counter, and after eight failures the resync finds the right one.
    seq = 65000
    first = _rtp(OTHER_PT, seq, OTHER_SSRC, _video_payload(sent_ns, 0))
    out.append(sender.protect(first))
    for _ in range(0x10000 - 65000 - 1 + 33000):
        seq = (seq + 1) & 0xFFFF
        sender.protect(_rtp(OTHER_PT, seq, OTHER_SSRC, b""))
    for n in range(12):
        seq = (seq + 1) & 0xFFFF
        out.append(sender.protect(_rtp(OTHER_PT, seq, OTHER_SSRC, _video_payload(sent_ns, n))))
    out.append(b"")  # empty: not even counted
    return traffic


def _edge_cases(
    sender: Session, seqs: dict[int, int], window: Window, key: bytes, profile: str
) -> list[bytes]:
    """Packets at the edges: of the window, of the probe's size, of padding, of size."""
    packets: list[tuple[int, int, bytes]] = [
        (AUDIO_PT, AUDIO_SSRC, PROBE.pack(window.start_ns, 1)),  # first instant: measured
        (AUDIO_PT, AUDIO_SSRC, PROBE.pack(window.end_ns - 1, 2)),  # last instant: measured
        (AUDIO_PT, AUDIO_SSRC, PROBE.pack(window.end_ns, 3)),  # just after: not measured
        (VIDEO_PT, VIDEO_SSRC, b"\x10\x11\x00\x00" + PROBE.pack(window.start_ns, 4)),
        (VIDEO_PT, VIDEO_SSRC, b"\x10\x11\x00\x00" + PROBE.pack(window.start_ns, 5)[:-1]),
    ]
    out = []
    for pt, ssrc, payload in packets:
        seq = seqs[ssrc] = (seqs[ssrc] + 1) & 0xFFFF
        out.append(sender.protect(_rtp(pt, seq, ssrc, payload)))
    # Too short for the probe once its 20 bytes of padding are taken off.
    seq = seqs[AUDIO_SSRC] = (seqs[AUDIO_SSRC] + 1) & 0xFFFF
    out.append(sender.protect(_rtp(AUDIO_PT, seq, AUDIO_SSRC, bytes(5), padding=20)))
    # pylibsrtp's Session stops at 1500 bytes; the SFU's own context goes to 3000.
    big = SrtpPair(SrtpKeys(profile, key, os.urandom(len(key))))
    payload = _video_payload(window.start_ns, 0, MAX_PACKET - 12 - 4)  # + a tag: over
    out.append(big.protect(_rtp(VIDEO_PT, 1, BIG_SSRC, payload)))
    assert len(out[-1]) > MAX_PACKET
    return out


@dataclass
class Receiver:
    subscriber: Subscriber
    transport: MediaTransport
    latency: dict[str, LatencySamples]
    app_latency: dict[str, LatencySamples]


def _receiver(
    profile: str, key: bytes, window: Window, server: tuple[str, int], traffic: Traffic
) -> Receiver:
    latency = {kind: LatencySamples() for kind in KINDS}
    app_latency = {kind: LatencySamples() for kind in KINDS}
    spec = ClientSpec("s0", "subscriber", "room", "", "/whep/room", KINDS)
    subscriber = Subscriber(spec, window, latency, app_latency)
    subscriber.ice_ufrag, subscriber.ice_pwd = LOCAL_UFRAG, LOCAL_PWD
    host, port = server
    ice = (REMOTE_UFRAG, REMOTE_PWD, FINGERPRINT, host, port)
    audio = AnswerSection("audio", "0", "sendonly", *ice, [AUDIO_SSRC], [AUDIO_PT])
    video = AnswerSection("video", "1", "sendonly", *ice, [], [VIDEO_PT])
    subscriber.sections = [audio, video]
    assert subscriber.open_transports(controlling=True) is None
    subscriber.learn_streams()
    (transport,) = subscriber.transports
    transport.srtp = SrtpPair(SrtpKeys(profile, os.urandom(len(key)), key))
    transport._pending.update(traffic.consent_transactions)
    subscriber.connected = True
    return Receiver(subscriber, transport, latency, app_latency)


def _send(
    traffic: Traffic,
    server: socket.socket,
    stranger: socket.socket,
    to: tuple[str, int],
    caught_up: Callable[[int], bool],
) -> None:
    """Send in chunks, each once the receiver has counted the previous ones."""
    counted = 0
    for start in range(0, len(traffic.datagrams), CHUNK):
        for index in range(start, min(start + CHUNK, len(traffic.datagrams))):
            datagram = traffic.datagrams[index]
            (stranger if index in traffic.strangers else server).sendto(datagram, to)
            counted += bool(datagram) and index not in traffic.strangers
        deadline = time.monotonic() + CATCH_UP_S
        while not caught_up(counted) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert caught_up(counted), f"receiver stuck before {counted} datagrams"


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    stranger.bind(("127.0.0.1", 0))
    yield server, stranger
    server.close()
    stranger.close()


def _python_path(
    receiver: Receiver, traffic: Traffic, server: socket.socket, stranger: socket.socket
) -> list[tuple[int, int, int]]:
    accepted: list[tuple[int, int, int]] = []
    subscriber, transport = receiver.subscriber, receiver.transport

    def recording(packet: bytes, header: RtpHeader, kernel_ns: int, app_ns: int) -> None:
        before = sum(len(s.values) for s in receiver.latency.values())
        subscriber.on_rtp(packet, header, kernel_ns, app_ns)
        if sum(len(s.values) for s in receiver.latency.values()) > before:
            payload = packet[header.header_size : len(packet) - header.padding_size]
            probe = read_probe(payload, subscriber.streams[header.ssrc].kind)
            assert probe is not None
            accepted.append((0, probe[0], header.sequence_number))

    transport.on_rtp = recording

    def caught_up(count: int) -> bool:
        transport._on_readable()
        return transport.datagrams_received >= count

    _send(traffic, server, stranger, transport.local_address, caught_up)
    return accepted


def _c_path(
    lib: ctypes.CDLL,
    receiver: Receiver,
    traffic: Traffic,
    server: socket.socket,
    stranger: socket.socket,
) -> tuple[list[tuple[int, int, int]], fastrx.FastReceiver]:
    fast = fastrx.FastReceiver(
        lib,
        [receiver.subscriber],
        receiver.subscriber.window,
        receiver.latency,
        receiver.app_latency,
        trace_packets=4 * TICKS + 100,
    )
    fast.start(time.monotonic_ns() + int(RUN_S * 1e9))
    try:
        _send(
            traffic,
            server,
            stranger,
            receiver.transport.local_address,
            lambda count: fast.datagrams_received() >= count,
        )
    finally:
        fast.finish()
    assert fast.status == 1  # stopped by finish, not by time
    assert fast.totals["queue_dropped"] == 0 and fast.totals["untracked"] == 0
    return fast.accepted(), fast


def _plausible(receiver: Receiver, window: Window) -> None:
    now = time.monotonic_ns()
    for kind in KINDS:
        kernel, app = receiver.latency[kind].values, receiver.app_latency[kind].values
        assert len(kernel) == len(app)
        for k, a in zip(kernel, app, strict=True):
            # Sent at the window's start (plus microseconds), received after it.
            assert 0 < k <= a <= now - window.start_ns


@pytest.mark.timeout(60)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_c_loop_counts_what_the_python_path_counts(
    lib: ctypes.CDLL, profile: str, sockets: tuple[socket.socket, socket.socket]
) -> None:
    server, stranger = sockets
    key = os.urandom(PROFILES[profile][1])
    now = time.monotonic_ns()
    window = Window(now - 2_000_000_000, now - 1_000_000_000, True)  # all of it past
    traffic = _build_traffic(profile, key, window, seed=len(profile))
    python = _receiver(profile, key, window, server.getsockname(), traffic)
    native = _receiver(profile, key, window, server.getsockname(), traffic)
    pairs = [r.transport.srtp for r in (python, native)]
    try:
        accepted_python = _python_path(python, traffic, server, stranger)
        accepted_c, fast = _c_path(lib, native, traffic, server, stranger)
    finally:
        python.transport.close()
        native.transport.close()

    py_report, c_report = python.subscriber.report(), native.subscriber.report()
    assert c_report == py_report
    assert native.transport.datagrams_received == python.transport.datagrams_received
    assert native.transport.socket_drops == python.transport.socket_drops == 0
    assert Counter(accepted_c) == Counter(accepted_python)
    for ssrc, stream in python.subscriber.streams.items():
        other = native.subscriber.streams[ssrc].stats
        assert (other._base, other._highest) == (stream.stats._base, stream.stats._highest)
        assert other._seen == stream.stats._seen
    for kind in KINDS:
        assert len(native.latency[kind].values) == len(python.latency[kind].values)
    _plausible(python, window)
    _plausible(native, window)
    # The traffic exercised what it was built to, on both paths alike.
    streams = {s["kind"]: s for s in py_report["streams"] if s["received_total"] > 20}
    assert set(streams) == {"audio", "video"}
    assert sum(s["bad_payloads"] for s in py_report["streams"]) >= 3
    assert sum(s["lost"] for s in py_report["streams"]) > 0
    assert sum(s["out_of_order"] for s in py_report["streams"]) > 0
    assert py_report["srtp_errors"] >= 15  # corrupt, replayed, oversized, malformed
    assert py_report["consent_ok"] == 2 and py_report["checks_answered"] == 1
    # The third stream's wrong rollover guess was resynced once, on both paths.
    assert [p.roc_resyncs for p in pairs if p is not None] == [1, 1]
    assert python.subscriber.streams[OTHER_SSRC].received_total == 13 - 7
    assert fast.totals["queued"] == 5  # four consent responses and one check
    assert len(accepted_c) == sum(len(native.latency[k].values) for k in KINDS)


# -- the loop's bounds ------------------------------------------------------------


def _idle_receiver(lib: ctypes.CDLL, server: socket.socket) -> tuple[fastrx.FastReceiver, Receiver]:
    key = os.urandom(28)
    window = Window(0, 1, True)
    receiver = _receiver("AEAD_AES_128_GCM", key, window, server.getsockname(), Traffic())
    fast = fastrx.FastReceiver(
        lib,
        [receiver.subscriber],
        window,
        receiver.latency,
        {kind: LatencySamples() for kind in KINDS},
    )
    return fast, receiver


@pytest.mark.timeout(30)
def test_the_loop_ends_by_itself_at_its_time(
    lib: ctypes.CDLL, sockets: tuple[socket.socket, socket.socket]
) -> None:
    fast, receiver = _idle_receiver(lib, sockets[0])
    started = time.monotonic()
    fast.start(time.monotonic_ns() + 200_000_000)
    for _ in range(500):
        if not fast.running:
            break
        time.sleep(0.01)
    assert not fast.running and 0.19 < time.monotonic() - started < 2.0
    fast.finish()
    assert fast.status == 0
    receiver.transport.close()


@pytest.mark.timeout(30)
def test_finish_stops_the_loop_at_once(
    lib: ctypes.CDLL, sockets: tuple[socket.socket, socket.socket]
) -> None:
    fast, receiver = _idle_receiver(lib, sockets[0])
    fast.start(time.monotonic_ns() + int(RUN_S * 1e9))
    time.sleep(0.05)
    started = time.monotonic()
    fast.finish()
    assert time.monotonic() - started < 1.0
    assert fast.status == 1 and not fast.running
    receiver.transport.close()


def test_latency_beyond_the_cap_is_counted_as_overflow(
    lib: ctypes.CDLL, sockets: tuple[socket.socket, socket.socket]
) -> None:
    server, _ = sockets
    key = os.urandom(28)
    now = time.monotonic_ns()
    window = Window(now - 1_000_000_000, now + 60_000_000_000, True)
    receiver = _receiver("AEAD_AES_128_GCM", key, window, server.getsockname(), Traffic())
    receiver.latency["audio"] = LatencySamples(cap=3)
    receiver.latency["audio"].values = array("q", [7])  # room for two more
    sender = Session(
        Policy(
            key=key,
            ssrc_type=Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        )
    )
    traffic = Traffic(
        [
            sender.protect(_rtp(AUDIO_PT, n, AUDIO_SSRC, _audio_payload(now - 1000, n)))
            for n in range(5)
        ]
    )
    _c_path(lib, receiver, traffic, server, server)
    samples = receiver.latency["audio"]
    assert len(samples.values) == 3 and samples.values[0] == 7 and samples.overflow == 3
    assert len(receiver.app_latency["audio"].values) == 5
    receiver.transport.close()


# -- the whole harness ------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_short_run_received_in_c_loses_nothing_and_counts_every_stream(
    lib: ctypes.CDLL,
) -> None:
    result = run_load(
        LoadSpec(
            publishers=1,
            subscribers=2,
            rooms=1,
            duration_s=3.0,
            warmup_s=1.0,
            datapath="native",
            client_rx="c",
        )
    )
    assert result["client_rx"] == "c", result["client_rx_by_process"]
    assert result["clients"]["connected"] == 3, result["clients"]["failed"]
    assert result["scenario"]["client_rx_requested"] == "c"
    assert result["client_rx_dropped"] == 0
    assert result["streams"] == 4 and result["silent_streams"] == 0
    assert result["loss"] == 0 and result["lost"] == 0
    assert result["delivery"]["audio"] == 1.0 and result["delivery"]["video"] == 1.0
    assert result["client_srtp_errors"] == 0
    assert result["latency_us"]["count"] == result["received"] + result["duplicates"] > 0
    # Media in the window plus consent responses: counted by C, then by the transports.
    assert result["client_datagrams"]["received"] >= result["received"]
