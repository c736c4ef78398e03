"""Measure the SFU's CPU cost of relaying data-channel traffic (SCTP over DTLS).

    .venv/bin/python -m benchmarks.datachannels --bytes 8000000 [--runs 3] [--json out.json]
    .venv/bin/python -m benchmarks.datachannels --in-memory [--profile] [--bytes N]

Default (real) mode: starts a real `sfu serve` on loopback (run it inside
`unshare -n sh -c 'ip link set lo up && ...'` to be sure nothing leaves the machine),
joins two aiortc members with control and file channels, and sends one file of
--bytes from the first to the second. The figure of merit is the server's CPU per
relayed DATA packet: CPU is read from /proc/<pid>/stat of the server process
(utime + stime, all threads) just before the first chunk and once the last byte has
arrived. The relayed DATA packets are counted from the sizes: each 16 KiB chunk
(plus its 4-byte transfer number) is one message of ceil(16388 / 1160) DATA chunks
of at most MAX_USER_DATA_SIZE bytes, one per packet, as both aiortc and our SCTP
fragment (the in-memory mode checks this count against the association's own
data_chunks_in: they agree). The server's own counters are reported beside it: when
the members leave, each association logs `data channels closed ... packets_in=N
packets_out=M`, which include SACKs (aiortc acknowledges every packet) and
retransmissions, so they are a cross-check, not the denominator. The aiortc
clients run in this process and are slow themselves, so MB/s is bounded by them and
by the room's file quota (FileLimits.rate_bps); the server's CPU is what counts.

--in-memory runs the same relay without sockets or a server process: two clients
(pyOpenSSL + SctpAssociation) talk through two DtlsServer + SctpAssociation pairs
that relay every message from one to the other, and only the server-side calls are
timed (--profile adds a cProfile of them).

Every run is bounded by --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import json
import math
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen.server import cpu_seconds

FILE_CHUNK = 16 * 1024  # what a browser sends per message (tests/e2e CHUNK)
CHUNK_HEADER = 4  # the transfer number in front of each file chunk
_CLOSED = re.compile(r"data channels closed session=(\S+) packets_in=(\d+) packets_out=(\d+)")


def estimated_packets(nbytes: int) -> int:
    """DATA packets for nbytes of file in FILE_CHUNK messages (each with its header)."""
    from sfu.proto.sctp import MAX_USER_DATA_SIZE

    per_message = FILE_CHUNK + CHUNK_HEADER
    full, rest = divmod(nbytes, FILE_CHUNK)
    packets = full * math.ceil(per_message / MAX_USER_DATA_SIZE)
    if rest:
        packets += math.ceil((rest + CHUNK_HEADER) / MAX_USER_DATA_SIZE)
    return packets


# -- real server ----------------------------------------------------------------


async def real_run(nbytes: int, timeout_s: float, spy: Path | None) -> dict[str, Any]:
    import aiohttp
    import aioice

    from benchmarks.loadgen.datamember import join_data_member, send_file
    from benchmarks.loadgen.server import SfuUnderTest
    from benchmarks.loadgen.whip import pinned_context
    from signaling.tokens import SigningKeys

    # aioice leaves 127.0.0.1 out of its host candidates; this runs on loopback only.
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    server = SfuUnderTest.self_started_default(["--metrics-port", "0"])
    server.start()
    try:
        assert server.pid is not None
        pid = server.pid
        keys = SigningKeys.load_or_create(server.data_dir)
        connector = aiohttp.TCPConnector(ssl=pinned_context(server.cert_path))
        async with aiohttp.ClientSession(connector=connector) as http:
            alice, bob = [
                await join_data_member(
                    http, server.base_url, keys.issue(identity=who, room="bench"), who
                )
                for who in ("alice", "bob")
            ]
            payload = os.urandom(nbytes)
            profiler = None
            if spy is not None:
                profiler = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking",
                     "-p", str(pid), "-o", str(spy), "-f", "raw", "-r", "250"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                await asyncio.sleep(1.0)  # py-spy attaches
            cpu0, client0, t0 = cpu_seconds(pid), time.process_time(), time.monotonic()

            async def transfer() -> None:
                await send_file(alice, payload, "bench")
                while bob.received_bytes() < nbytes:
                    await asyncio.sleep(0.005)

            try:
                async with asyncio.timeout(timeout_s):
                    await transfer()
            except TimeoutError:
                pass
            elapsed = time.monotonic() - t0
            cpu = cpu_seconds(pid) - cpu0
            client_cpu = time.process_time() - client0
            if profiler is not None:
                profiler.send_signal(2)  # SIGINT: py-spy writes what it has
                profiler.wait(timeout=30)
            got = bob.received_bytes()
            complete = got == nbytes and any(bytes(c) == payload for c in bob.chunks.values())
            await alice.close()
            await bob.close()
            await asyncio.sleep(1.0)  # the server notices and logs its counters
        log = server.log_tail(10_000_000)
    finally:
        server.stop()
    if not complete:
        kept = Path(tempfile.gettempdir()) / f"bench-dc-incomplete-{os.getpid()}.log"
        kept.write_text(log)
        print(f"incomplete transfer: server log kept in {kept}", file=sys.stderr)
    closed = [(int(m[2]), int(m[3])) for m in _CLOSED.finditer(log)]
    packets = estimated_packets(nbytes)
    return {
        "mode": "real",
        "bytes": nbytes,
        "complete": complete,
        "seconds": round(elapsed, 3),
        "received": got,
        "mb_per_s": round(got / elapsed / 1e6, 3),
        "server_cpu_s": round(cpu, 3),
        "client_cpu_s": round(client_cpu, 3),
        "data_packets_estimated": packets,
        "server_packets_in_out": closed,
        "server_us_per_packet": round(cpu / packets * 1e6, 1),
    }


# -- in memory --------------------------------------------------------------------


class _MemoryPeer:
    """A client (pyOpenSSL DTLS + SCTP) and the server's DtlsServer + SCTP for it."""

    def __init__(self, certificate: Any, key: Any, fingerprint: str, server_cert: Any) -> None:
        from OpenSSL import SSL

        from sfu.proto import sctp
        from sfu.proto.dtls import DtlsServer

        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.use_certificate(certificate)
        ctx.use_privatekey(key)
        self.ssl = SSL.Connection(ctx, None)
        self.ssl.set_connect_state()
        self.dtls = DtlsServer(server_cert.create_context(), [("sha-256", fingerprint)])
        self.dtls.keep_application_data = True
        self.client = sctp.SctpAssociation(is_dtls_server=False)
        self.server = sctp.SctpAssociation(max_message_size=65536, manual_release=True)
        self.inbox: list[bytes] = []  # datagrams from the server to the client
        self.received = 0
        self.server_stream: int | None = None

    def client_datagrams(self, now: float) -> list[bytes]:
        """The client takes what the server sent and answers (not timed)."""
        from OpenSSL import SSL

        from sfu.proto import sctp

        for datagram in self.inbox:
            self.ssl.bio_write(datagram)
        self.inbox = []
        try:
            while record := self.ssl.recv(16384):
                self.client.receive(record, now)
        except SSL.WantReadError:
            pass
        for event in self.client.events():
            if isinstance(event, sctp.MessageReceived):
                self.received += len(event.data)
        out = []
        for packet in self.client.packets_to_send(now):
            self.ssl.send(packet)
            out.append(self.ssl.bio_read(65536))
        return out

    def handshake(self) -> None:
        from OpenSSL import SSL

        from sfu.proto.dtls import DtlsState

        for _ in range(10):
            try:
                self.ssl.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                self.dtls.receive(self.ssl.bio_read(65536))
            except SSL.WantReadError:
                pass
            for datagram in self.dtls.datagrams_to_send():
                self.ssl.bio_write(datagram)
            if self.dtls.state is DtlsState.CONNECTED:
                return
        raise RuntimeError("in-memory DTLS handshake failed")


class _MemoryRelay:
    """What Transport.on_dtls and DataEndpoint do for a file chunk, minus the room."""

    def __init__(self, sender: _MemoryPeer, recipient: _MemoryPeer) -> None:
        self.sender = sender
        self.recipient = recipient

    def on_datagram(self, peer: _MemoryPeer, datagram: bytes, now: float) -> None:
        from sfu.proto import sctp

        other = self.recipient if peer is self.sender else self.sender
        peer.dtls.receive(datagram)
        for record in peer.dtls.application_data():
            peer.server.receive(record, now)
            for event in peer.server.events():
                if isinstance(event, sctp.MessageReceived):
                    if other.server_stream is not None:
                        other.server.send(other.server_stream, event.data, now)
                        self.flush(other, now)
                    peer.server.release(len(event.data))
            self.flush(peer, now)

    @staticmethod
    def flush(peer: _MemoryPeer, now: float) -> None:
        for packet in peer.server.packets_to_send(now):
            if peer.dtls.send_application_data(packet):
                peer.inbox.extend(peer.dtls.datagrams_to_send())


def memory_run(nbytes: int, timeout_s: float, profile: bool) -> dict[str, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from sfu.proto.dtls import DtlsCertificate

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    day = datetime.timedelta(days=1)
    today = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(today - day).not_valid_after(today + day).sign(key, hashes.SHA256())
    )  # fmt: skip
    fingerprint = ":".join(f"{b:02X}" for b in certificate.fingerprint(hashes.SHA256()))
    server_cert = DtlsCertificate()
    alice = _MemoryPeer(certificate, key, fingerprint, server_cert)
    bob = _MemoryPeer(certificate, key, fingerprint, server_cert)
    relay = _MemoryRelay(alice, bob)
    clock = 0.0
    server_s = 0.0
    profiler = cProfile.Profile() if profile else None

    def step(timed: bool) -> bool:
        nonlocal server_s
        moved = False
        for peer in (alice, bob):
            for datagram in peer.client_datagrams(clock):
                moved = True
                start = time.perf_counter()
                if timed and profiler is not None:
                    profiler.enable()
                relay.on_datagram(peer, datagram, clock)
                if timed and profiler is not None:
                    profiler.disable()
                if timed:
                    server_s += time.perf_counter() - start
        return moved

    for peer in (alice, bob):
        peer.handshake()
        peer.client.start(clock)
    for _ in range(20):
        step(False)
        clock += 0.001
    stream = alice.client.open_channel("file")
    bob.server_stream = bob.server.open_channel("file")
    relay.flush(bob, clock)
    for _ in range(20):
        step(False)
        clock += 0.001
    chunk = os.urandom(FILE_CHUNK)
    queued = 0
    packets0 = alice.server.stats.data_chunks_in
    deadline = time.monotonic() + timeout_s
    wall0 = time.perf_counter()
    while bob.received < nbytes and time.monotonic() < deadline:
        while queued < nbytes and alice.client.buffered_amount(stream) < 1024 * 1024:
            alice.client.send(stream, chunk[: nbytes - queued], clock)
            queued += min(FILE_CHUNK, nbytes - queued)
        if step(True):
            clock += 0.0001
            continue
        clock += 0.01  # idle: let timers (delayed SACK) run
        for peer in (alice, bob):
            for association in (peer.client, peer.server):
                due = association.get_timeout()
                if due is not None and due <= clock:
                    association.handle_timeout(clock)
            relay.flush(peer, clock)
    wall = time.perf_counter() - wall0
    packets = alice.server.stats.data_chunks_in - packets0
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
    t3 = alice.server.stats.t3_expirations + bob.server.stats.t3_expirations
    return {
        "mode": "in-memory",
        "bytes": nbytes,
        "complete": bob.received >= nbytes,
        "seconds": round(wall, 3),
        "server_cpu_s": round(server_s, 3),
        "data_packets_counted": packets,
        "data_packets_estimated": estimated_packets(nbytes),
        "server_us_per_packet": round(server_s / max(1, packets) * 1e6, 1),
        "server_t3_expirations": t3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=int, default=8_000_000, help="file size")
    parser.add_argument("--runs", type=int, default=1, help="report the median of N runs")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run at most")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--in-memory", action="store_true", help="no sockets, no server process")
    parser.add_argument("--profile", action="store_true", help="cProfile (--in-memory only)")
    parser.add_argument("--spy", type=Path, help="py-spy raw profile of the server to this file")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    for _ in range(args.runs):
        if args.in_memory:
            result = memory_run(args.bytes, args.timeout, args.profile)
        else:
            result = asyncio.run(real_run(args.bytes, args.timeout, args.spy))
        print(json.dumps(result))
        runs.append(result)
    per_packet = statistics.median(r["server_us_per_packet"] for r in runs)
    summary: dict[str, Any] = {
        "median_server_us_per_packet": per_packet,
        "median_server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs),
        "all_complete": all(r["complete"] for r in runs),
    }
    if not args.in_memory:
        summary["median_mb_per_s"] = statistics.median(r["mb_per_s"] for r in runs)
    print(json.dumps(summary))
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
