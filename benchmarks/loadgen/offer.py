"""The load client's SDP: a minimal offer written by hand, and the answer read back.

The offer is what a small WHIP/WHEP client would send: BUNDLE over the mids, Opus on
PT 111 and VP8 on PT 96, ICE credentials, the client's DTLS fingerprint and
``a=setup:active`` (the SFU is always the DTLS server).

Servers that offer to their subscribers (Janus's videoroom) get the other half:
``parse_offer`` reads their offer and ``build_answer_to_offer`` answers it recvonly,
``a=setup:active``, with the client's one host candidate and end-of-candidates.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sfu.wire.sdp import Codec, SdpError, parse_sdp

AUDIO_PT = 111
VIDEO_PT = 96
_PROTO = "UDP/TLS/RTP/SAVPF"


@dataclass(frozen=True, slots=True)
class OfferTrack:
    """One m-section of the offer."""

    kind: str  # "audio" | "video"
    mid: str
    ssrc: int | None = None  # publishers announce theirs; subscribers send none


def build_offer(
    tracks: list[OfferTrack],
    *,
    direction: str,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint_sha256: str,
    cname: str = "x",
) -> str:
    """An offer with one m-section per track; direction is "sendonly" or "recvonly"."""
    if direction not in ("sendonly", "recvonly"):
        raise ValueError(f"direction must be sendonly or recvonly, not {direction!r}")
    if not tracks:
        raise ValueError("an offer needs at least one track")
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE " + " ".join(t.mid for t in tracks),
        "a=msid-semantic: WMS *",
    ]
    for track in tracks:
        pt = AUDIO_PT if track.kind == "audio" else VIDEO_PT
        lines += [
            f"m={track.kind} 9 {_PROTO} {pt}",
            "c=IN IP4 0.0.0.0",
            f"a=mid:{track.mid}",
            f"a={direction}",
            f"a=ice-ufrag:{ice_ufrag}",
            f"a=ice-pwd:{ice_pwd}",
            f"a=fingerprint:sha-256 {fingerprint_sha256}",
            "a=setup:active",
            "a=rtcp-mux",
        ]
        if track.kind == "audio":
            lines += [f"a=rtpmap:{pt} opus/48000/2", f"a=fmtp:{pt} minptime=10;useinbandfec=1"]
        else:
            lines += [
                f"a=rtpmap:{pt} VP8/90000",
                f"a=rtcp-fb:{pt} nack",
                f"a=rtcp-fb:{pt} nack pli",
            ]
        if track.ssrc is not None:
            lines.append(f"a=ssrc:{track.ssrc} cname:{cname}")
    return "\r\n".join(lines) + "\r\n"


@dataclass(slots=True)
class AnswerSection:
    """What the SFU said about one of our m-sections."""

    kind: str
    mid: str
    direction: str
    ice_ufrag: str
    ice_pwd: str
    fingerprint_sha256: str
    host: str
    port: int
    ssrcs: list[int] = field(default_factory=list)
    payload_types: list[int] = field(default_factory=list)
    proto: str = _PROTO
    codecs: list[Codec] = field(default_factory=list)


class AnswerError(ValueError):
    """The answer cannot be used (rejected m-section, missing ICE or fingerprint)."""


def _host_candidate(candidates: list[str]) -> tuple[str, int] | None:
    # foundation component transport priority address port "typ" type ...
    for candidate in candidates:
        parts = candidate.split()
        if len(parts) >= 8 and parts[2].lower() == "udp" and parts[7] == "host":
            try:
                return parts[4], int(parts[5])
            except ValueError:
                continue
    return None


def parse_answer(text: str) -> list[AnswerSection]:
    """Read the SFU's answer with the server's own SDP parser; raise AnswerError."""
    return _parse_description(text, "answer")


def parse_offer(text: str) -> list[AnswerSection]:
    """Read a server's offer (the same fields as an answer); raise AnswerError."""
    return _parse_description(text, "offer")


def _parse_description(text: str, what: str) -> list[AnswerSection]:
    try:
        answer = parse_sdp(text)
    except SdpError as exc:
        raise AnswerError(f"unparsable {what}: {exc}") from exc
    sections: list[AnswerSection] = []
    # BUNDLE: a section may list no candidate of its own and share another's transport.
    candidate_of_ufrag: dict[str, tuple[str, int]] = {}
    for media in answer.media:
        mid = media.mid or ""
        if media.port == 0:
            if what == "offer":
                continue  # an m-section the server itself disabled: nothing to answer
            raise AnswerError(f"the SFU rejected m-section {mid!r} ({media.kind})")
        ufrag = answer.media_attr(media, "ice-ufrag")
        pwd = answer.media_attr(media, "ice-pwd")
        if not ufrag or not pwd:
            raise AnswerError(f"m-section {mid!r} has no ICE credentials")
        digests = [d for algo, d in answer.fingerprints(media) if algo == "sha-256"]
        if not digests:
            raise AnswerError(f"m-section {mid!r} has no sha-256 fingerprint")
        address = _host_candidate(media.attrs("candidate"))
        if address is not None:
            candidate_of_ufrag.setdefault(ufrag, address)
        else:
            address = candidate_of_ufrag.get(ufrag)
        if address is None:
            parts = media.connection.split()
            address = (parts[2] if len(parts) == 3 else "", media.port)
        sections.append(
            AnswerSection(
                kind=media.kind,
                mid=mid,
                direction=media.direction,
                ice_ufrag=ufrag,
                ice_pwd=pwd,
                fingerprint_sha256=digests[0],
                host=address[0],
                port=address[1],
                ssrcs=media.ssrcs(),
                payload_types=[c.payload_type for c in media.codecs()],
                proto=media.proto,
                codecs=media.codecs(),
            )
        )
    if not sections:
        raise AnswerError(f"the {what} has no m-sections")
    return sections


# The codec the load client takes from an offer, per kind.
_WANTED_CODEC = {"audio": "OPUS", "video": "VP8"}


def build_answer_to_offer(
    offer: list[AnswerSection],
    *,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint_sha256: str,
    candidate: tuple[str, int],
) -> str:
    """A recvonly answer to a server's offer: Opus or VP8 at the offer's payload type,
    ``a=setup:active`` (the client is the DTLS client), BUNDLE over every accepted mid,
    and the client's one UDP host candidate followed by end-of-candidates.

    An m-section without Opus (audio) or VP8 (video) is rejected with port 0.
    """
    if not offer:
        raise ValueError("an answer needs an offer with at least one m-section")
    host, port = candidate
    accepted: list[tuple[AnswerSection, Codec]] = []
    for section in offer:
        wanted = _WANTED_CODEC.get(section.kind)
        codec = next((c for c in section.codecs if c.name == wanted), None)
        if codec is not None:
            accepted.append((section, codec))
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
    ]
    if accepted:
        lines.append("a=group:BUNDLE " + " ".join(s.mid for s, _ in accepted))
    lines.append("a=msid-semantic: WMS *")
    codec_of = {id(s): c for s, c in accepted}
    first = True
    for section in offer:
        codec = codec_of.get(id(section))
        if codec is None:
            formats = " ".join(str(pt) for pt in section.payload_types) or "0"
            lines += [f"m={section.kind} 0 {section.proto} {formats}", f"a=mid:{section.mid}"]
            continue
        pt = codec.payload_type
        rtpmap = f"{codec.name.lower() if codec.name == 'OPUS' else codec.name}/{codec.clock_rate}"
        if section.kind == "audio" and codec.channels > 1:
            rtpmap += f"/{codec.channels}"
        lines += [
            f"m={section.kind} 9 {section.proto} {pt}",
            "c=IN IP4 0.0.0.0",
            f"a=mid:{section.mid}",
            "a=recvonly",
            f"a=ice-ufrag:{ice_ufrag}",
            f"a=ice-pwd:{ice_pwd}",
            f"a=fingerprint:sha-256 {fingerprint_sha256}",
            "a=setup:active",
            "a=rtcp-mux",
            f"a=rtpmap:{pt} {rtpmap}",
        ]
        if codec.fmtp:
            lines.append(f"a=fmtp:{pt} {codec.fmtp}")
        lines += [f"a=rtcp-fb:{pt} {fb}" for fb in codec.rtcp_fbs if fb in ("nack", "nack pli")]
        if first:
            # BUNDLE: one transport, so its candidate goes with the first m-section only.
            lines += [f"a=candidate:1 1 udp 2130706431 {host} {port} typ host"]
            lines.append("a=end-of-candidates")
            first = False
    return "\r\n".join(lines) + "\r\n"
