"""SRTP/SRTCP contexts for one DTLS association (RFC 3711, RFC 7714), through libsrtp."""

from __future__ import annotations

from pylibsrtp import Error as LibSrtpError
from pylibsrtp import Policy, Session

from sfu.proto.dtls import SrtpKeys

_PROFILES = {
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}
# Replay window (RFC 3711 3.3.2): wide enough for video bursts reordered on the path.
REPLAY_WINDOW = 1024

SrtpError = LibSrtpError


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
        self._tx = Session(tx)
        self._rx = Session(rx)

    def protect(self, packet: bytes) -> bytes:
        return bytes(self._tx.protect(packet))

    def protect_rtcp(self, packet: bytes) -> bytes:
        return bytes(self._tx.protect_rtcp(packet))

    def unprotect(self, packet: bytes) -> bytes:
        """Decrypt and authenticate an SRTP packet; raises SrtpError."""
        return bytes(self._rx.unprotect(packet))

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        return bytes(self._rx.unprotect_rtcp(packet))
