"""Tests for sfu.routing.connection_stats: a session's transports and tracks as the
server reports them to the participant (the connection panel's server side)."""

from __future__ import annotations

from sfu.routing.connection_stats import IceEndpoint, describe_connection
from sfu.routing.types import MidIntent
from sfu.wire.rtcp import ReportBlock
from tests.routing.test_session import ADDRESS, CHROMIUM, Harness, track_of


def test_fresh_transports_have_no_pair_and_no_keys_yet() -> None:
    harness = Harness()
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    stats = describe_connection(alice, 2.5)
    assert stats.identity == "alice"
    assert [t.mids for t in stats.transports] == [("0",), ("1",), ("2",)]
    for transport in stats.transports:
        assert transport.carries == "media" and transport.dtls_state == "new"
        assert (transport.dtls_version, transport.dtls_cipher, transport.srtp_profile) == (
            None,
            None,
            None,
        )
        assert transport.local == IceEndpoint(ADDRESS.ip, ADDRESS.port)
        assert transport.remote is None and transport.last_heard_s == 2.5
    published = [(t.mid, t.kind, t.codec) for tr in stats.transports for t in tr.published]
    assert published == [("0", "audio", "OPUS"), ("1", "video", "VP8")]


def test_published_tracks_carry_the_servers_receive_counters() -> None:
    harness = Harness()
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    video = alice.producers["1"]
    # Sequence 3 never arrives; 30 fps frames arrive 10 ms late once.
    for seq, arrival in ((1, 0.0), (2, 1 / 30), (4, 3 / 30 + 0.010)):
        video.stats.on_packet(seq, seq * 3000, arrival)
    harness.worker.bind_address(alice.transport_of_mid["1"], ("127.0.0.1", 5555))
    (track,) = describe_connection(alice, 1.0).transports[1].published
    assert (track.track_id, track.label, track.packets_lost) == (video.track_id, "video", 1)
    assert track.jitter_ms > 0
    assert describe_connection(alice, 1.0).transports[1].remote == IceEndpoint("127.0.0.1", 5555)


def test_received_tracks_show_the_subscribers_receiver_report() -> None:
    harness = Harness()
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    bob = harness.session("bob")
    video_id = track_of(alice, "video")
    bob.negotiate(CHROMIUM, {"2": MidIntent(subscribe=video_id)}, 0.0)
    (before,) = describe_connection(bob, 0.0).transports[2].received
    assert (before.track_id, before.identity, before.kind) == (video_id, "alice", "video")
    assert (before.fraction_lost, before.packets_lost, before.jitter_ms) == (None, None, None)
    consumer = bob.consumers["2"]
    consumer.last_report = ReportBlock(consumer.ssrc, 64, 5, 1000, 900, 0, 0)
    (after,) = describe_connection(bob, 0.0).transports[2].received
    # 64/256 lost over the last interval; 900 ticks of the 90 kHz clock are 10 ms.
    assert (after.fraction_lost, after.packets_lost, after.jitter_ms) == (0.25, 5, 10.0)
    assert after.to_json()["identity"] == "alice"
