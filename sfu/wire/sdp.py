"""SDP offers in, answers out (RFC 8866, JSEP RFC 8829, BUNDLE RFC 8843).

The parser keeps attributes raw and offers typed views of what the SFU needs; the
builder writes answers with CRLF line endings (some WHIP clients insist on it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A browser offer grows by ~3-5 KB per subscribed track (every codec listed again).
MAX_SDP_BYTES = 256 * 1024
MAX_MEDIA_SECTIONS = 128
_LINE = re.compile(r"^([a-z])=(.*)$")


class SdpError(ValueError):
    """Malformed or unacceptable SDP; the message says what was wrong."""

    code = "bad_sdp"


@dataclass(slots=True)
class Codec:
    """One payload format of an m-section."""

    payload_type: int
    name: str  # upper-case encoding name, e.g. "OPUS", "VP8", "H264"
    clock_rate: int
    channels: int = 1
    fmtp: str = ""
    rtcp_fbs: list[str] = field(default_factory=list)

    def fmtp_params(self) -> dict[str, str]:
        """fmtp as a dict of lower-case keys (valueless parameters map to "")."""
        params: dict[str, str] = {}
        for part in self.fmtp.split(";"):
            key, _, value = part.strip().partition("=")
            if key:
                params[key.lower()] = value.strip()
        return params


@dataclass(slots=True)
class MediaSection:
    """One m= section of an offer."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    connection: str = ""

    def attr(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None

    def attrs(self, name: str) -> list[str]:
        return [value or "" for key, value in self.attributes if key == name]

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.attributes)

    def int_attr(self, name: str, default: int) -> int:
        """A non-negative integer attribute (a=sctp-port, a=max-message-size), else
        ``default`` when it is missing or not a number."""
        value = _int_or((self.attr(name) or "").strip(), -1)
        return default if value < 0 else value

    @property
    def mid(self) -> str | None:
        return self.attr("mid")

    @property
    def direction(self) -> str:
        for name in ("sendrecv", "sendonly", "recvonly", "inactive"):
            if self.has(name):
                return name
        return "sendrecv"

    @property
    def bundle_only(self) -> bool:
        return self.has("bundle-only")

    def codecs(self) -> list[Codec]:
        """Codecs in offer order, from rtpmap, fmtp and rtcp-fb lines."""
        by_pt: dict[int, Codec] = {}
        for value in self.attrs("rtpmap"):
            pt_text, _, encoding = value.partition(" ")
            parts = encoding.strip().split("/")
            try:
                pt = int(pt_text)
                clock = int(parts[1]) if len(parts) > 1 else 0
                channels = int(parts[2]) if len(parts) > 2 else 1
            except ValueError as exc:
                raise SdpError(f"bad a=rtpmap line: {value!r}") from exc
            if not 0 <= pt <= 127 or not parts[0]:
                raise SdpError(f"bad a=rtpmap line: {value!r}")
            by_pt[pt] = Codec(pt, parts[0].upper(), clock, channels)
        for value in self.attrs("fmtp"):
            pt_text, _, params = value.partition(" ")
            codec = by_pt.get(_int_or(pt_text, -1))
            if codec is not None:
                codec.fmtp = params.strip()
        for value in self.attrs("rtcp-fb"):
            pt_text, _, fb = value.partition(" ")
            targets = list(by_pt.values()) if pt_text == "*" else [by_pt.get(_int_or(pt_text, -1))]
            for codec in targets:
                if codec is not None:
                    codec.rtcp_fbs.append(fb.strip())
        return [by_pt[int(f)] for f in self.formats if f.isdigit() and int(f) in by_pt]

    def extmaps(self) -> dict[int, str]:
        """Header extension id -> URI."""
        result: dict[int, str] = {}
        for value in self.attrs("extmap"):
            id_text, _, rest = value.partition(" ")
            ext_id = _int_or(id_text.split("/")[0], 0)
            uri = rest.strip().split(" ")[0]
            if 1 <= ext_id <= 255 and uri:
                result[ext_id] = uri
        return result

    def ssrcs(self) -> list[int]:
        """Media SSRCs announced with a=ssrc, in order, without RTX/FEC repair SSRCs."""
        repair: set[int] = set()
        for value in self.attrs("ssrc-group"):
            parts = value.split()
            if not parts:
                raise SdpError("empty a=ssrc-group line")
            if len(parts) >= 3 and parts[0] in ("FID", "FEC-FR"):
                repair.update(_int_or(m, -1) for m in parts[2:])
        seen: list[int] = []
        for value in self.attrs("ssrc"):
            ssrc = _int_or(value.split(" ")[0], -1)
            if 0 <= ssrc <= 0xFFFFFFFF and ssrc not in seen and ssrc not in repair:
                seen.append(ssrc)
        return seen


@dataclass(slots=True)
class SessionDescription:
    """A parsed SDP document."""

    attributes: list[tuple[str, str | None]]
    media: list[MediaSection]

    def session_attr(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None

    def bundle_groups(self) -> list[list[str]]:
        return [
            value.split()[1:]
            for key, value in self.attributes
            if key == "group" and value and value.split()[0] == "BUNDLE"
        ]

    def media_attr(self, section: MediaSection, name: str) -> str | None:
        """A media attribute, falling back to the session level (ICE, fingerprint, setup)."""
        value = section.attr(name)
        return value if value is not None else self.session_attr(name)

    def fingerprints(self, section: MediaSection) -> list[tuple[str, str]]:
        values = section.attrs("fingerprint") or [
            v or "" for k, v in self.attributes if k == "fingerprint"
        ]
        result = []
        for value in values:
            algo, _, digest = value.strip().partition(" ")
            if algo and digest:
                result.append((algo.lower(), digest.strip().upper()))
        return result


def _int_or(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def parse_sdp(text: str) -> SessionDescription:
    """Parse SDP text; raise SdpError naming the line that is wrong."""
    if len(text.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("SDP must start with v=0")
    session_attrs: list[tuple[str, str | None]] = []
    media: list[MediaSection] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        match = _LINE.match(line)
        if match is None:
            raise SdpError(f"line {number}: not of the form x=value: {line[:60]!r}")
        kind, value = match.group(1), match.group(2)
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or parts[0] not in ("audio", "video", "application"):
                raise SdpError(f"line {number}: bad m= line: {value[:60]!r}")
            port = _int_or(parts[1].split("/")[0], -1)
            if not 0 <= port <= 65535:
                raise SdpError(f"line {number}: bad port in m= line")
            if len(media) >= MAX_MEDIA_SECTIONS:
                raise SdpError(f"more than {MAX_MEDIA_SECTIONS} m= sections")
            media.append(MediaSection(parts[0], port, parts[2], parts[3:]))
        elif kind == "a":
            name, sep, attr_value = value.partition(":")
            entry = (name, attr_value if sep else None)
            (media[-1].attributes if media else session_attrs).append(entry)
        elif kind == "c" and media:
            media[-1].connection = value
    return SessionDescription(session_attrs, media)


@dataclass(slots=True)
class AnswerMedia:
    """What the SFU says about one m-section in its answer."""

    kind: str
    mid: str
    proto: str
    port: int  # 0 rejects the m-section
    direction: str = "inactive"
    codecs: list[Codec] = field(default_factory=list)
    extmaps: dict[int, str] = field(default_factory=dict)
    ice_ufrag: str = ""
    ice_pwd: str = ""
    fingerprint: str = ""  # "sha-256 AB:CD:..."
    address: str = "0.0.0.0"
    candidates: list[str] = field(default_factory=list)
    ssrc: int | None = None  # what the SFU sends on this m-section
    cname: str = ""
    msid: tuple[str, str] | None = None
    rejected_formats: list[str] = field(default_factory=list)
    # Data channels (RFC 8841): the SCTP port and the largest message we accept.
    sctp_port: int | None = None
    max_message_size: int | None = None


def build_answer(
    session_id: int, version: int, media: list[AnswerMedia], bundle: list[str] | None
) -> str:
    """Serialize an answer from the SFU (ICE-lite, DTLS server)."""
    out = [
        "v=0",
        f"o=- {session_id} {version} IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=ice-lite",
    ]
    if bundle:
        out.append("a=group:BUNDLE " + " ".join(bundle))
    out.append("a=msid-semantic: WMS *")
    for section in media:
        ip_version = "IP6" if ":" in section.address else "IP4"
        if section.port == 0:
            formats = " ".join(section.rejected_formats or ["0"])
            out += [f"m={section.kind} 0 {section.proto} {formats}", f"c=IN {ip_version} 0.0.0.0"]
            out += [f"a=mid:{section.mid}", "a=inactive"]
            continue
        if section.sctp_port is not None:
            out += [
                f"m={section.kind} {section.port} {section.proto} webrtc-datachannel",
                f"c=IN {ip_version} {section.address}",
                f"a=mid:{section.mid}",
                f"a=ice-ufrag:{section.ice_ufrag}",
                f"a=ice-pwd:{section.ice_pwd}",
                f"a=fingerprint:{section.fingerprint}",
                "a=setup:passive",
                f"a=sctp-port:{section.sctp_port}",
            ]
            if section.max_message_size is not None:
                out.append(f"a=max-message-size:{section.max_message_size}")
            out += [f"a=candidate:{c}" for c in section.candidates]
            out.append("a=end-of-candidates")
            continue
        formats = " ".join(str(c.payload_type) for c in section.codecs)
        out += [
            f"m={section.kind} {section.port} {section.proto} {formats}",
            f"c=IN {ip_version} {section.address}",
            f"a=mid:{section.mid}",
            f"a={section.direction}",
            f"a=ice-ufrag:{section.ice_ufrag}",
            f"a=ice-pwd:{section.ice_pwd}",
            f"a=fingerprint:{section.fingerprint}",
            "a=setup:passive",
            "a=rtcp-mux",
            "a=rtcp-rsize",
        ]
        for ext_id, uri in sorted(section.extmaps.items()):
            out.append(f"a=extmap:{ext_id} {uri}")
        for codec in section.codecs:
            encoding = f"{codec.name}/{codec.clock_rate}"
            if codec.channels > 1:
                encoding += f"/{codec.channels}"
            out.append(f"a=rtpmap:{codec.payload_type} {encoding}")
            out += [f"a=rtcp-fb:{codec.payload_type} {fb}" for fb in codec.rtcp_fbs]
            if codec.fmtp:
                out.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
        if section.msid is not None:
            out.append(f"a=msid:{section.msid[0]} {section.msid[1]}")
        if section.ssrc is not None:
            out.append(f"a=ssrc:{section.ssrc} cname:{section.cname}")
            if section.msid is not None:
                out.append(f"a=ssrc:{section.ssrc} msid:{section.msid[0]} {section.msid[1]}")
        out += [f"a=candidate:{c}" for c in section.candidates]
        out.append("a=end-of-candidates")
    return "\r\n".join(out) + "\r\n"
