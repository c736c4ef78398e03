"""Tests for sfu.proto.srtp: SrtpPair against independent pylibsrtp sessions of the peer."""

from __future__ import annotations

import contextlib
import os
import struct

import pytest
from pylibsrtp import Policy, Session

from sfu.proto import srtp as srtp_module
from sfu.proto.dtls import SrtpKeys
from sfu.proto.srtp import RESYNC_AFTER, SrtpError, SrtpPair

PROFILES = {
    "AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16 + 12),
    "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16 + 14),
}
SSRC = 0x01020304


def rtp(seq: int, ssrc: int = SSRC, payload: bytes = b"\x10\x00media payload") -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, ssrc) + payload


def rtcp_receiver_report(ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


class Peer:
    """The other end: protects with what the SFU calls remote_key, reads with local_key."""

    def __init__(self, profile: str, keys: SrtpKeys) -> None:
        srtp_profile, _ = PROFILES[profile]
        self.tx = Session(
            Policy(
                key=keys.remote_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=srtp_profile
            )
        )
        self.rx = Session(
            Policy(key=keys.local_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=srtp_profile)
        )


@pytest.fixture(params=sorted(PROFILES))
def pair_and_peer(request: pytest.FixtureRequest) -> tuple[SrtpPair, Peer]:
    profile: str = request.param
    _, key_len = PROFILES[profile]
    keys = SrtpKeys(profile, os.urandom(key_len), os.urandom(key_len))
    return SrtpPair(keys), Peer(profile, keys)


def test_packets_from_the_peer_decrypt(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    for seq in (1, 2, 3, 10):
        assert pair.unprotect(peer.tx.protect(rtp(seq))) == rtp(seq)


def test_protected_packets_are_not_plaintext(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, _ = pair_and_peer
    protected = pair.protect(rtp(5))
    assert protected[:12] == rtp(5)[:12]  # header stays in the clear
    assert b"media payload" not in protected
    assert len(protected) > len(rtp(5))  # auth tag appended


def test_packets_to_the_peer_decrypt(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    assert peer.rx.unprotect(pair.protect(rtp(7))) == rtp(7)


def test_rtcp_decrypts_in_both_directions(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    report = rtcp_receiver_report()
    assert pair.unprotect_rtcp(peer.tx.protect_rtcp(report)) == report
    assert peer.rx.unprotect_rtcp(pair.protect_rtcp(report)) == report


def test_tampered_payload_raises(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    protected = bytearray(peer.tx.protect(rtp(1)))
    protected[14] ^= 0x01
    with pytest.raises(SrtpError):
        pair.unprotect(bytes(protected))


def test_tampered_header_raises(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    protected = bytearray(peer.tx.protect(rtp(1)))
    protected[1] ^= 0x01  # payload type is authenticated
    with pytest.raises(SrtpError):
        pair.unprotect(bytes(protected))


def test_tampered_rtcp_raises(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    protected = bytearray(peer.tx.protect_rtcp(rtcp_receiver_report()))
    protected[5] ^= 0x01
    with pytest.raises(SrtpError):
        pair.unprotect_rtcp(bytes(protected))


def test_packet_under_another_key_raises(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, _ = pair_and_peer
    profile = pair.profile
    _, key_len = PROFILES[profile]
    stranger = Peer(profile, SrtpKeys(profile, os.urandom(key_len), os.urandom(key_len)))
    with pytest.raises(SrtpError):
        pair.unprotect(stranger.tx.protect(rtp(1)))


def test_replayed_packet_is_rejected(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    protected = peer.tx.protect(rtp(100))
    pair.unprotect(protected)
    with pytest.raises(SrtpError):
        pair.unprotect(protected)


def test_replayed_rtcp_is_rejected(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    protected = peer.tx.protect_rtcp(rtcp_receiver_report())
    pair.unprotect_rtcp(protected)
    with pytest.raises(SrtpError):
        pair.unprotect_rtcp(protected)


def test_reordered_packets_within_the_window_are_accepted(
    pair_and_peer: tuple[SrtpPair, Peer],
) -> None:
    pair, peer = pair_and_peer
    packets = [peer.tx.protect(rtp(seq)) for seq in range(1, 600)]
    pair.unprotect(packets[-1])
    # 598 packets behind the newest: inside the 1024-packet window, outside libsrtp's default 128.
    assert pair.unprotect(packets[0]) == rtp(1)


def test_protecting_the_same_sequence_number_twice_is_allowed(
    pair_and_peer: tuple[SrtpPair, Peer],
) -> None:
    pair, peer = pair_and_peer
    first = pair.protect(rtp(42))
    resend = pair.protect(rtp(42))  # a NACK answer reuses the sequence number
    assert first == resend
    assert peer.rx.unprotect(first) == rtp(42)


def test_many_ssrcs_share_one_pair(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    for ssrc in (1, 2, 0xFFFFFFFF):
        assert peer.rx.unprotect(pair.protect(rtp(9, ssrc))) == rtp(9, ssrc)
        assert pair.unprotect(peer.tx.protect(rtp(9, ssrc))) == rtp(9, ssrc)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\x80\x60" + bytes(10), os.urandom(64)])
def test_garbage_raises_srtp_error_only(pair_and_peer: tuple[SrtpPair, Peer], data: bytes) -> None:
    pair, _ = pair_and_peer
    with pytest.raises(SrtpError):
        pair.unprotect(data)
    with pytest.raises(SrtpError):
        pair.unprotect_rtcp(data)


def test_unprotect_of_an_oversized_datagram_raises_srtp_error_only(
    pair_and_peer: tuple[SrtpPair, Peer],
) -> None:
    # The worker accepts datagrams up to 3000 bytes and its transports catch SrtpError only.
    pair, _ = pair_and_peer
    with pytest.raises(SrtpError):
        pair.unprotect(rtp(1, payload=bytes(1600)))
    with pytest.raises(SrtpError):
        pair.unprotect_rtcp(rtcp_receiver_report() + bytes(1600))


def test_protect_handles_a_1400_byte_packet_as_gstreamer_sends_by_default(
    pair_and_peer: tuple[SrtpPair, Peer],
) -> None:
    # GStreamer's RTP payloaders default to mtu=1400; the SFU must forward what it received.
    pair, peer = pair_and_peer
    packet = rtp(3, payload=bytes(1400 - 12))
    assert peer.rx.unprotect(pair.protect(packet)) == packet


# -- rollover counter resynchronisation (RFC 3711 3.3.1) ---------------------------


def rtp_at(index: int, ssrc: int = SSRC) -> bytes:
    """A packet with the 48-bit SRTP index `index` (ROC in the high bits)."""
    seq = index & 0xFFFF
    return struct.pack("!BBHII", 0x80, 96, seq, (index * 3000) & 0xFFFFFFFF, ssrc) + b"\x10\x00x"


def send_through_gap(peer: Peer, start: int, gap: int) -> list[tuple[int, bytes]]:
    """What the peer sends from `start`: 50 packets, `gap` that are lost, then 60 more.

    The lost ones are protected too (in steps the sender's own ROC tracking follows)
    so that the sender's rollover counter is what a real sender's would be."""
    delivered = [(i, peer.tx.protect(rtp_at(i))) for i in range(start, start + 50)]
    for i in range(start + 50, start + 50 + gap, 1000):
        peer.tx.protect(rtp_at(i))
    resume = start + 50 + gap
    delivered += [(i, peer.tx.protect(rtp_at(i))) for i in range(resume, resume + 60)]
    return delivered


@pytest.mark.parametrize(
    ("start", "gap"),
    [
        (40_000, 33_000),  # no wrap, but more than 2^15 ahead: libsrtp guesses ROC - 1
        (60_000, 40_000),  # wraps: guessed right only within 2^15
        (1_000, 65_536 + 10),  # a whole ROC later, almost the same sequence number
        (20_000, 3 * 65_536 + 500),  # three rollovers
    ],
)
def test_media_resumes_after_more_than_32768_lost_packets(
    pair_and_peer: tuple[SrtpPair, Peer], start: int, gap: int
) -> None:
    pair, peer = pair_and_peer
    results: list[tuple[int, bool]] = []
    for index, packet in send_through_gap(peer, start, gap):
        try:
            assert pair.unprotect(packet) == rtp_at(index)
            results.append((index, True))
        except SrtpError:
            results.append((index, False))
    before, after = results[:50], results[50:]
    assert all(ok for _, ok in before)
    lost_after_gap = [i for i, ok in after if not ok]
    # Only the packets before the resync attempt are lost; all later ones decrypt.
    assert len(lost_after_gap) < RESYNC_AFTER
    assert all(ok for _, ok in after[RESYNC_AFTER:])
    assert pair.roc_resyncs == 1


def test_without_the_resync_the_stream_stays_dead_after_the_gap(
    pair_and_peer: tuple[SrtpPair, Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: libsrtp alone never recovers."""
    monkeypatch.setattr(srtp_module, "RESYNC_ROC_STEPS", ())
    pair, peer = pair_and_peer
    decrypted = 0
    for _, packet in send_through_gap(peer, 40_000, 33_000)[50:]:
        with contextlib.suppress(SrtpError):
            pair.unprotect(packet)
            decrypted += 1
    assert decrypted == 0


def test_replay_protection_holds_across_a_resync(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    sent = send_through_gap(peer, 40_000, 33_000)
    taken: list[bytes] = []
    for _, packet in sent:
        with contextlib.suppress(SrtpError):
            pair.unprotect(packet)
            taken.append(packet)
    assert pair.roc_resyncs == 1
    # Every packet taken, before or after the gap, replayed a dozen times: none is
    # accepted again, whatever resync attempts the failures trigger.
    accepted = 0
    for _ in range(12):
        for packet in taken:
            try:
                pair.unprotect(packet)
                accepted += 1
            except SrtpError:
                pass
    assert accepted == 0
    # ...and the live stream goes on.
    assert len(taken) > 100
    nxt = sent[-1][0] + 1
    assert pair.unprotect(peer.tx.protect(rtp_at(nxt))) == rtp_at(nxt)


def test_junk_with_a_live_ssrc_does_not_derail_the_stream(
    pair_and_peer: tuple[SrtpPair, Peer],
) -> None:
    pair, peer = pair_and_peer
    for i in range(10):
        pair.unprotect(peer.tx.protect(rtp_at(i)))
    junk = rtp_at(5_000) + os.urandom(16)
    for _ in range(5 * RESYNC_AFTER):
        with pytest.raises(SrtpError) as failure:
            pair.unprotect(junk)
        assert not failure.value.is_replay
    assert pair.roc_resyncs == 0
    for i in range(10, 20):
        assert pair.unprotect(peer.tx.protect(rtp_at(i))) == rtp_at(i)


def test_a_replay_is_reported_as_such(pair_and_peer: tuple[SrtpPair, Peer]) -> None:
    pair, peer = pair_and_peer
    packet = peer.tx.protect(rtp_at(7))
    pair.unprotect(packet)
    with pytest.raises(SrtpError) as failure:
        pair.unprotect(packet)
    assert failure.value.is_replay
