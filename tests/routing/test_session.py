"""Tests for sfu.routing.session: negotiation of real offers without sockets, room events,
and answers that a real aiortc peer accepts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from sfu.routing.room import Room
from sfu.routing.session import (
    MediaAddress,
    Session,
    SessionPolicy,
    choose_publish_codec,
    match_codec,
)
from sfu.routing.transport import Address
from sfu.routing.types import (
    MediaError,
    MidIntent,
    ParticipantJoined,
    ParticipantLeft,
    RoomEvent,
    TrackPublished,
    TrackUnpublished,
)
from sfu.routing.worker import Worker
from sfu.wire.sdp import Codec, MediaSection, SessionDescription, parse_sdp

DATA = Path(__file__).resolve().parent.parent / "data"
CHROMIUM = (DATA / "sdp_chromium_offer.sdp").read_text()
AIORTC = (DATA / "sdp_aiortc_offer.sdp").read_text()
GSTREAMER = (DATA / "sdp_gstreamer_offer.sdp").read_text()
# aiortc's offer turned into a subscriber's: the same codecs (VP8 is PT 97 there, 96 in Chromium).
AIORTC_RECVONLY = AIORTC.replace("a=sendonly", "a=recvonly")
PUBLISHER = SessionPolicy(can_publish=True, can_subscribe=True)
ADDRESS = MediaAddress("127.0.0.1", 40000)


class Harness:
    """A worker and a room, with sessions whose events are recorded per identity."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []
        self.worker = Worker(sender=lambda data, addr: self.sent.append((data, addr)))
        self.room = Room("r")
        self.events: dict[str, list[RoomEvent]] = {}

    def session(self, identity: str, policy: SessionPolicy | None = None) -> Session:
        events = self.events.setdefault(identity, [])
        session = Session(
            self.worker,
            self.room,
            identity,
            identity.title(),
            policy or SessionPolicy(can_publish=True, can_subscribe=True),
            ADDRESS,
            listener=events.append,
        )
        self.room.join(session)
        return session


@pytest.fixture
def harness() -> Harness:
    return Harness()


def answer_sections(sdp: str) -> dict[str, MediaSection]:
    parsed = parse_sdp(sdp)
    return {m.mid or "": m for m in parsed.media}


def track_of(session: Session, kind: str) -> str:
    return next(p.track_id for p in session.producers.values() if p.kind == kind)


# -- Chromium publisher (balanced bundle policy) -----------------------------------------


def test_chromium_offer_gets_one_transport_per_m_section_and_no_bundle(harness: Harness) -> None:
    alice = harness.session("alice")
    result = alice.negotiate(CHROMIUM, {}, 0.0)
    answer = parse_sdp(result.sdp)
    assert answer.bundle_groups() == []
    ufrags = [answer.media_attr(m, "ice-ufrag") for m in answer.media]
    assert len(set(ufrags)) == 3
    assert set(ufrags) == set(harness.worker.by_ufrag)
    assert len(alice.transports) == 3


def test_chromium_sendonly_sections_are_answered_recvonly(harness: Harness) -> None:
    alice = harness.session("alice")
    sections = answer_sections(alice.negotiate(CHROMIUM, {}, 0.0).sdp)
    assert [sections[mid].direction for mid in ("0", "1")] == ["recvonly", "recvonly"]
    # The recvonly m-section with nothing to subscribe to has nothing to send.
    assert sections["2"].direction == "inactive"
    assert all(s.port == 40000 for s in sections.values())


def test_chromium_answer_picks_opus_and_vp8_with_supported_feedback_only(
    harness: Harness,
) -> None:
    alice = harness.session("alice")
    sections = answer_sections(alice.negotiate(CHROMIUM, {}, 0.0).sdp)
    (opus,) = sections["0"].codecs()
    assert (opus.payload_type, opus.name, opus.clock_rate, opus.channels) == (111, "OPUS", 48000, 2)
    assert opus.rtcp_fbs == []  # transport-cc is not offered back
    (vp8,) = sections["1"].codecs()
    assert (vp8.payload_type, vp8.name) == (96, "VP8")
    assert sorted(vp8.rtcp_fbs) == ["ccm fir", "nack", "nack pli"]
    assert sections["1"].extmaps() == {4: "urn:ietf:params:rtp-hdrext:sdes:mid"}


def test_chromium_answer_carries_ice_lite_passive_rtcp_mux_and_the_sfu_fingerprint(
    harness: Harness,
) -> None:
    alice = harness.session("alice")
    answer = parse_sdp(alice.negotiate(CHROMIUM, {}, 0.0).sdp)
    assert answer.session_attr("ice-lite") == ""
    fingerprint = harness.worker.certificate.fingerprint_sha256
    for section in answer.media:
        assert section.has("rtcp-mux")
        assert section.attr("setup") == "passive"
        assert answer.fingerprints(section) == [("sha-256", fingerprint)]
        assert section.attrs("candidate") == [ADDRESS.candidate()]


def test_chromium_publish_creates_producers_bound_to_the_media_ssrcs(harness: Harness) -> None:
    alice = harness.session("alice")
    result = alice.negotiate(CHROMIUM, {"1": MidIntent(publish="camera")}, 0.0)
    assert sorted(t.kind for t in result.published) == ["audio", "video"]
    assert {t.label for t in result.published} == {"audio", "camera"}
    assert alice.producers["0"].ssrc == 2759478838
    assert alice.producers["1"].ssrc == 1142918911  # not the RTX SSRC 1401017581
    assert alice.transport_of_mid["1"].producers_by_ssrc == {1142918911: alice.producers["1"]}
    assert set(harness.room.producers) == {t.track_id for t in result.published}


def test_renegotiating_the_same_offer_keeps_tracks_and_transports(harness: Harness) -> None:
    alice = harness.session("alice")
    bob = harness.session("bob")
    first = alice.negotiate(CHROMIUM, {}, 0.0)
    ufrags = set(harness.worker.by_ufrag)
    second = alice.negotiate(CHROMIUM, {}, 1.0)
    assert {t.track_id for t in second.published} == {t.track_id for t in first.published}
    assert set(harness.worker.by_ufrag) == ufrags
    assert "o=- " in second.sdp and " 2 IN IP4" in second.sdp.split("\r\n")[1]
    published = [e for e in harness.events["bob"] if isinstance(e, TrackPublished)]
    assert len(published) == 2
    assert bob.consumers == {}


# -- GStreamer webrtcbin (max-bundle, bundle-only) ------------------------------------------


def test_gstreamer_max_bundle_offer_gets_bundle_one_ufrag_and_nonzero_ports(
    harness: Harness,
) -> None:
    whip = harness.session("gst", SessionPolicy(True, False, prefer_bundle=True))
    answer = parse_sdp(whip.negotiate(GSTREAMER, {}, 0.0).sdp)
    assert answer.bundle_groups() == [["audio0", "video1"]]
    assert {answer.media_attr(m, "ice-ufrag") for m in answer.media} == {
        next(iter(harness.worker.by_ufrag))
    }
    assert len(harness.worker.by_ufrag) == 1
    assert [m.port for m in answer.media] == [40000, 40000]
    assert [m.direction for m in answer.media] == ["recvonly", "recvonly"]


def test_gstreamer_bundle_only_is_honoured_even_without_prefer_bundle(harness: Harness) -> None:
    whip = harness.session("gst", SessionPolicy(True, False, prefer_bundle=False))
    answer = parse_sdp(whip.negotiate(GSTREAMER, {}, 0.0).sdp)
    assert answer.bundle_groups() == [["audio0", "video1"]]
    assert all(m.port != 0 for m in answer.media)


def test_gstreamer_tracks_are_demultiplexed_by_announced_ssrc(harness: Harness) -> None:
    whip = harness.session("gst", SessionPolicy(True, False, prefer_bundle=True))
    result = whip.negotiate(GSTREAMER, {}, 0.0)
    assert sorted(t.kind for t in result.published) == ["audio", "video"]
    (transport,) = whip.transports.values()
    assert set(transport.producers_by_ssrc) == {3410394127, 1864523971}
    assert transport.mid_extension_id == 0  # no a=extmap in the offer
    sections = answer_sections(result.sdp)
    assert [(c.payload_type, c.name) for c in sections["audio0"].codecs()] == [(96, "OPUS")]
    assert [(c.payload_type, c.name) for c in sections["video1"].codecs()] == [(97, "VP8")]


def test_bundle_only_offer_in_a_room_without_bundle_is_forbidden(harness: Harness) -> None:
    whip = harness.session("gst", SessionPolicy(True, False, allow_bundle=False))
    with pytest.raises(MediaError) as raised:
        whip.negotiate(GSTREAMER, {}, 0.0)
    assert raised.value.code == "forbidden"


def test_plain_bundle_offer_in_a_room_without_bundle_gets_separate_transports(
    harness: Harness,
) -> None:
    alice = harness.session(
        "alice", SessionPolicy(True, True, allow_bundle=False, prefer_bundle=True)
    )
    answer = parse_sdp(alice.negotiate(CHROMIUM, {}, 0.0).sdp)
    assert answer.bundle_groups() == []
    assert len(harness.worker.by_ufrag) == 3


def test_chromium_offer_with_prefer_bundle_shares_one_transport(harness: Harness) -> None:
    alice = harness.session("alice", SessionPolicy(True, True, prefer_bundle=True))
    answer = parse_sdp(alice.negotiate(CHROMIUM, {}, 0.0).sdp)
    assert answer.bundle_groups() == [["0", "1", "2"]]
    assert len(harness.worker.by_ufrag) == 1


DATA_SECTION = (
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:VCbB\r\na=ice-pwd:zhKDTRMzn00cWE+q0Kq8hfQI\r\n"
    "a=fingerprint:sha-256 "
    + ":".join(["AB"] * 32)
    + "\r\na=setup:actpass\r\na=mid:3\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
)


def test_data_channel_section_is_rejected_where_data_channels_are_off(harness: Harness) -> None:
    alice = harness.session("alice")  # WHIP/WHEP sessions: no data channels
    result = alice.negotiate(CHROMIUM + DATA_SECTION, {}, 0.0)
    section = answer_sections(result.sdp)["3"]
    assert section.port == 0
    assert section.formats == ["webrtc-datachannel"]
    assert [code for code, _ in result.warnings] == ["unsupported"]
    assert len(alice.transports) == 3
    assert alice.data is None


def test_data_channels_get_an_sctp_answer_on_a_transport_of_their_own(harness: Harness) -> None:
    policy = SessionPolicy(can_publish=True, can_subscribe=True, data_channels=True)
    alice = harness.session("alice", policy)
    result = alice.negotiate(CHROMIUM + DATA_SECTION, {}, 0.0)
    assert result.warnings == []
    assert "m=application 9 UDP/DTLS/SCTP webrtc-datachannel" not in result.sdp
    lines = result.sdp.split("\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("m=application"))
    assert lines[start].endswith(" UDP/DTLS/SCTP webrtc-datachannel")
    assert "a=sctp-port:5000" in lines[start:] and "a=setup:passive" in lines[start:]
    assert any(line.startswith("a=max-message-size:") for line in lines[start:])
    assert not any(line.startswith("a=rtcp-mux") for line in lines[start:])
    assert len(alice.transports) == 4  # audio, video, screen, data: never shared
    assert alice.data is not None and alice.transport_of_mid["3"] is alice.data.transport
    assert alice.data.association.peer_max_message_size == 262144
    # Renegotiation keeps the same association.
    endpoint = alice.data
    alice.negotiate(CHROMIUM + DATA_SECTION, {}, 1.0)
    assert alice.data is endpoint and len(alice.transports) == 4
    # Stopping the section (port 0) closes its transport and the association.
    stopped = DATA_SECTION.replace("m=application 9 ", "m=application 0 ")
    alice.negotiate(CHROMIUM + stopped, {}, 2.0)
    assert endpoint.closed and len(alice.transports) == 3


def test_a_second_data_section_is_refused(harness: Harness) -> None:
    policy = SessionPolicy(can_publish=True, can_subscribe=True, data_channels=True)
    alice = harness.session("alice", policy)
    second = DATA_SECTION.replace("a=mid:3", "a=mid:4")
    result = alice.negotiate(CHROMIUM + DATA_SECTION + second, {}, 0.0)
    assert answer_sections(result.sdp)["4"].port == 0
    assert [code for code, _ in result.warnings] == ["unsupported"]


# -- policy -----------------------------------------------------------------------------


def test_viewer_publishing_gets_forbidden_warnings_and_inactive_sections(harness: Harness) -> None:
    viewer = harness.session("viewer", SessionPolicy(can_publish=False, can_subscribe=True))
    result = viewer.negotiate(CHROMIUM, {}, 0.0)
    codes = [(code, message.split(":")[0]) for code, message in result.warnings]
    assert ("forbidden", "mid 0") in codes and ("forbidden", "mid 1") in codes
    sections = answer_sections(result.sdp)
    assert sections["0"].direction == "inactive"
    assert sections["1"].direction == "inactive"
    assert result.published == []
    assert harness.room.producers == {}


def test_publisher_without_subscribe_right_gets_forbidden_for_recvonly(harness: Harness) -> None:
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    whip = harness.session("whip", SessionPolicy(can_publish=True, can_subscribe=False))
    result = whip.negotiate(CHROMIUM, {"2": MidIntent(subscribe=track_of(alice, "video"))}, 0.0)
    assert ("forbidden", "mid 2: this token may not subscribe") in result.warnings
    assert answer_sections(result.sdp)["2"].direction == "inactive"


def test_refused_mids_are_answered_inactive_with_the_reason_and_end_what_they_carried(
    harness: Harness,
) -> None:
    alice = harness.session("alice")
    first = alice.negotiate(CHROMIUM, {}, 0.0)
    assert {t.kind for t in first.published} == {"audio", "video"}
    video_mid = next(mid for mid, p in alice.producers.items() if p.kind == "video")
    reason = f"mid {video_mid}: publishing video needs grant publish:video"
    result = alice.negotiate(CHROMIUM, {}, 1.0, refused={video_mid: reason})
    assert ("forbidden", reason) in result.warnings
    sections = answer_sections(result.sdp)
    assert sections[video_mid].direction == "inactive"
    assert [t.kind for t in result.published] == ["audio"]  # the refused track is gone
    assert {p.kind for p in harness.room.producers.values()} == {"audio"}


# -- subscribing -----------------------------------------------------------------------


def test_subscriber_gets_sendonly_with_ssrc_and_its_own_vp8_payload_type(
    harness: Harness,
) -> None:
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    bob = harness.session("bob")
    video = track_of(alice, "video")
    result = bob.negotiate(AIORTC_RECVONLY, {"1": MidIntent(subscribe=video)}, 1.0)
    section = answer_sections(result.sdp)["1"]
    assert section.direction == "sendonly"
    consumer = bob.consumers["1"]
    assert section.ssrcs() == [consumer.ssrc]
    assert [(c.payload_type, c.name) for c in section.codecs()] == [(97, "VP8")]
    assert section.codecs()[0].rtcp_fbs == ["nack", "nack pli"]
    assert consumer.source is alice.producers["1"]
    assert section.attr("msid") == f"{alice.session_id} {consumer.consumer_id}"
    assert result.warnings == []


def test_subscribing_to_an_unknown_track_warns_unknown_track(harness: Harness) -> None:
    bob = harness.session("bob")
    result = bob.negotiate(AIORTC_RECVONLY, {"1": MidIntent(subscribe="no-such-track")}, 0.0)
    assert [code for code, _ in result.warnings] == ["unknown_track"]
    section = answer_sections(result.sdp)["1"]
    assert section.direction == "inactive"
    assert section.ssrcs() == []
    assert bob.consumers == {}


def test_subscribing_an_audio_section_to_a_video_track_warns_unknown_track(
    harness: Harness,
) -> None:
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    bob = harness.session("bob")
    result = bob.negotiate(
        AIORTC_RECVONLY, {"0": MidIntent(subscribe=track_of(alice, "video"))}, 0.0
    )
    assert [code for code, _ in result.warnings] == ["unknown_track"]


# -- refused offers -------------------------------------------------------------------


def test_offer_with_setup_passive_is_bad_sdp(harness: Harness) -> None:
    alice = harness.session("alice")
    with pytest.raises(MediaError) as raised:
        alice.negotiate(CHROMIUM.replace("a=setup:actpass", "a=setup:passive"), {}, 0.0)
    assert raised.value.code == "bad_sdp"


def test_offer_without_ice_ufrag_is_bad_sdp(harness: Harness) -> None:
    alice = harness.session("alice")
    offer = "".join(
        line for line in CHROMIUM.splitlines(keepends=True) if not line.startswith("a=ice-ufrag")
    )
    with pytest.raises(MediaError) as raised:
        alice.negotiate(offer, {}, 0.0)
    assert raised.value.code == "bad_sdp"


def test_offer_without_fingerprint_is_bad_sdp(harness: Harness) -> None:
    alice = harness.session("alice")
    offer = "".join(
        line for line in AIORTC.splitlines(keepends=True) if not line.startswith("a=fingerprint")
    )
    with pytest.raises(MediaError) as raised:
        alice.negotiate(offer, {}, 0.0)
    assert raised.value.code == "bad_sdp"


@pytest.mark.parametrize("text", ["", "hello", "v=0\r\ns=-\r\n", "v=0\r\nm=audio 9\r\n"])
def test_unparseable_or_empty_offer_is_bad_sdp(harness: Harness, text: str) -> None:
    alice = harness.session("alice")
    with pytest.raises(MediaError) as raised:
        alice.negotiate(text, {}, 0.0)
    assert raised.value.code == "bad_sdp"


@pytest.mark.parametrize(
    ("original", "malformed"),
    [
        ("a=rtpmap:97 VP8/90000", "a=rtpmap:97 VP8/ninety"),
        ("a=ssrc-group:FID 4166093307 2015759221", "a=ssrc-group:"),
    ],
)
def test_offer_with_a_malformed_media_attribute_is_refused_with_media_error_bad_sdp(
    harness: Harness, original: str, malformed: str
) -> None:
    # signaling/whip.py and ws.py only catch MediaError: anything else becomes a 500.
    alice = harness.session("alice")
    assert original in AIORTC
    with pytest.raises(MediaError) as raised:
        alice.negotiate(AIORTC.replace(original, malformed), {}, 0.0)
    assert raised.value.code == "bad_sdp"


def test_closed_session_refuses_to_negotiate(harness: Harness) -> None:
    alice = harness.session("alice")
    alice.close("bye", 0.0)
    with pytest.raises(MediaError) as raised:
        alice.negotiate(CHROMIUM, {}, 1.0)
    assert raised.value.code == "closed"


def test_duplicate_mid_leaves_no_track_behind_after_close(harness: Harness) -> None:
    # Two m-sections claiming a=mid:0; whether refused or not, closing the session must
    # take every track it announced out of the room.
    alice = harness.session("alice")
    harness.session("bob")
    try:
        alice.negotiate(CHROMIUM.replace("a=mid:1", "a=mid:0"), {}, 0.0)
    except MediaError as exc:
        assert exc.code == "bad_sdp"
    alice.close("bye", 1.0)
    assert harness.room.producers == {}
    bob_events = harness.events["bob"]
    published = {e.track.track_id for e in bob_events if isinstance(e, TrackPublished)}
    unpublished = {e.track_id for e in bob_events if isinstance(e, TrackUnpublished)}
    assert published == unpublished


# -- room events -----------------------------------------------------------------------


def test_track_published_reaches_the_other_session_only(harness: Harness) -> None:
    bob = harness.session("bob")
    alice = harness.session("alice")
    assert [type(e) for e in harness.events["bob"]] == [ParticipantJoined]
    result = alice.negotiate(CHROMIUM, {}, 0.0)
    published = [e for e in harness.events["bob"] if isinstance(e, TrackPublished)]
    assert sorted(e.track.track_id for e in published) == sorted(
        t.track_id for t in result.published
    )
    assert all(e.track.identity == "alice" for e in published)
    assert not any(isinstance(e, TrackPublished) for e in harness.events["alice"])
    assert bob.room is alice.room


def test_section_going_to_port_zero_unpublishes_its_track(harness: Harness) -> None:
    harness.session("bob")
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    video = track_of(alice, "video")
    transports_before = len(harness.worker.by_ufrag)
    reoffer = CHROMIUM.replace("m=video 9 ", "m=video 0 ", 1)
    result = alice.negotiate(reoffer, {}, 1.0)
    assert TrackUnpublished(video, "alice") in harness.events["bob"]
    assert video not in harness.room.producers
    assert [t.kind for t in result.published] == ["audio"]
    assert answer_sections(result.sdp)["1"].port == 0
    assert len(harness.worker.by_ufrag) == transports_before - 1


def test_unpublishing_a_track_detaches_its_subscribers(harness: Harness) -> None:
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    bob = harness.session("bob")
    bob.negotiate(AIORTC_RECVONLY, {"1": MidIntent(subscribe=track_of(alice, "video"))}, 0.0)
    alice.negotiate(CHROMIUM.replace("m=video 9 ", "m=video 0 ", 1), {}, 1.0)
    assert bob.consumers["1"].source is None


def test_close_emits_participant_left_and_closes_every_transport(harness: Harness) -> None:
    harness.session("bob")
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    tracks = {p.track_id for p in alice.producers.values()}
    transports = list(alice.transports.values())
    alice.close("left", 2.0)
    bob_events = harness.events["bob"]
    assert ParticipantLeft("alice", "left") in bob_events
    assert {e.track_id for e in bob_events if isinstance(e, TrackUnpublished)} == tracks
    assert harness.worker.by_ufrag == {}
    assert all(t.closed and t.srtp is None for t in transports)
    assert alice.session_id not in harness.room.sessions
    assert harness.room.producers == {}
    assert not any(isinstance(e, ParticipantLeft) for e in harness.events["alice"])


def test_closing_twice_emits_participant_left_once(harness: Harness) -> None:
    harness.session("bob")
    alice = harness.session("alice")
    alice.close("left", 0.0)
    alice.close("left", 1.0)
    assert [e for e in harness.events["bob"] if isinstance(e, ParticipantLeft)] == [
        ParticipantLeft("alice", "left")
    ]


def test_a_listener_that_raises_does_not_stop_the_broadcast(harness: Harness) -> None:
    def broken(_event: RoomEvent) -> None:
        raise RuntimeError("listener bug")

    harness.session("carol").listener = broken
    harness.session("bob")
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    assert sum(isinstance(e, TrackPublished) for e in harness.events["bob"]) == 2


# -- codec choice ---------------------------------------------------------------------


def _section(offer: str, index: int) -> MediaSection:
    parsed: SessionDescription = parse_sdp(offer)
    return parsed.media[index]


def test_choose_publish_codec_prefers_vp8_then_h264_mode_1() -> None:
    codec = choose_publish_codec(_section(CHROMIUM, 1))
    assert codec is not None and (codec.payload_type, codec.name) == (96, "VP8")
    no_vp8 = parse_sdp(
        "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 104 102\na=rtpmap:104 H264/90000\n"
        "a=fmtp:104 packetization-mode=0\na=rtpmap:102 H264/90000\n"
        "a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\n"
    ).media[0]
    chosen = choose_publish_codec(no_vp8)
    assert chosen is not None and chosen.payload_type == 102


def test_choose_publish_codec_returns_none_without_a_supported_codec() -> None:
    section = parse_sdp("v=0\nm=audio 9 UDP/TLS/RTP/SAVPF 0\na=rtpmap:0 PCMU/8000\n").media[0]
    assert choose_publish_codec(section) is None
    av1 = parse_sdp("v=0\nm=video 9 UDP/TLS/RTP/SAVPF 45\na=rtpmap:45 AV1/90000\n").media[0]
    assert choose_publish_codec(av1) is None


def test_match_codec_finds_the_subscribers_payload_type() -> None:
    source = Codec(96, "VP8", 90000)
    offered = _section(AIORTC, 1).codecs()
    matched = match_codec(source, offered)
    assert matched is not None and matched.payload_type == 97


def test_match_codec_h264_requires_same_packetization_mode_and_profile() -> None:
    source = Codec(102, "H264", 90000, fmtp="packetization-mode=1;profile-level-id=42001f")
    offered = [
        Codec(104, "H264", 90000, fmtp="packetization-mode=0;profile-level-id=42001f"),
        Codec(116, "H264", 90000, fmtp="packetization-mode=1;profile-level-id=4d001f"),
        Codec(108, "H264", 90000, fmtp="packetization-mode=1;profile-level-id=42e01f"),
    ]
    matched = match_codec(source, offered)
    assert matched is not None and matched.payload_type == 108
    assert match_codec(source, offered[:2]) is None


# -- a real peer accepts the answers -----------------------------------------------------


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    yield


async def test_aiortc_publisher_accepts_the_answer(harness: Harness, loopback_only: None) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        alice = harness.session("alice")
        result = alice.negotiate(pc.localDescription.sdp, {}, 0.0)
        await pc.setRemoteDescription(RTCSessionDescription(result.sdp, "answer"))
        assert pc.signalingState == "stable"
        assert [t.currentDirection for t in pc.getTransceivers()] == ["sendonly", "sendonly"]
        assert len(result.published) == 2
    finally:
        await pc.close()


async def test_aiortc_subscriber_accepts_the_answer_with_sendonly_sections(
    harness: Harness, loopback_only: None
) -> None:
    alice = harness.session("alice")
    alice.negotiate(CHROMIUM, {}, 0.0)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        bob = harness.session("bob")
        intents = {
            "0": MidIntent(subscribe=track_of(alice, "audio")),
            "1": MidIntent(subscribe=track_of(alice, "video")),
        }
        result = bob.negotiate(pc.localDescription.sdp, intents, 1.0)
        await pc.setRemoteDescription(RTCSessionDescription(result.sdp, "answer"))
        assert [t.currentDirection for t in pc.getTransceivers()] == ["recvonly", "recvonly"]
        assert result.warnings == []
    finally:
        await pc.close()
