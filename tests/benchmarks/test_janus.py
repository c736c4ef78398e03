"""Janus as a load target: the SDP answer, the Janus API parsing, ICE as a full agent's
peer, the generated config, and one short real session when Janus is installed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.janus.api import JanusError, plugin_event, reply_data, trickle_body
from benchmarks.janus.clients import create_room_request, host_candidate, numeric_id
from benchmarks.janus.netns import netns_missing_reason
from benchmarks.janus.server import JANUS_BINARY, JanusConfig, render_jcfg, write_config
from benchmarks.loadgen.dtls_client import ClientCertificate
from benchmarks.loadgen.offer import AnswerSection, build_answer_to_offer, parse_offer
from benchmarks.loadgen.transport import MediaTransport
from sfu.wire import stun
from sfu.wire.sdp import parse_sdp

FINGERPRINT = ":".join(["CD"] * 32)
REPO_ROOT = Path(__file__).resolve().parents[2]

# What Janus 1.1's videoroom offers a subscriber (abridged): BUNDLE, ICE and DTLS at
# media level, its candidate, Opus and VP8 with their SSRCs, and a data section it
# disabled.
JANUS_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1700000000000000 1 IN IP4 127.0.0.2",
        "s=VideoRoom 1234",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 " + FINGERPRINT,
        "a=msid-semantic: WMS janus",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 127.0.0.2",
        "a=sendonly",
        "a=mid:0",
        "a=rtcp-mux",
        "a=ice-ufrag:JnUs",
        "a=ice-pwd:janusjanusjanusjanusjanu",
        "a=ice-options:trickle",
        "a=setup:actpass",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 useinbandfec=1",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=ssrc:1111 cname:janus",
        "a=candidate:1 1 udp 2015363327 127.0.0.2 20042 typ host",
        "a=end-of-candidates",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 127.0.0.2",
        "a=sendonly",
        "a=mid:1",
        "a=rtcp-mux",
        "a=ice-ufrag:JnUs",
        "a=ice-pwd:janusjanusjanusjanusjanu",
        "a=setup:actpass",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 ccm fir",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 goog-remb",
        "a=ssrc:2222 cname:janus",
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:2",
        "",
    ]
)


# -- the answer to a server's offer -----------------------------------------------


def _answer(offer: list[AnswerSection]) -> str:
    return build_answer_to_offer(
        offer,
        ice_ufrag="clientuf",
        ice_pwd="c" * 24,
        fingerprint_sha256=FINGERPRINT,
        candidate=("127.0.0.2", 40000),
    )


def test_janus_offer_gives_its_candidate_credentials_and_ssrcs() -> None:
    audio, video = parse_offer(JANUS_OFFER)  # the disabled data section is skipped
    assert (audio.kind, audio.mid, audio.host, audio.port) == ("audio", "0", "127.0.0.2", 20042)
    assert (video.host, video.port) == ("127.0.0.2", 20042)  # BUNDLE: from the c= line
    assert (audio.ice_ufrag, audio.fingerprint_sha256) == ("JnUs", FINGERPRINT)
    assert audio.ssrcs == [1111] and video.ssrcs == [2222]
    assert [c.name for c in video.codecs] == ["VP8"]


def test_answer_is_recvonly_active_bundled_with_our_one_candidate() -> None:
    answer = parse_sdp(_answer(parse_offer(JANUS_OFFER)))
    assert answer.bundle_groups() == [["0", "1"]]
    audio, video = answer.media
    for section in (audio, video):
        assert section.direction == "recvonly"
        assert answer.media_attr(section, "setup") == "active"
        assert answer.media_attr(section, "ice-ufrag") == "clientuf"
        assert answer.fingerprints(section) == [("sha-256", FINGERPRINT)]
        assert section.has("rtcp-mux")
    assert audio.attrs("candidate") == ["1 1 udp 2130706431 127.0.0.2 40000 typ host"]
    assert audio.has("end-of-candidates")
    assert video.attrs("candidate") == []  # bundled: one transport, one candidate
    opus, vp8 = audio.codecs()[0], video.codecs()[0]
    assert (opus.payload_type, opus.name, opus.channels) == (111, "OPUS", 2)
    assert (vp8.payload_type, vp8.name) == (96, "VP8")
    assert set(vp8.rtcp_fbs) == {"nack", "nack pli"}
    assert audio.extmaps() == {}  # no header extensions accepted


def test_answer_rejects_a_section_without_opus_or_vp8() -> None:
    offer = parse_offer(JANUS_OFFER.replace("VP8/90000", "H264/90000"))
    answer = parse_sdp(_answer(offer))
    audio, video = answer.media
    assert audio.port == 9 and video.port == 0
    assert answer.bundle_groups() == [["0"]]


# -- Janus API messages -------------------------------------------------------------


def test_success_reply_gives_its_data() -> None:
    assert reply_data({"janus": "success", "transaction": "t", "data": {"id": 42}}) == {"id": 42}


def test_error_reply_raises_with_janus_code_and_reason() -> None:
    with pytest.raises(JanusError) as caught:
        reply_data({"janus": "error", "error": {"code": 458, "reason": "No such session"}})
    assert caught.value.code == 458
    assert "No such session" in str(caught.value)


def test_plugin_event_carries_data_and_jsep() -> None:
    event = plugin_event(
        {
            "janus": "event",
            "session_id": 1,
            "sender": 7,
            "transaction": "abc",
            "plugindata": {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "attached"}},
            "jsep": {"type": "offer", "sdp": "v=0\r\n"},
        }
    )
    assert event is not None
    assert (event.sender, event.transaction) == (7, "abc")
    assert event.data == {"videoroom": "attached"}
    assert event.jsep == {"type": "offer", "sdp": "v=0\r\n"}


def test_plugin_error_raises_with_the_plugin_code() -> None:
    message = {
        "janus": "event",
        "plugindata": {"data": {"videoroom": "event", "error_code": 427, "error": "exists"}},
    }
    with pytest.raises(JanusError) as caught:
        plugin_event(message)
    assert caught.value.code == 427


@pytest.mark.parametrize("kind", ["ack", "keepalive", "webrtcup", "media", "hangup"])
def test_core_notifications_are_not_plugin_events(kind: str) -> None:
    assert plugin_event({"janus": kind, "session_id": 1, "sender": 2}) is None


def test_trickle_bodies() -> None:
    line = host_candidate("127.0.0.2", 5000)
    assert trickle_body(line) == {"sdpMid": "0", "sdpMLineIndex": 0, "candidate": line}
    assert trickle_body(None) == {"completed": True}
    assert line == "candidate:1 1 udp 2130706431 127.0.0.2 5000 typ host"


def test_room_request_forces_opus_vp8_and_the_bitrate() -> None:
    request = create_room_request("load-abc-r0", 1, 1500.0)
    assert request["room"] == numeric_id("load-abc-r0") > 0
    assert (request["audiocodec"], request["videocodec"]) == ("opus", "vp8")
    assert request["bitrate"] == 1_500_000
    assert numeric_id("r0-pub0") == numeric_id("r0-pub0") != numeric_id("r0-pub1")


# -- ICE with a full agent ------------------------------------------------------------


def _transport_facing(server: socket.socket, controlling: bool) -> MediaTransport:
    host, port = server.getsockname()
    remote = AnswerSection("audio", "0", "recvonly", "srvu", "s" * 24, FINGERPRINT, host, port)
    return MediaTransport(
        remote, "cliu", ClientCertificate(), local_pwd="c" * 24, controlling=controlling
    )


def test_transport_answers_a_check_with_integrity_from_its_own_password() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(2)
        transport = _transport_facing(server, controlling=False)
        try:
            request = stun.build_stun(
                stun.BINDING_REQUEST,
                b"t" * 12,
                [
                    (stun.ATTR_USERNAME, b"cliu:srvu"),
                    (stun.ATTR_ICE_CONTROLLING, b"\x00" * 8),
                    (stun.ATTR_USE_CANDIDATE, b""),
                ],
                integrity_key=b"c" * 24,
            )
            transport._on_stun(request)
            data, _ = server.recvfrom(2048)
        finally:
            transport.close()
    response = stun.parse_stun(data)
    assert response.message_type == stun.BINDING_SUCCESS
    assert response.transaction_id == b"t" * 12
    assert stun.verify_integrity(data, response, b"c" * 24)
    assert transport.checks_answered == 1


def test_transport_ignores_a_check_keyed_with_another_password() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        transport = _transport_facing(server, controlling=False)
        try:
            request = stun.build_stun(
                stun.BINDING_REQUEST,
                b"u" * 12,
                [(stun.ATTR_USERNAME, b"cliu:srvu")],
                integrity_key=b"x" * 24,
            )
            transport._on_stun(request)
        finally:
            transport.close()
    assert transport.checks_answered == 0


def test_controlled_checks_say_so_and_nominate_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        controlled = _transport_facing(server, controlling=False)
        controlling = _transport_facing(server, controlling=True)
        try:
            mine = stun.parse_stun(controlled._binding_request(b"v" * 12, nominate=True))
            theirs = stun.parse_stun(controlling._binding_request(b"w" * 12, nominate=True))
        finally:
            controlled.close()
            controlling.close()
    assert mine.get(stun.ATTR_ICE_CONTROLLED) is not None
    assert mine.get(stun.ATTR_ICE_CONTROLLING) is None
    assert mine.get(stun.ATTR_USE_CANDIDATE) is None
    assert theirs.get(stun.ATTR_ICE_CONTROLLING) is not None
    assert theirs.get(stun.ATTR_USE_CANDIDATE) is not None


# -- the generated configuration ------------------------------------------------------


def test_config_loads_only_videoroom_and_http_and_no_stun(tmp_path: Path) -> None:
    jcfg = write_config(tmp_path, JanusConfig(18088, "janus-lo", "127.0.0.2", (30000, 30999)))
    text = jcfg.read_text()
    assert [p.name for p in (tmp_path / "plugins").iterdir()] == ["libjanus_videoroom.so"]
    assert [p.name for p in (tmp_path / "transports").iterdir()] == ["libjanus_http.so"]
    assert list((tmp_path / "empty").iterdir()) == []  # event handlers, loggers
    assert 'ice_enforce_list = "janus-lo"' in text
    assert 'rtp_port_range = "30000-30999"' in text
    assert "stun_server" not in text and "turn_server" not in text
    assert "cert_pem" not in text  # Janus makes its own DTLS certificate
    http = (jcfg.parent / "janus.transport.http.jcfg").read_text()
    assert 'ip = "127.0.0.1"' in http and "port = 18088" in http


def test_jcfg_rendering_quotes_strings_only() -> None:
    text = render_jcfg({"s": {"a": True, "b": 3, "c": "x y"}})
    assert text == 's: {\n\ta = true\n\tb = 3\n\tc = "x y"\n}\n'


# -- one real session -------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_two_subscribers_get_decrypted_media_from_janus(tmp_path: Path) -> None:
    if not JANUS_BINARY.exists():
        pytest.skip(
            f"Janus is not installed ({JANUS_BINARY} missing): `make test` installs "
            "Debian's `janus` package (apt-get install --no-install-recommends janus)"
        )
    reason = netns_missing_reason()
    if reason is not None:
        pytest.skip(f"Janus needs a private network namespace here: {reason}")
    out = tmp_path / "janus.json"
    command = [sys.executable, "-m", "benchmarks.janus", "--subscribers", "2"]
    command += ["--duration", "2", "--warmup", "1", "--json", str(out)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=110)
    assert out.exists(), done.stdout[-2000:] + done.stderr[-4000:]
    (result,) = json.loads(out.read_text())["janus"]
    assert result["clients"]["connected"] == 3, result["clients"]["failed"]
    assert result["streams"] == 4  # two subscribers, audio and video each
    assert result["silent_streams"] == 0
    assert result["client_srtp_errors"] == 0
    assert result["delivery"]["audio"] > 0.8 and result["delivery"]["video"] > 0.8
