"""Load generator for the SFU: many lightweight WebRTC clients over the real client path.

Each client signals with WHIP (publishers) or WHEP (subscribers) over HTTPS with the
development certificate pinned, runs ICE checks (controlling, USE-CANDIDATE), a DTLS
client handshake with its own certificate, and SRTP with the exported keys, all on
the project's sans-I/O pieces (sfu.wire, sfu.proto) instead of aiortc, so that a few
processes can hold hundreds of clients. See benchmarks/loadgen/media.py for what the
payloads carry and benchmarks/loadgen/runner.py for how one run is measured.

    python -m benchmarks.loadgen --publishers 1 --subscribers 20 --duration 10
"""
