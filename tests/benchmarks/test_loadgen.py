"""The load generator: its offer, its statistics, its DTLS client and one short real run."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.loadgen.dtls_client import ClientCertificate, DtlsClient
from benchmarks.loadgen.media import AudioSource, VideoSource, read_probe
from benchmarks.loadgen.offer import AUDIO_PT, VIDEO_PT, OfferTrack, build_offer, parse_answer
from benchmarks.loadgen.runner import LoadSpec, plan_clients, run_load
from benchmarks.loadgen.stats import StreamStats, latency_summary, percentile
from sfu.proto.dtls import DtlsCertificate, DtlsServer, DtlsState
from sfu.wire.codecs import is_keyframe
from sfu.wire.rtp import parse_rtp_header
from sfu.wire.sdp import AnswerMedia, Codec, build_answer, parse_sdp
from signaling.tokens import SigningKeys

FINGERPRINT = ":".join(["AB"] * 32)


def _payload(packet: bytes) -> bytes:
    header = parse_rtp_header(packet)
    return packet[header.header_size :]


# -- offer ------------------------------------------------------------------------


def test_publisher_offer_parses_with_the_server_parser() -> None:
    tracks = [OfferTrack("audio", "0", 1111), OfferTrack("video", "1", 2222)]
    offer = build_offer(
        tracks,
        direction="sendonly",
        ice_ufrag="ufrag123",
        ice_pwd="p" * 24,
        fingerprint_sha256=FINGERPRINT,
    )
    sdp = parse_sdp(offer)
    assert sdp.bundle_groups() == [["0", "1"]]
    audio, video = sdp.media
    assert (audio.kind, audio.mid, audio.direction) == ("audio", "0", "sendonly")
    assert (video.kind, video.mid, video.direction) == ("video", "1", "sendonly")
    opus = audio.codecs()[0]
    assert (opus.payload_type, opus.name, opus.clock_rate, opus.channels) == (
        AUDIO_PT,
        "OPUS",
        48000,
        2,
    )
    vp8 = video.codecs()[0]
    assert (vp8.payload_type, vp8.name, vp8.clock_rate) == (VIDEO_PT, "VP8", 90000)
    assert {"nack", "nack pli"} <= set(vp8.rtcp_fbs)
    assert audio.ssrcs() == [1111] and video.ssrcs() == [2222]
    for section in sdp.media:
        assert sdp.media_attr(section, "ice-ufrag") == "ufrag123"
        assert sdp.media_attr(section, "setup") == "active"
        assert section.has("rtcp-mux")
        assert sdp.fingerprints(section) == [("sha-256", FINGERPRINT)]
    assert offer.endswith("\r\n") and "\n" not in offer.replace("\r\n", "")


def test_subscriber_offer_is_recvonly_and_announces_no_ssrc() -> None:
    offer = build_offer(
        [OfferTrack("audio", "0")],
        direction="recvonly",
        ice_ufrag="ufrag123",
        ice_pwd="p" * 24,
        fingerprint_sha256=FINGERPRINT,
    )
    (audio,) = parse_sdp(offer).media
    assert audio.direction == "recvonly"
    assert audio.ssrcs() == []


def test_offer_refuses_an_unknown_direction() -> None:
    with pytest.raises(ValueError):
        build_offer(
            [OfferTrack("audio", "0")],
            direction="sendrecv",
            ice_ufrag="u",
            ice_pwd="p",
            fingerprint_sha256=FINGERPRINT,
        )


def test_answer_gives_ice_dtls_address_and_ssrc() -> None:
    answer = build_answer(
        1,
        1,
        [
            AnswerMedia(
                "audio",
                "0",
                "UDP/TLS/RTP/SAVPF",
                40000,
                direction="sendonly",
                codecs=[Codec(AUDIO_PT, "OPUS", 48000, 2)],
                ice_ufrag="srvufrag",
                ice_pwd="s" * 24,
                fingerprint=f"sha-256 {FINGERPRINT}",
                address="127.0.0.1",
                candidates=["1 1 udp 2130706431 127.0.0.1 40000 typ host"],
                ssrc=4242,
                cname="c",
            )
        ],
        ["0"],
    )
    (section,) = parse_answer(answer)
    assert (section.host, section.port) == ("127.0.0.1", 40000)
    assert (section.ice_ufrag, section.ice_pwd) == ("srvufrag", "s" * 24)
    assert section.fingerprint_sha256 == FINGERPRINT
    assert section.ssrcs == [4242]
    assert section.payload_types == [AUDIO_PT]


# -- statistics -------------------------------------------------------------------


def test_percentiles_of_one_to_a_hundred() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert percentile([7], 99) == 7


def test_latency_summary_is_in_microseconds() -> None:
    summary = latency_summary(n * 1000 for n in range(100, 0, -1))  # 1..100 us, unsorted
    assert summary == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0, "count": 100}
    assert latency_summary([])["count"] == 0


def test_loss_is_counted_across_a_sequence_wrap() -> None:
    stats = StreamStats()
    sent = [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5]
    for seq in sent:
        if seq not in (65534, 1):
            stats.on_packet(seq)
    assert stats.counts.expected == 12
    assert stats.counts.received == 10
    assert stats.counts.lost == 2
    assert stats.counts.out_of_order == 0


def test_reordering_and_duplicates_are_not_loss() -> None:
    stats = StreamStats()
    for seq in (65534, 0, 65535, 1, 1, 2):
        stats.on_packet(seq)
    assert stats.counts.expected == 5
    assert stats.counts.received == 5
    assert stats.counts.lost == 0
    assert stats.counts.out_of_order == 1
    assert stats.counts.duplicates == 1


# -- media ------------------------------------------------------------------------


def test_video_frames_start_with_a_keyframe_and_answer_a_request() -> None:
    clock = iter(range(1000, 10**6, 10)).__next__
    video = VideoSource(ssrc=5, bitrate_kbps=1500)
    first = list(video.packets(clock))
    assert len(first) == 6  # 6250 bytes a frame, in packets of at most 1200
    assert is_keyframe("VP8", _payload(first[0][0]))
    assert [parse_rtp_header(p).marker for p, _ in first] == [False] * 5 + [True]
    second = list(video.packets(clock))
    assert not is_keyframe("VP8", _payload(second[0][0]))
    video.request_keyframe()
    assert is_keyframe("VP8", _payload(next(iter(video.packets(clock)))[0]))
    packet, send_ns = second[2]
    assert read_probe(_payload(packet), "video") == (send_ns, 8)


def test_audio_packets_carry_their_send_time_and_counter() -> None:
    audio = AudioSource(ssrc=9)
    times = iter([111, 222])
    one = list(audio.packets(times.__next__))
    two = list(audio.packets(times.__next__))
    assert read_probe(_payload(one[0][0]), "audio") == (111, 0)
    assert read_probe(_payload(two[0][0]), "audio") == (222, 1)
    assert len(_payload(one[0][0])) == 100
    h1, h2 = parse_rtp_header(one[0][0]), parse_rtp_header(two[0][0])
    assert (h2.sequence_number - h1.sequence_number) % 65536 == 1
    assert (h2.timestamp - h1.timestamp) % 2**32 == 960


# -- DTLS -------------------------------------------------------------------------


def test_dtls_client_and_sfu_server_agree_on_srtp_keys() -> None:
    server_cert = DtlsCertificate()
    client_cert = ClientCertificate()
    client = DtlsClient(client_cert, server_cert.fingerprint_sha256)
    server = DtlsServer(server_cert.create_context(), [("sha-256", client_cert.fingerprint_sha256)])
    client.start()
    for _ in range(10):
        for datagram in client.datagrams_to_send():
            server.receive(datagram)
        for datagram in server.datagrams_to_send():
            client.receive(datagram)
        if client.connected and server.state == DtlsState.CONNECTED:
            break
    assert client.keys is not None and server.keys is not None
    assert client.keys.profile == server.keys.profile == "AEAD_AES_128_GCM"
    assert client.keys.local_key == server.keys.remote_key
    assert client.keys.remote_key == server.keys.local_key


def test_dtls_client_refuses_a_server_with_another_fingerprint() -> None:
    server_cert = DtlsCertificate()
    client_cert = ClientCertificate()
    client = DtlsClient(client_cert, FINGERPRINT)
    server = DtlsServer(server_cert.create_context(), [("sha-256", client_cert.fingerprint_sha256)])
    client.start()
    for _ in range(10):
        for datagram in client.datagrams_to_send():
            server.receive(datagram)
        for datagram in server.datagrams_to_send():
            client.receive(datagram)
        if client.failed:
            break
    assert client.failed and client.keys is None
    assert "fingerprint" in (client.failure or "")


# -- plan -----------------------------------------------------------------------


def test_a_meeting_gives_each_participant_one_viewer_per_other_publisher(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path)
    spec = LoadSpec(publishers=4, subscribers=0, rooms=2, mesh=True)
    publishers, viewers = plan_clients(spec, keys, "t", 60)
    assert len(publishers) == 8
    assert len(viewers) == 2 * 4 * 3
    assert all(v.path == f"/whep/{v.room}/{v.source}" for v in viewers)
    assert not any(v.name.startswith(f"{v.source}-") for v in viewers)  # nobody watches self
    assert keys.verify(viewers[0].token).role == "viewer"
    assert keys.verify(publishers[0].token).role == "participant"


def test_subscribers_of_a_single_publisher_use_the_room_url(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path)
    publishers, viewers = plan_clients(LoadSpec(subscribers=3, audio_only=True), keys, "t", 60)
    assert [p.path for p in publishers] == ["/whip/load-t-r0"]
    assert [v.path for v in viewers] == ["/whep/load-t-r0"] * 3
    assert all(v.kinds == ("audio",) and v.source == "r0-pub0" for v in viewers)


# -- one real run -----------------------------------------------------------------

RESULT_KEYS = {
    "scenario",
    "out_pps",
    "cpu_us_per_packet",
    "latency_us",
    "loss",
    "out_of_order",
    "generator_cpu_percent",
    "server_cpu_percent",
    "rss_mb_per_participant",
    "clients",
}


@pytest.mark.timeout(60)
def test_one_publisher_two_subscribers_through_a_real_server() -> None:
    result = run_load(LoadSpec(publishers=1, subscribers=2, rooms=1, duration_s=3.0, warmup_s=1.0))
    assert RESULT_KEYS <= set(result)
    assert set(result["latency_us"]) >= {"p50", "p95", "p99", "max"}
    clients = result["clients"]
    assert clients["requested"] == 3
    assert clients["connected"] == 3, clients["failed"]
    assert result["sent"]["audio"] > 0
    assert result["delivery"]["audio"] > 0.8
    assert 0 < result["latency_us"]["p50"] < 50_000
    assert result["loss"] is not None and result["loss"] < 0.05
    assert result["out_pps"] > 0 and result["cpu_us_per_packet"] is not None
