"""The load client's SDP: a minimal offer written by hand, and the answer read back.

The offer is what a small WHIP/WHEP client would send: BUNDLE over the mids, Opus on
PT 111 and VP8 on PT 96, ICE credentials, the client's DTLS fingerprint and
``a=setup:active`` (the SFU is always the DTLS server).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sfu.wire.sdp import SdpError, parse_sdp

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
    try:
        answer = parse_sdp(text)
    except SdpError as exc:
        raise AnswerError(f"unparsable answer: {exc}") from exc
    sections: list[AnswerSection] = []
    for media in answer.media:
        mid = media.mid or ""
        if media.port == 0:
            raise AnswerError(f"the SFU rejected m-section {mid!r} ({media.kind})")
        ufrag = answer.media_attr(media, "ice-ufrag")
        pwd = answer.media_attr(media, "ice-pwd")
        if not ufrag or not pwd:
            raise AnswerError(f"m-section {mid!r} has no ICE credentials")
        digests = [d for algo, d in answer.fingerprints(media) if algo == "sha-256"]
        if not digests:
            raise AnswerError(f"m-section {mid!r} has no sha-256 fingerprint")
        address = _host_candidate(media.attrs("candidate"))
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
            )
        )
    if not sections:
        raise AnswerError("the answer has no m-sections")
    return sections
