"""Tests for sfu.wire.sdp: real offers (Chromium, aiortc), a GStreamer-style WHIP offer,
malformed input, and answers that a real peer (aiortc) accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire.sdp import (
    MAX_MEDIA_SECTIONS,
    MAX_SDP_BYTES,
    AnswerMedia,
    Codec,
    SdpError,
    SessionDescription,
    build_answer,
    parse_sdp,
)
from tests.fuzzing import examples

DATA = Path(__file__).resolve().parent.parent / "data"
CHROMIUM_FINGERPRINT = (
    "1D:49:85:DE:73:C1:6C:5A:94:6D:CD:0F:D2:89:EC:CD:"
    "47:15:0A:9D:88:E7:D1:B2:13:33:1D:C8:AB:2E:93:B6"
)
GSTREAMER_FINGERPRINT = (
    "A3:AD:49:15:64:F7:45:31:DF:52:43:B9:AA:FB:A2:5F:"
    "91:E6:25:2B:FF:CB:89:7C:41:60:83:AE:FB:49:85:DE"
)
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


def load(name: str) -> str:
    return (DATA / f"sdp_{name}_offer.sdp").read_text()


@pytest.fixture(scope="module")
def chromium() -> SessionDescription:
    return parse_sdp(load("chromium"))


@pytest.fixture(scope="module")
def aiortc_offer() -> SessionDescription:
    return parse_sdp(load("aiortc"))


@pytest.fixture(scope="module")
def gstreamer() -> SessionDescription:
    return parse_sdp(load("gstreamer"))


# -- Chromium (bundlePolicy "balanced", 2 sendonly + 1 recvonly) ---------------------


def test_fixture_offers_use_crlf_line_endings() -> None:
    for name in ("chromium", "aiortc", "gstreamer"):
        raw = (DATA / f"sdp_{name}_offer.sdp").read_bytes()
        assert raw.startswith(b"v=0\r\n")
        assert raw.count(b"\n") == raw.count(b"\r\n")


def test_chromium_offer_kinds_mids_and_directions(chromium: SessionDescription) -> None:
    assert [m.kind for m in chromium.media] == ["audio", "video", "video"]
    assert [m.mid for m in chromium.media] == ["0", "1", "2"]
    assert [m.direction for m in chromium.media] == ["sendonly", "sendonly", "recvonly"]
    assert [m.port for m in chromium.media] == [9, 9, 9]
    assert all(m.proto == "UDP/TLS/RTP/SAVPF" for m in chromium.media)
    assert not any(m.bundle_only for m in chromium.media)
    assert chromium.media[0].connection == "IN IP4 0.0.0.0"


def test_chromium_audio_codecs_keep_offer_order_with_opus_first(
    chromium: SessionDescription,
) -> None:
    codecs = chromium.media[0].codecs()
    assert [c.payload_type for c in codecs] == [111, 63, 9, 0, 8, 13, 110, 126]
    opus = codecs[0]
    assert (opus.name, opus.clock_rate, opus.channels) == ("OPUS", 48000, 2)
    assert opus.fmtp_params() == {"minptime": "10", "useinbandfec": "1"}
    assert opus.rtcp_fbs == ["transport-cc"]
    assert codecs[2] == Codec(9, "G722", 8000)


def test_chromium_video_codecs_carry_fmtp_and_feedback(chromium: SessionDescription) -> None:
    codecs = {c.payload_type: c for c in chromium.media[1].codecs()}
    vp8 = codecs[96]
    assert (vp8.name, vp8.clock_rate, vp8.channels) == ("VP8", 90000, 1)
    assert vp8.rtcp_fbs == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    assert codecs[97].name == "RTX" and codecs[97].fmtp_params() == {"apt": "96"}
    h264 = codecs[102].fmtp_params()
    assert codecs[102].name == "H264"
    assert h264["packetization-mode"] == "1" and h264["profile-level-id"] == "42001f"
    assert codecs[45].name == "AV1"
    assert [c.payload_type for c in chromium.media[1].codecs()][:3] == [96, 97, 102]


def test_chromium_ssrcs_exclude_the_fid_repair_ssrc(chromium: SessionDescription) -> None:
    assert chromium.media[0].ssrcs() == [2759478838]
    assert chromium.media[1].ssrcs() == [1142918911]
    assert 1401017581 not in chromium.media[1].ssrcs()
    assert chromium.media[2].ssrcs() == []


def test_chromium_extmaps_map_ids_to_uris(chromium: SessionDescription) -> None:
    audio = chromium.media[0].extmaps()
    assert audio[1] == "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    assert audio[4] == MID_URI
    video = chromium.media[1].extmaps()
    assert video[4] == MID_URI
    assert video[14] == "urn:ietf:params:rtp-hdrext:toffset"
    assert len(video) == 11


def test_chromium_bundle_group_fingerprint_and_ice(chromium: SessionDescription) -> None:
    assert chromium.bundle_groups() == [["0", "1", "2"]]
    for section in chromium.media:
        assert chromium.fingerprints(section) == [("sha-256", CHROMIUM_FINGERPRINT)]
        assert chromium.media_attr(section, "ice-ufrag") == "VCbB"
        assert chromium.media_attr(section, "ice-pwd") == "zhKDTRMzn00cWE+q0Kq8hfQI"
        assert chromium.media_attr(section, "setup") == "actpass"
    assert chromium.session_attr("extmap-allow-mixed") == ""


# -- aiortc (sendonly audio + video) ----------------------------------------------


def test_aiortc_offer_kinds_mids_directions_and_ports(aiortc_offer: SessionDescription) -> None:
    assert [m.kind for m in aiortc_offer.media] == ["audio", "video"]
    assert [m.mid for m in aiortc_offer.media] == ["0", "1"]
    assert [m.direction for m in aiortc_offer.media] == ["sendonly", "sendonly"]
    assert all(m.port > 0 for m in aiortc_offer.media)
    assert aiortc_offer.bundle_groups() == [["0", "1"]]


def test_aiortc_offer_codecs(aiortc_offer: SessionDescription) -> None:
    audio = aiortc_offer.media[0].codecs()
    assert [(c.payload_type, c.name, c.clock_rate, c.channels) for c in audio] == [
        (96, "OPUS", 48000, 2),
        (9, "G722", 8000, 1),
        (0, "PCMU", 8000, 1),
        (8, "PCMA", 8000, 1),
    ]
    video = aiortc_offer.media[1].codecs()
    assert [(c.payload_type, c.name) for c in video] == [
        (97, "VP8"),
        (98, "RTX"),
        (99, "H264"),
        (100, "RTX"),
        (101, "H264"),
        (102, "RTX"),
    ]
    assert video[0].rtcp_fbs == ["nack", "nack pli", "goog-remb"]


def test_aiortc_offer_ssrcs_exclude_rtx(aiortc_offer: SessionDescription) -> None:
    assert aiortc_offer.media[0].ssrcs() == [2339190755]
    assert aiortc_offer.media[1].ssrcs() == [4166093307]


def test_aiortc_offer_lists_three_fingerprints_lower_case_algorithms(
    aiortc_offer: SessionDescription,
) -> None:
    fingerprints = aiortc_offer.fingerprints(aiortc_offer.media[0])
    assert [algo for algo, _ in fingerprints] == ["sha-256", "sha-384", "sha-512"]
    assert all(re.fullmatch(r"([0-9A-F]{2}:)+[0-9A-F]{2}", d) for _, d in fingerprints)
    assert aiortc_offer.media[0].extmaps() == {
        1: MID_URI,
        2: "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    }


# -- GStreamer webrtcbin style WHIP offer (max-bundle) ------------------------------


def test_gstreamer_offer_second_section_is_bundle_only_with_port_zero(
    gstreamer: SessionDescription,
) -> None:
    assert [m.kind for m in gstreamer.media] == ["audio", "video"]
    assert [m.mid for m in gstreamer.media] == ["audio0", "video1"]
    assert [m.port for m in gstreamer.media] == [9, 0]
    assert [m.bundle_only for m in gstreamer.media] == [False, True]
    assert [m.direction for m in gstreamer.media] == ["sendonly", "sendonly"]
    assert gstreamer.bundle_groups() == [["audio0", "video1"]]
    assert all(m.has("rtcp-mux-only") for m in gstreamer.media)


def test_gstreamer_offer_upper_case_opus_and_no_extmaps(gstreamer: SessionDescription) -> None:
    audio, video = gstreamer.media
    assert [(c.payload_type, c.name, c.clock_rate, c.channels) for c in audio.codecs()] == [
        (96, "OPUS", 48000, 2)
    ]
    assert [(c.payload_type, c.name) for c in video.codecs()] == [(97, "VP8")]
    assert video.codecs()[0].rtcp_fbs == ["nack", "nack pli", "ccm fir"]
    assert audio.extmaps() == {} and video.extmaps() == {}


def test_gstreamer_offer_ssrcs_and_rsa_fingerprint(gstreamer: SessionDescription) -> None:
    assert gstreamer.media[0].ssrcs() == [3410394127]
    assert gstreamer.media[1].ssrcs() == [1864523971]
    for section in gstreamer.media:
        assert gstreamer.fingerprints(section) == [("sha-256", GSTREAMER_FINGERPRINT)]
        assert gstreamer.media_attr(section, "setup") == "actpass"


# -- typed views on hand-made input ---------------------------------------------


def test_session_level_fingerprint_and_ice_apply_to_sections_without_their_own() -> None:
    offer = parse_sdp(
        "v=0\na=fingerprint:SHA-256 ab:cd\na=ice-ufrag:sess\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\na=ice-ufrag:media\n"
    )
    section = offer.media[0]
    assert offer.fingerprints(section) == [("sha-256", "AB:CD")]
    assert offer.media_attr(section, "ice-ufrag") == "media"
    assert offer.media_attr(section, "ice-pwd") is None


def test_direction_defaults_to_sendrecv() -> None:
    offer = parse_sdp("v=0\nm=audio 9 RTP/AVP 0\n")
    assert offer.media[0].direction == "sendrecv"


def test_codecs_skip_formats_without_rtpmap_and_apply_wildcard_feedback() -> None:
    offer = parse_sdp(
        "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96 34 98\n"
        "a=rtpmap:96 vp8/90000\na=rtpmap:98 VP9/90000\na=rtcp-fb:* nack\n"
        "a=rtcp-fb:98 nack pli\n"
    )
    codecs = offer.media[0].codecs()
    assert [c.payload_type for c in codecs] == [96, 98]
    assert codecs[0].name == "VP8"
    assert codecs[1].rtcp_fbs == ["nack", "nack pli"]


def test_fec_fr_repair_ssrc_is_excluded() -> None:
    offer = parse_sdp(
        "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=ssrc-group:FEC-FR 11 22\n"
        "a=ssrc:11 cname:x\na=ssrc:22 cname:x\na=ssrc:33 cname:x\n"
    )
    assert offer.media[0].ssrcs() == [11, 33]


def test_extmap_with_direction_suffix_and_out_of_range_ids() -> None:
    offer = parse_sdp(
        "v=0\nm=audio 9 RTP/AVP 0\na=extmap:3/sendonly urn:a\na=extmap:0 urn:b\n"
        "a=extmap:256 urn:c\na=extmap:x urn:d\n"
    )
    assert offer.media[0].extmaps() == {3: "urn:a"}


# -- malformed SDP ---------------------------------------------------------------


def test_missing_v_line_raises_naming_v0() -> None:
    with pytest.raises(SdpError, match="v=0"):
        parse_sdp("o=- 1 1 IN IP4 0.0.0.0\ns=-\n")


def test_empty_text_raises_sdp_error() -> None:
    with pytest.raises(SdpError, match="v=0"):
        parse_sdp("")


@pytest.mark.parametrize(
    "m_line",
    ["m=audio 9 RTP/AVP", "m=text 9 RTP/AVP 0", "m=audio", "m=video x RTP/AVP 96"],
)
def test_bad_m_line_raises_naming_the_line_number(m_line: str) -> None:
    with pytest.raises(SdpError, match=r"line 3\b"):
        parse_sdp(f"v=0\ns=-\n{m_line}\n")


def test_port_out_of_range_raises_naming_the_line() -> None:
    with pytest.raises(SdpError, match=r"line 2: bad port"):
        parse_sdp("v=0\nm=audio 70000 RTP/AVP 0\n")


def test_line_not_of_the_form_x_equals_value_raises_naming_the_line() -> None:
    with pytest.raises(SdpError, match=r"line 3: not of the form"):
        parse_sdp("v=0\ns=-\nthis is no sdp\n")


@pytest.mark.parametrize(
    "rtpmap",
    ["a=rtpmap:abc VP8/90000", "a=rtpmap:96 VP8/fast", "a=rtpmap:200 VP8/90000", "a=rtpmap:96"],
)
def test_bad_rtpmap_raises_sdp_error_naming_the_rtpmap_line(rtpmap: str) -> None:
    offer = parse_sdp(f"v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\n{rtpmap}\n")
    with pytest.raises(SdpError, match="a=rtpmap line"):
        offer.media[0].codecs()


def test_more_media_sections_than_the_limit_raise() -> None:
    text = "v=0\n" + "m=audio 9 RTP/AVP 0\n" * (MAX_MEDIA_SECTIONS + 1)
    with pytest.raises(SdpError, match=r"m= sections"):
        parse_sdp(text)


def test_exactly_the_limit_of_media_sections_parses() -> None:
    text = "v=0\n" + "m=audio 9 RTP/AVP 0\n" * MAX_MEDIA_SECTIONS
    assert len(parse_sdp(text).media) == MAX_MEDIA_SECTIONS


def test_sdp_larger_than_the_size_limit_raises() -> None:
    text = "v=0\n" + "a=x:" + "y" * MAX_SDP_BYTES + "\n"
    with pytest.raises(SdpError, match="larger than"):
        parse_sdp(text)


def test_sdp_exactly_at_the_size_limit_parses() -> None:
    head = "v=0\na=x:"
    text = head + "y" * (MAX_SDP_BYTES - len(head))
    assert len(text.encode()) == MAX_SDP_BYTES
    assert parse_sdp(text).session_attr("x") is not None


def test_empty_ssrc_group_line_raises_nothing_but_sdp_error() -> None:
    # An accessor on untrusted input may refuse it with SdpError or skip the bad line,
    # but must not leak a bare ValueError that callers do not expect.
    offer = parse_sdp("v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=ssrc-group:\na=ssrc:5 cname:x\n")
    try:
        ssrcs = offer.media[0].ssrcs()
    except SdpError:
        return
    assert ssrcs == [5]


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=400))
def test_random_text_gives_sdp_error_or_a_result(text: str) -> None:
    try:
        result = parse_sdp(text)
    except SdpError:
        return
    assert isinstance(result, SessionDescription)


_PREFIXES = [
    "v=0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 96 ",
    "m=video 9 UDP/TLS/RTP/SAVPF 97",
    "a=rtpmap:",
    "a=fmtp:",
    "a=rtcp-fb:",
    "a=extmap:",
    "a=ssrc:",
    "a=ssrc-group:",
    "a=group:",
    "a=fingerprint:",
    "a=mid:",
    "a=sendonly",
    "c=",
]


@settings(max_examples=examples(500), deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_PREFIXES),
            st.text(alphabet=" :/;=*0123456789abcFIDxyz", max_size=20),
        ),
        max_size=12,
    )
)
def test_sdp_shaped_random_lines_give_only_sdp_error_from_parser_and_accessors(
    lines: list[tuple[str, str]],
) -> None:
    text = "v=0\n" + "\n".join(prefix + rest for prefix, rest in lines)
    try:
        offer = parse_sdp(text)
        offer.bundle_groups()
        for section in offer.media:
            section.codecs()
            section.extmaps()
            section.ssrcs()
            offer.fingerprints(section)
            assert section.direction in ("sendrecv", "sendonly", "recvonly", "inactive")
    except SdpError:
        pass


# -- build_answer ------------------------------------------------------------------


def _answer_media(**overrides: object) -> AnswerMedia:
    media = AnswerMedia(
        kind="video",
        mid="1",
        proto="UDP/TLS/RTP/SAVPF",
        port=40000,
        direction="recvonly",
        codecs=[Codec(96, "VP8", 90000, rtcp_fbs=["nack", "nack pli"])],
        extmaps={4: MID_URI},
        ice_ufrag="ufragXYZ",
        ice_pwd="p" * 24,
        fingerprint="sha-256 " + CHROMIUM_FINGERPRINT,
        address="127.0.0.1",
        candidates=["1 1 udp 2130706431 127.0.0.1 40000 typ host"],
    )
    for key, value in overrides.items():
        setattr(media, key, value)
    return media


def test_answer_uses_crlf_everywhere_and_starts_with_v0() -> None:
    text = build_answer(1, 1, [_answer_media()], None)
    assert text.startswith("v=0\r\n")
    assert text.endswith("\r\n")
    assert text.count("\n") == text.count("\r\n")


def test_answer_is_ice_lite_passive_with_rtcp_mux() -> None:
    text = build_answer(1, 1, [_answer_media()], None)
    lines = text.split("\r\n")
    assert "a=ice-lite" in lines
    assert "a=setup:passive" in lines
    assert "a=rtcp-mux" in lines
    assert "a=ice-ufrag:ufragXYZ" in lines
    assert "a=recvonly" in lines
    assert "m=video 40000 UDP/TLS/RTP/SAVPF 96" in lines
    assert "a=rtpmap:96 VP8/90000" in lines
    assert "a=rtcp-fb:96 nack pli" in lines
    assert f"a=extmap:4 {MID_URI}" in lines
    assert "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host" in lines


def test_answer_round_trips_through_our_parser() -> None:
    text = build_answer(7, 3, [_answer_media(ssrc=1234, cname="cn", msid=("s", "t"))], ["1"])
    parsed = parse_sdp(text)
    section = parsed.media[0]
    assert parsed.bundle_groups() == [["1"]]
    assert section.codecs()[0].rtcp_fbs == ["nack", "nack pli"]
    assert section.ssrcs() == [1234]
    assert section.attr("msid") == "s t"
    assert parsed.fingerprints(section) == [("sha-256", CHROMIUM_FINGERPRINT)]


def test_rejected_section_has_port_zero_and_keeps_offered_formats() -> None:
    rejected = AnswerMedia("audio", "0", "UDP/TLS/RTP/SAVPF", 0, rejected_formats=["111", "0"])
    text = build_answer(1, 1, [rejected, _answer_media()], None)
    lines = text.split("\r\n")
    assert "m=audio 0 UDP/TLS/RTP/SAVPF 111 0" in lines
    section = parse_sdp(text).media[0]
    assert section.port == 0
    assert section.direction == "inactive"
    assert section.mid == "0"
    assert section.attr("ice-ufrag") is None


def test_bundle_group_written_only_when_given() -> None:
    assert "a=group:BUNDLE 0 1\r\n" in build_answer(1, 1, [_answer_media()], ["0", "1"])
    assert "a=group:" not in build_answer(1, 1, [_answer_media()], None)
    assert "a=group:" not in build_answer(1, 1, [_answer_media()], [])


def test_ipv6_address_gives_ip6_connection_line() -> None:
    text = build_answer(1, 1, [_answer_media(address="::1")], None)
    assert "c=IN IP6 ::1\r\n" in text


def test_multichannel_codec_keeps_channel_count_and_fmtp() -> None:
    opus = Codec(111, "OPUS", 48000, 2, fmtp="minptime=10;useinbandfec=1")
    text = build_answer(1, 1, [_answer_media(kind="audio", codecs=[opus])], None)
    assert "a=rtpmap:111 OPUS/48000/2\r\n" in text
    assert "a=fmtp:111 minptime=10;useinbandfec=1\r\n" in text
