"""SRTP/SRTCP contexts for one DTLS association (RFC 3711, RFC 7714), through libsrtp 2.

pylibsrtp provides the OpenSSL-backed libsrtp and its policy objects; its Session
copies every packet into a fixed 1500-byte buffer, which refuses RTP over 1356 bytes
(GStreamer payloads up to 1400). This module drives libsrtp through the same cffi
binding with one reused buffer sized for the largest datagram the worker accepts.
"""

from __future__ import annotations

from typing import Any

from pylibsrtp import ERRORS, SRTP_MAX_SRTCP_TRAILER_LEN, SRTP_MAX_TRAILER_LEN, Policy
from pylibsrtp._binding import ffi, lib

from sfu.proto.dtls import SrtpKeys

_PROFILES = {
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}
# Replay window (RFC 3711 3.3.2): wide enough for video bursts reordered on the path.
REPLAY_WINDOW = 1024
# Largest packet accepted in either direction, before the SRTP trailer.
MAX_PACKET = 3000
_BUFFER_SIZE = MAX_PACKET + max(SRTP_MAX_TRAILER_LEN, SRTP_MAX_SRTCP_TRAILER_LEN)


class SrtpError(Exception):
    """A packet that libsrtp refused (authentication, replay, size): drop it."""

    code = "srtp"


def _describe(status: int) -> str:
    return ERRORS[status] if 0 <= status < len(ERRORS) else f"libsrtp status {status}"


class _Context:
    """One srtp_t with its own working buffer."""

    def __init__(self, policy: Policy) -> None:
        handle = ffi.new("srtp_t *")
        status = lib.srtp_create(handle, policy._policy)
        if status != lib.srtp_err_status_ok:
            raise SrtpError(f"srtp_create failed: {_describe(status)}")
        self.handle: Any = ffi.gc(handle, lambda h: lib.srtp_dealloc(h[0]))
        self._data: Any = ffi.new("char[]", _BUFFER_SIZE)
        self._view: Any = ffi.buffer(self._data)
        self._length: Any = ffi.new("int *")

    def run(self, func: Any, packet: bytes) -> bytes:
        size = len(packet)
        if size > MAX_PACKET:
            raise SrtpError(f"packet of {size} bytes is larger than {MAX_PACKET}")
        self._view[0:size] = packet
        self._length[0] = size
        status = func(self.handle[0], self._data, self._length)
        if status != lib.srtp_err_status_ok:
            raise SrtpError(_describe(status))
        return bytes(self._view[0 : self._length[0]])


class SrtpPair:
    """Inbound and outbound SRTP sessions keyed from one DTLS handshake."""

    def __init__(self, keys: SrtpKeys) -> None:
        profile = _PROFILES[keys.profile]
        self.profile = keys.profile
        tx = Policy(key=keys.local_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        # NACK answers resend a packet with the same sequence number.
        tx.allow_repeat_tx = True
        tx.window_size = REPLAY_WINDOW
        rx = Policy(key=keys.remote_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        rx.window_size = REPLAY_WINDOW
        self._tx = _Context(tx)
        self._rx = _Context(rx)

    def protect(self, packet: bytes) -> bytes:
        return self._tx.run(lib.srtp_protect, packet)

    def outbound_handle(self) -> int:
        """Address of the outbound srtp_t, for the native datapath to protect with.
        The caller keeps this SrtpPair alive for as long as it uses the address."""
        return int(ffi.cast("uintptr_t", self._tx.handle[0]))

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._tx.run(lib.srtp_protect_rtcp, packet)

    def unprotect(self, packet: bytes) -> bytes:
        """Decrypt and authenticate an SRTP packet; raises SrtpError."""
        return self._rx.run(lib.srtp_unprotect, packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        return self._rx.run(lib.srtp_unprotect_rtcp, packet)
