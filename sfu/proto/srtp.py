"""SRTP/SRTCP contexts for one DTLS association (RFC 3711, RFC 7714), through libsrtp 2.

pylibsrtp provides the OpenSSL-backed libsrtp and its policy objects; its Session
copies every packet into a fixed 1500-byte buffer, which refuses RTP over 1356 bytes
(GStreamer payloads up to 1400). This module drives libsrtp through the same cffi
binding with one reused buffer sized for the largest datagram the worker accepts.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from pylibsrtp import ERRORS, SRTP_MAX_SRTCP_TRAILER_LEN, SRTP_MAX_TRAILER_LEN, Policy, _binding
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

# libsrtp guesses a packet's rollover counter (ROC) from its sequence number and the
# last one it accepted (RFC 3711 3.3.1). After more than 2^15 consecutive losses of one
# stream the guess is wrong, and since a failed packet never moves the replay window,
# every later packet fails too. After RESYNC_AFTER consecutive failures of one SSRC we
# try the packet at the stream's ROC and the next few (libsrtp's replay checks still
# apply), once per RESYNC_AFTER failures so that junk cannot buy many trial decrypts.
RESYNC_AFTER = 8
RESYNC_ROC_STEPS = (0, 1, 2, 3)
# Streams with failures being counted, at most (an SSRC stays only while failing).
_MAX_FAILING_STREAMS = 64

# The rollover-counter calls are not in pylibsrtp's cffi binding; the same shared
# object exports them.
_lib_c = ctypes.CDLL(_binding.__file__)
_get_stream_roc = _lib_c.srtp_get_stream_roc
_get_stream_roc.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
_get_stream_roc.restype = ctypes.c_int
_set_stream_roc = _lib_c.srtp_set_stream_roc
_set_stream_roc.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
_set_stream_roc.restype = ctypes.c_int


# srtp_err_status_replay_fail and srtp_err_status_replay_old (libsrtp 2's srtp.h).
_REPLAY_STATUSES = frozenset({9, 10})


class SrtpError(Exception):
    """A packet that libsrtp refused (authentication, replay, size): drop it."""

    code = "srtp"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def is_replay(self) -> bool:
        """libsrtp's replay protection refused it: seen before, or older than the window."""
        return self.status in _REPLAY_STATUSES


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
            raise SrtpError(_describe(status), status)
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
        self._failures: dict[int, int] = {}
        self.roc_resyncs = 0
        self.on_roc_resync: Callable[[int], None] | None = None

    def protect(self, packet: bytes) -> bytes:
        return self._tx.run(lib.srtp_protect, packet)

    def outbound_handle(self) -> int:
        """Address of the outbound srtp_t, for the native datapath to protect with.
        The caller keeps this SrtpPair alive for as long as it uses the address."""
        return int(ffi.cast("uintptr_t", self._tx.handle[0]))

    def inbound_handle(self) -> int:
        """Address of the inbound srtp_t, for the native datapath to unprotect with."""
        return int(ffi.cast("uintptr_t", self._rx.handle[0]))

    @property
    def recovering(self) -> bool:
        """Some stream failed to authenticate since its last good packet: while so,
        every packet comes here, where failures are counted towards a resync."""
        return bool(self._failures)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._tx.run(lib.srtp_protect_rtcp, packet)

    def unprotect(self, packet: bytes) -> bytes:
        """Decrypt and authenticate an SRTP packet; raises SrtpError."""
        try:
            plain = self._rx.run(lib.srtp_unprotect, packet)
        except SrtpError:
            recovered = self._after_failure(packet)
            if recovered is None:
                raise
            return recovered
        if self._failures:
            self._failures.pop(int.from_bytes(packet[8:12], "big"), None)
        return plain

    def _after_failure(self, packet: bytes) -> bytes | None:
        if len(packet) < 12:
            return None
        ssrc = int.from_bytes(packet[8:12], "big")
        failures = self._failures.pop(ssrc, 0) + 1
        if len(self._failures) >= _MAX_FAILING_STREAMS:
            self._failures.pop(next(iter(self._failures)))
        self._failures[ssrc] = failures
        if failures % RESYNC_AFTER:
            return None
        plain = self._resync_roc(packet, ssrc)
        if plain is not None:
            del self._failures[ssrc]
            self.roc_resyncs += 1
            if self.on_roc_resync is not None:
                self.on_roc_resync(ssrc)
        return plain

    def _resync_roc(self, packet: bytes, ssrc: int) -> bytes | None:
        session = int(ffi.cast("uintptr_t", self._rx.handle[0]))
        roc = ctypes.c_uint32()
        if _get_stream_roc(session, ssrc, ctypes.byref(roc)) != 0:
            return None  # libsrtp has no stream for it: nothing ever authenticated
        try:
            for step in RESYNC_ROC_STEPS:
                candidate = (roc.value + step) & 0xFFFFFFFF
                if candidate == 0:
                    continue  # to libsrtp a pending ROC of 0 means "none"
                _set_stream_roc(session, ssrc, candidate)
                try:
                    return self._rx.run(lib.srtp_unprotect, packet)
                except SrtpError:
                    continue
            return None
        finally:
            # Success within half a window of the old index leaves it pending: clear it.
            _set_stream_roc(session, ssrc, 0)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        return self._rx.run(lib.srtp_unprotect_rtcp, packet)
