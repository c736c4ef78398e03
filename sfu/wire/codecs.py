"""Keyframe detection from RTP payloads, per codec payload format.

Only the RTP payload descriptors and the first bytes of the codec bitstream are inspected;
nothing is decoded. Every function here returns False for truncated or malformed input
instead of raising, because it runs on untrusted packets in the forwarding path.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["is_keyframe"]


def _vp8_is_keyframe(payload: bytes) -> bool:
    """RFC 7741: S=1 and PID=0 start partition 0, whose header has P=0 on keyframes."""
    size = len(payload)
    if size < 1:
        return False
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x07:
        return False
    pos = 1
    if b0 & 0x80:
        if size < 2:
            return False
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits depending on its M bit
            if pos >= size:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: one shared TID/Y/KEYIDX byte
            pos += 1
    if pos >= size:
        return False
    return not payload[pos] & 0x01


def _vp9_is_keyframe(payload: bytes) -> bool:
    """draft-ietf-payload-vp9: B=1, P=0 and, when layer indices are present, spatial id 0.

    A layer frame with P=0 in an upper spatial layer is not decodable without the base layer,
    so it does not count as a point where a receiver can start.
    """
    size = len(payload)
    if size < 1:
        return False
    b0 = payload[0]
    has_pid = b0 & 0x80
    inter_picture = b0 & 0x40
    has_layers = b0 & 0x20
    flexible = b0 & 0x10
    begin = b0 & 0x08
    has_ss = b0 & 0x02
    if not begin or inter_picture:
        return False
    pos = 1
    if has_pid:
        if pos >= size:
            return False
        pos += 2 if payload[pos] & 0x80 else 1
    if has_layers:
        if pos >= size:
            return False
        if (payload[pos] >> 1) & 0x07:
            return False
        # Non-flexible mode carries TL0PICIDX after the layer byte.
        pos += 1 if flexible else 2
    # P=0 here, so no reference indices (P_DIFF) follow even in flexible mode.
    if has_ss:
        if pos >= size:
            return False
        ss = payload[pos]
        pos += 1
        if ss & 0x10:  # Y: width and height for each spatial layer
            pos += 4 * ((ss >> 5) + 1)
        if ss & 0x08:  # G: picture group description
            if pos >= size:
                return False
            groups = payload[pos]
            pos += 1
            for _ in range(groups):
                if pos >= size:
                    return False
                pos += 1 + ((payload[pos] >> 2) & 0x03)
    return pos < size


_H264_IDR = 5
_H264_SPS = 7
_H264_STAP_A = 24
_H264_FU_A = 28
_H264_KEY_TYPES = (_H264_IDR, _H264_SPS)


def _h264_is_keyframe(payload: bytes) -> bool:
    """RFC 6184: an IDR slice or SPS, alone, aggregated in STAP-A, or starting an FU-A."""
    size = len(payload)
    if size < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in _H264_KEY_TYPES:
        return True
    if nal_type == _H264_STAP_A:
        pos = 1
        while pos + 2 <= size:
            nal_size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if nal_size == 0 or pos + nal_size > size:
                return False
            if payload[pos] & 0x1F in _H264_KEY_TYPES:
                return True
            pos += nal_size
        return False
    if nal_type == _H264_FU_A:
        if size < 2:
            return False
        fu = payload[1]
        return bool(fu & 0x80) and fu & 0x1F in _H264_KEY_TYPES
    return False


def _av1_is_keyframe(payload: bytes) -> bool:
    """AV1 RTP spec: N=1 marks the first packet of a coded video sequence (Z must be 0)."""
    return len(payload) >= 2 and payload[0] & 0x88 == 0x08


_DETECTORS: dict[str, Callable[[bytes], bool]] = {
    "VP8": _vp8_is_keyframe,
    "VP9": _vp9_is_keyframe,
    "H264": _h264_is_keyframe,
    "AV1": _av1_is_keyframe,
}


def is_keyframe(codec: str, payload: bytes) -> bool:
    """True if ``payload`` (RTP payload, padding removed) starts a keyframe of ``codec``."""
    detector = _DETECTORS.get(codec)
    if detector is None:
        detector = _DETECTORS.get(codec.upper())
        if detector is None:
            return False
    try:
        return detector(payload)
    except (IndexError, ValueError):  # pragma: no cover - defensive, detectors bound-check
        return False
