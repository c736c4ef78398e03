"""The aiortc frame hooks (benchmarks/loadgen/e2ee_aiortc.py) on aiortc's own objects,
without a network: what leaves the sender hook is the encrypted frame in VP8 payloads
the SFU still recognizes, and the receiver hook decides what reaches the decoder."""

from __future__ import annotations

from types import SimpleNamespace

from aiortc import RTCRtpReceiver
from aiortc.codecs.vpx import PACKET_MAX, VpxPayloadDescriptor, vp8_depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RtpPacket

from benchmarks.loadgen.e2ee import ReceiverKeyring, SenderKey
from benchmarks.loadgen.e2ee_aiortc import (
    hook_receiver,
    hook_sender,
    vp8_depacketize,
    vp8_packetize,
)
from sfu.wire.codecs import is_keyframe

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)
# A VP8 keyframe: frame tag (P=0), start code, 640x480, then the compressed data.
KEYFRAME = bytes([0x50, 0x2A, 0x01, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
KEYFRAME += bytes(range(256)) * 12
INTERFRAME = bytes([0x31, 0x02, 0x00]) + bytes(700)


def fake_sender(frames: list[RTCEncodedFrame | None]) -> SimpleNamespace:
    """Something with aiortc's ``_next_encoded_frame``, handing out ``frames``."""
    queue = list(frames)

    async def next_encoded_frame(codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
        return queue.pop(0)

    return SimpleNamespace(_next_encoded_frame=next_encoded_frame)


async def test_the_vp8_hook_encrypts_whole_frames_and_the_sfu_still_sees_keyframes() -> None:
    key = SenderKey.generate(0)
    frames = [
        RTCEncodedFrame(vp8_packetize(KEYFRAME, 1234), 3000, None),  # type: ignore[arg-type]
        RTCEncodedFrame(vp8_packetize(INTERFRAME, 1235), 6000, None),  # type: ignore[arg-type]
    ]
    sender = fake_sender(list(frames))
    hook_sender(sender, key.encrypt_frame)  # type: ignore[arg-type]
    keyring = ReceiverKeyring()
    keyring.add_key(0, key.base_key, 0.0)

    for plain, picture_id, keyframe in ((KEYFRAME, 1234, True), (INTERFRAME, 1235, False)):
        sent = await sender._next_encoded_frame(VP8)
        assert sent is not None and all(len(p) <= PACKET_MAX for p in sent.payloads)
        descriptors = [VpxPayloadDescriptor.parse(p)[0] for p in sent.payloads]
        assert [d.partition_start for d in descriptors] == [1] + [0] * (len(descriptors) - 1)
        assert {d.picture_id for d in descriptors} == {picture_id}
        # The SFU's keyframe detection reads the clear prefix after the descriptor.
        assert is_keyframe("VP8", sent.payloads[0]) is keyframe
        wire = b"".join(vp8_depayload(p) for p in sent.payloads)
        assert wire != plain and len(wire) == len(plain) + 1 + 16  # header (CTR < 8), tag
        assert keyring.decrypt_frame(wire, "vp8", 0.0) == plain


async def test_the_sender_hook_drops_what_the_transform_refuses_and_splits_audio_by_frame() -> None:
    seen: list[bytes] = []

    def transform(frame: bytes, mime_type: str) -> bytes | None:
        seen.append(frame)
        return None if frame == b"drop" else frame[::-1]

    sender = fake_sender([
        RTCEncodedFrame([b"drop"], 0, None),  # type: ignore[arg-type]
        RTCEncodedFrame([b"ab", b"drop", b"cd"], 960, 10),
        None,
    ])  # fmt: skip
    hook_sender(sender, transform)  # type: ignore[arg-type]
    assert await sender._next_encoded_frame(OPUS) is None
    kept = await sender._next_encoded_frame(OPUS)
    assert kept is not None and kept.payloads == [b"ba", b"dc"] and kept.audio_level == 10
    assert await sender._next_encoded_frame(OPUS) is None  # nothing encoded: nothing to do
    assert seen == [b"drop", b"ab", b"drop", b"cd"]


def test_vp8_packetize_and_depacketize_are_inverse_even_for_an_empty_frame() -> None:
    for frame in (b"", b"x", KEYFRAME):
        assert vp8_depacketize(vp8_packetize(frame, 77)) == (frame, 77)


def test_the_receiver_hook_replaces_or_drops_whole_frames_before_the_decoder() -> None:
    receiver = RTCRtpReceiver("video", SimpleNamespace(state="new"))  # type: ignore[arg-type]
    hook_receiver(receiver, lambda data: None if data == b"bad" else data.upper())
    buffer = vars(receiver)["_RTCRtpReceiver__jitter_buffer"]

    def packet(seq: int, timestamp: int, data: bytes) -> RtpPacket:
        rtp = RtpPacket(payload_type=97, sequence_number=seq, timestamp=timestamp)
        rtp._data = data  # type: ignore[attr-defined]  # what the receiver's depayloader sets
        return rtp

    assert buffer.add(packet(1, 100, b"ab"))[1] is None
    assert buffer.add(packet(2, 100, b"cd"))[1] is None
    frame = buffer.add(packet(3, 200, b"bad"))[1]  # a new timestamp completes frame 100
    assert frame is not None and frame.data == b"ABCD"
    assert buffer.add(packet(4, 300, b"ef"))[1] is None  # frame 200 was dropped
    frame = buffer.add(packet(5, 400, b"gh"))[1]
    assert frame is not None and frame.data == b"EF"
