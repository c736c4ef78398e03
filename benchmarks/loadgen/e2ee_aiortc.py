"""Frame transforms for aiortc: the Python counterpart of the page's RTCRtpScriptTransform.

aiortc has no encoded-transform API, so these hooks sit at the two places where a whole
encoded frame exists (aiortc 1.16; each hook fails loudly if aiortc changes shape):

* Sending: ``RTCRtpSender._next_encoded_frame(codec)`` returns one encoded frame,
  already cut into RTP payloads. The hook (an attribute on that one sender) runs the
  transform on the whole frame and hands aiortc the payloads of the result. For VP8
  it strips the payload descriptors (RFC 7741), transforms the frame and packetizes
  it again under the same picture ID, so the descriptor stays outside the encryption,
  as in Chromium, and the frame's first bytes (the VP8 frame tag and keyframe header
  that e2ee.clear_prefix_len keeps in clear) lead the first packet, where the SFU and
  the receiver's depacketizer look for them. Audio payloads are one frame each.
  The transform runs on the event loop, not in the encoder's thread, so all of a
  participant's senders can share one ``SenderKeys`` without a lock. Keyframe requests
  still reach aiortc's encoder: the hook leaves everything else to the sender.
* Receiving: the receiver's jitter buffer hands back whole depayloaded frames before
  they are queued for the decoder thread. The hook wraps that buffer's ``add`` (on that
  one receiver) and runs the transform on each frame; a frame the transform drops
  never reaches the decoder.

A transform takes the frame's bytes and returns the bytes to use, or None to drop the
frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.vpx import PACKET_MAX, VpxPayloadDescriptor
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RtpPacket

SendTransform = Callable[[bytes, str], "bytes | None"]  # (frame, MIME type) -> frame or None
ReceiveTransform = Callable[[bytes], "bytes | None"]


class HookError(RuntimeError):
    """aiortc does not have the internals a hook needs (a version this was not made for)."""


def _private(obj: object, owner: str, name: str) -> Any:
    """A name-mangled attribute of aiortc's ``owner`` class on ``obj``."""
    try:
        return vars(obj)[f"_{owner}__{name}"]
    except KeyError:
        raise HookError(f"aiortc {owner} has no {name!r}: frame hooks need aiortc 1.16") from None


def vp8_packetize(frame: bytes, picture_id: int) -> list[bytes]:
    """RTP payloads for one VP8 frame: a descriptor with the picture ID on each, S=1 on
    the first (RFC 7741 section 4.2), each payload at most aiortc's PACKET_MAX bytes."""
    first = VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=picture_id)
    rest = VpxPayloadDescriptor(partition_start=0, partition_id=0, picture_id=picture_id)
    payloads: list[bytes] = []
    offset = 0
    while offset < len(frame) or not payloads:
        descriptor = bytes(rest if payloads else first)
        room = PACKET_MAX - len(descriptor)
        payloads.append(descriptor + frame[offset : offset + room])
        offset += room
    return payloads


def vp8_depacketize(payloads: list[bytes]) -> tuple[bytes, int | None]:
    """(frame, picture ID of the first payload) from one frame's VP8 RTP payloads."""
    parts: list[bytes] = []
    picture_id: int | None = None
    for index, payload in enumerate(payloads):
        descriptor, data = VpxPayloadDescriptor.parse(payload)
        if index == 0:
            picture_id = descriptor.picture_id
        parts.append(data)
    return b"".join(parts), picture_id


def _transform_encoded(
    encoded: RTCEncodedFrame, codec: RTCRtpCodecParameters, transform: SendTransform
) -> RTCEncodedFrame | None:
    if codec.name.lower() == "vp8":
        frame, picture_id = vp8_depacketize(encoded.payloads)
        out = transform(frame, codec.mimeType)
        if out is None:
            return None
        encoded.payloads = vp8_packetize(out, picture_id if picture_id is not None else 0)
        return encoded
    # Audio: every payload is a frame of its own. Another video codec (H.264) comes
    # here cut into packets: the transform sees its MIME type and must refuse it.
    transformed = [transform(payload, codec.mimeType) for payload in encoded.payloads]
    kept = [payload for payload in transformed if payload is not None]
    if not kept:
        return None
    encoded.payloads = kept
    return encoded


def hook_sender(sender: RTCRtpSender, transform: SendTransform) -> None:
    """Run ``transform`` on every frame ``sender`` encodes, before it is packetized."""
    original: Callable[[RTCRtpCodecParameters], Awaitable[RTCEncodedFrame | None]] = (
        sender._next_encoded_frame
    )

    async def next_encoded_frame(codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
        encoded = await original(codec)
        if encoded is None:
            return None
        return _transform_encoded(encoded, codec, transform)

    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]


def hook_receiver(receiver: RTCRtpReceiver, transform: ReceiveTransform) -> None:
    """Run ``transform`` on every whole frame ``receiver`` assembles, before decoding."""
    buffer = _private(receiver, "RTCRtpReceiver", "jitter_buffer")
    original: Callable[[RtpPacket], tuple[bool, JitterFrame | None]] = buffer.add

    def add(packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        picture_lost, frame = original(packet)
        if frame is not None:
            data = transform(frame.data)
            if data is None:
                return picture_lost, None
            frame.data = data
        return picture_lost, frame

    buffer.add = add


async def request_keyframe(receiver: RTCRtpReceiver) -> int:
    """Send a PLI for every source ``receiver`` heard lately; returns how many."""
    sources = receiver.getSynchronizationSources()
    for source in sources:
        await receiver._send_rtcp_pli(source.source)
    return len(sources)
