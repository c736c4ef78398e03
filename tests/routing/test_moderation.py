"""Moderation hooks of the media plane: muting a class of tracks stops forwarding at the
next packet, unmuting resumes from a keyframe, pausing a subscriber stops its legs."""

from __future__ import annotations

import struct

from sfu.routing.producer import Producer
from sfu.routing.session import SessionPolicy, media_class
from sfu.routing.types import MidIntent
from sfu.wire.rtp import parse_rtp_header
from tests.routing.test_session import AIORTC_RECVONLY, CHROMIUM, Harness, track_of


def rtp(ssrc: int, seq: int, payload_type: int = 96) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, seq, seq * 3000, ssrc) + b"\x00" * 20


def feed(producer: Producer, seq: int) -> None:
    assert producer.ssrc is not None
    packet = rtp(producer.ssrc, seq)
    producer.on_rtp(packet, parse_rtp_header(packet), float(seq))


def test_muting_video_drops_the_next_packet_and_leaves_audio_flowing() -> None:
    harness = Harness()
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    audio, video = alice.producers["0"], alice.producers["1"]
    feed(video, 1)
    assert video.packets == 1
    changed = alice.set_muted("video", True, 1.0)
    assert [p.track_id for p in changed] == [video.track_id]
    feed(video, 2)
    feed(audio, 2)
    assert (video.packets, audio.packets) == (1, 1)
    assert alice.set_muted("video", False, 3.0) == [video]
    feed(video, 3)
    assert video.packets == 2


def test_unmute_makes_subscribers_wait_for_a_keyframe() -> None:
    harness = Harness()
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    bob = harness.session("bob")
    bob.negotiate(AIORTC_RECVONLY, {"1": MidIntent(subscribe=track_of(alice, "video"))}, 0.0)
    leg = bob.consumers["1"].leg
    leg.synced = True
    alice.set_muted("video", True, 1.0)
    assert not leg.synced  # no NACK answers from before the mute either
    leg.synced = True
    alice.set_muted("video", False, 2.0)
    assert not leg.synced


def test_screen_share_is_its_own_class_and_new_tracks_start_muted() -> None:
    harness = Harness()
    alice = harness.session("alice")
    alice.set_muted("screen", True, 0.0)
    alice.negotiate(CHROMIUM, {"1": MidIntent(publish="screen", source="screen")}, 0.0)
    screen = alice.producers["1"]
    assert media_class(screen) == "screen"
    assert screen.muted
    assert alice.set_muted("video", True, 1.0) == []
    assert alice.set_muted("screen", False, 1.0) == [screen]
    assert not screen.muted


def test_losing_subscribe_pauses_every_consumer_and_refuses_new_ones() -> None:
    harness = Harness()
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    bob = harness.session("bob")
    intents = {"1": MidIntent(subscribe=track_of(alice, "video"))}
    bob.negotiate(AIORTC_RECVONLY, intents, 0.0)
    bob.set_receiving(False, 1.0)
    assert bob.consumers["1"].paused
    result = bob.negotiate(AIORTC_RECVONLY, intents, 2.0)
    assert ("forbidden", "mid 1: this token may not subscribe") in result.warnings
    assert "1" not in bob.consumers
    bob.set_receiving(True, 3.0)
    result = bob.negotiate(AIORTC_RECVONLY, intents, 4.0)
    assert result.warnings == [] and not bob.consumers["1"].paused


def test_regaining_subscribe_resumes_paused_consumers_from_a_keyframe() -> None:
    harness = Harness()
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    bob = harness.session("bob")
    bob.negotiate(AIORTC_RECVONLY, {"1": MidIntent(subscribe=track_of(alice, "video"))}, 0.0)
    consumer = bob.consumers["1"]
    bob.set_receiving(False, 1.0)
    consumer.leg.synced = True
    bob.set_receiving(True, 2.0)
    assert not consumer.paused and not consumer.leg.synced


def test_a_track_flows_only_when_no_caller_mutes_it() -> None:
    harness = Harness()
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    video = alice.producers["1"]
    alice.set_muted("video", True, 1.0, by="moderation")
    assert alice.set_muted("video", True, 1.0, by="policy") == []
    assert alice.set_muted("video", False, 2.0, by="policy") == []  # moderation still mutes
    assert video.muted
    assert alice.set_muted("video", False, 3.0, by="moderation") == [video]
    assert not video.muted


def test_receiving_never_exceeds_what_the_session_started_with() -> None:
    harness = Harness()
    viewer = harness.session("viewer", SessionPolicy(can_publish=True, can_subscribe=False))
    viewer.set_receiving(True, 0.0, by="policy")
    assert not viewer.policy.can_subscribe
    listener = harness.session("listener")
    listener.set_receiving(False, 0.0, by="moderation")
    listener.set_receiving(True, 0.0, by="policy")
    assert not listener.policy.can_subscribe
    listener.set_receiving(True, 0.0, by="moderation")
    assert listener.policy.can_subscribe
