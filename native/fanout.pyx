# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Native fan-out: for one incoming packet, every subscriber's copy is rewritten,
SRTP-protected (libsrtp) and sent (sendmmsg) in C, with the GIL released.

The behaviour is that of sfu/routing/fanout.py (PyLeg, PyFanOut), byte for byte;
tests/io/test_native_fanout.py holds the two to the same output.
"""

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from collections import Counter

cdef extern from * nogil:
    """
    #include <arpa/inet.h>
    #include <errno.h>
    #include <netinet/in.h>
    #include <stdint.h>
    #include <string.h>
    #include <sys/socket.h>

    /* libsrtp 2 (the OpenSSL-backed build that the pylibsrtp wheel ships, loaded
       RTLD_GLOBAL by sfu/io/datapath.py before this module): only what is used. */
    typedef struct srtp_ctx_t_ *sfu_srtp_t;
    int srtp_protect(sfu_srtp_t ctx, void *rtp_hdr, int *len_ptr);

    #define SFU_MAX_RTP 3000
    #define SFU_SLOT (SFU_MAX_RTP + 144)
    #define SFU_BATCH 64

    typedef struct {
        sfu_srtp_t srtp;
        struct sockaddr_storage addr;
        socklen_t addrlen;
        uint32_t ssrc, clock_rate;
        uint8_t payload_type, video, synced, paused;
        uint16_t seq_offset, first_seq, initial_seq;
        uint32_t ts_offset, last_ts, initial_ts;
        int32_t last_seq;
        double last_sent_at;
        uint64_t packets_sent, octets_sent;
    } sfu_leg;

    typedef struct {
        uint64_t packets[2], bytes[2];
        uint64_t protect_errors, send_errors, oversized, datagrams_sent;
    } sfu_totals;

    typedef struct {
        int fd;
        sfu_totals totals;
        uint8_t buffers[SFU_BATCH][SFU_SLOT];
        struct iovec iov[SFU_BATCH];
        struct mmsghdr msgs[SFU_BATCH];
    } sfu_datapath;

    static int sfu_seq_newer(uint16_t a, int32_t b) {
        return (int32_t)a != b && (uint16_t)(a - (uint16_t)b) < 0x8000;
    }

    /* The rewritten plaintext for one leg: its length, 0 to send nothing, -1 when the
       leg waits for a keyframe (the caller asks the publisher for one). */
    static int sfu_leg_prepare(sfu_leg *leg, const uint8_t *pkt, int len, int header_size,
                               uint16_t pub_seq, uint32_t pub_ts, int keyframe, double now,
                               uint8_t *out, sfu_totals *totals) {
        if (leg->paused || leg->srtp == NULL || leg->addrlen == 0) return 0;
        if (!leg->synced) {
            uint16_t out_seq;
            uint32_t out_ts;
            if (leg->video && !keyframe) return -1;
            if (leg->last_seq < 0) {
                out_seq = leg->initial_seq;
                out_ts = leg->initial_ts;
            } else {
                int64_t elapsed = (int64_t)((now - leg->last_sent_at) * leg->clock_rate);
                if (elapsed < 1) elapsed = 1;
                out_seq = (uint16_t)(leg->last_seq + 1);
                out_ts = leg->last_ts + (uint32_t)elapsed;
            }
            leg->seq_offset = (uint16_t)(out_seq - pub_seq);
            leg->ts_offset = out_ts - pub_ts;
            leg->last_seq = (uint16_t)(out_seq - 1);
            leg->first_seq = out_seq;
            leg->synced = 1;
        }
        int cc = pkt[0] & 0x0F;
        int payload = len - header_size;
        int out_len = 12 + 4 * cc + payload;
        if (payload < 0 || out_len > SFU_MAX_RTP) {
            totals->oversized++;
            return 0;
        }
        uint16_t seq = (uint16_t)(pub_seq + leg->seq_offset);
        uint32_t ts = pub_ts + leg->ts_offset;
        if (sfu_seq_newer(seq, leg->last_seq)) {
            leg->last_seq = seq;
            leg->last_ts = ts;
            leg->last_sent_at = now;
        }
        out[0] = pkt[0] & 0xEF; /* X bit cleared: extensions are not forwarded */
        out[1] = (pkt[1] & 0x80) | leg->payload_type;
        out[2] = seq >> 8; out[3] = seq & 0xFF;
        out[4] = ts >> 24; out[5] = (ts >> 16) & 0xFF; out[6] = (ts >> 8) & 0xFF; out[7] = ts & 0xFF;
        out[8] = leg->ssrc >> 24; out[9] = (leg->ssrc >> 16) & 0xFF;
        out[10] = (leg->ssrc >> 8) & 0xFF; out[11] = leg->ssrc & 0xFF;
        memcpy(out + 12, pkt + 12, 4 * cc);
        memcpy(out + 12 + 4 * cc, pkt + header_size, payload);
        leg->packets_sent++;
        leg->octets_sent += payload;
        return out_len;
    }

    static void sfu_flush(sfu_datapath *dp, int count) {
        int done = 0;
        while (done < count) {
            int sent = sendmmsg(dp->fd, dp->msgs + done, count - done, MSG_DONTWAIT);
            if (sent > 0) {
                dp->totals.datagrams_sent += sent;
                done += sent;
            } else if (sent < 0 && errno == EINTR) {
                continue;
            } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                /* Socket buffer full: overload drops whole packets, never waits. */
                dp->totals.send_errors += count - done;
                return;
            } else {
                dp->totals.send_errors++; /* this one datagram failed: skip it */
                done++;
            }
        }
    }

    static int sfu_fanout(sfu_datapath *dp, sfu_leg **legs, int n, int kind,
                          const uint8_t *pkt, int len, int header_size, uint16_t pub_seq,
                          uint32_t pub_ts, int keyframe, double now) {
        int wants_keyframe = 0, queued = 0;
        for (int i = 0; i < n; i++) {
            sfu_leg *leg = legs[i];
            uint8_t *out = dp->buffers[queued];
            int out_len = sfu_leg_prepare(leg, pkt, len, header_size, pub_seq, pub_ts,
                                          keyframe, now, out, &dp->totals);
            if (out_len < 0) { wants_keyframe = 1; continue; }
            if (out_len == 0) continue;
            int plain_len = out_len;
            if (srtp_protect(leg->srtp, out, &out_len) != 0) {
                dp->totals.protect_errors++;
                continue;
            }
            dp->totals.packets[kind]++;
            dp->totals.bytes[kind] += plain_len;
            dp->iov[queued].iov_base = out;
            dp->iov[queued].iov_len = out_len;
            memset(&dp->msgs[queued], 0, sizeof(dp->msgs[queued]));
            dp->msgs[queued].msg_hdr.msg_name = &leg->addr;
            dp->msgs[queued].msg_hdr.msg_namelen = leg->addrlen;
            dp->msgs[queued].msg_hdr.msg_iov = &dp->iov[queued];
            dp->msgs[queued].msg_hdr.msg_iovlen = 1;
            if (++queued == SFU_BATCH) {
                sfu_flush(dp, queued);
                queued = 0;
            }
        }
        if (queued) sfu_flush(dp, queued);
        return wants_keyframe;
    }

    static int sfu_set_address(sfu_leg *leg, const char *host, int port) {
        memset(&leg->addr, 0, sizeof(leg->addr));
        struct sockaddr_in *v4 = (struct sockaddr_in *)&leg->addr;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&leg->addr;
        if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
            v4->sin_family = AF_INET;
            v4->sin_port = htons((uint16_t)port);
            leg->addrlen = sizeof(*v4);
            return 0;
        }
        if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons((uint16_t)port);
            leg->addrlen = sizeof(*v6);
            return 0;
        }
        leg->addrlen = 0;
        return -1;
    }
    """
    ctypedef void *sfu_srtp_t
    ctypedef struct sfu_leg:
        sfu_srtp_t srtp
        unsigned int addrlen
        uint32_t ssrc
        uint32_t clock_rate
        uint8_t payload_type
        uint8_t video
        uint8_t synced
        uint8_t paused
        uint16_t seq_offset
        uint16_t first_seq
        uint16_t initial_seq
        uint32_t ts_offset
        uint32_t last_ts
        uint32_t initial_ts
        int32_t last_seq
        double last_sent_at
        uint64_t packets_sent
        uint64_t octets_sent
    ctypedef struct sfu_totals:
        uint64_t packets[2]
        uint64_t bytes[2]
        uint64_t protect_errors
        uint64_t send_errors
        uint64_t oversized
        uint64_t datagrams_sent
    ctypedef struct sfu_datapath:
        int fd
        sfu_totals totals
    int sfu_fanout(sfu_datapath *dp, sfu_leg **legs, int n, int kind, const uint8_t *pkt,
                   int length, int header_size, uint16_t pub_seq, uint32_t pub_ts,
                   int keyframe, double now)
    int sfu_set_address(sfu_leg *leg, const char *host, int port)

_KINDS = {"audio": 0, "video": 1}


cdef class NativeLeg:
    """One subscriber's numbering and route, in a C struct the fan-out reads directly."""

    cdef sfu_leg *leg
    cdef object _srtp_owner  # keeps the libsrtp context alive while the leg points at it
    cdef object _addr

    def __cinit__(self, uint32_t ssrc, int payload_type, bint video, uint32_t clock_rate,
                  tuple initial):
        self.leg = <sfu_leg *>calloc(1, sizeof(sfu_leg))
        if self.leg == NULL:
            raise MemoryError()
        self.leg.ssrc = ssrc
        self.leg.payload_type = payload_type
        self.leg.video = video
        self.leg.clock_rate = clock_rate
        self.leg.initial_seq = initial[0]
        self.leg.initial_ts = initial[1]
        self.leg.last_seq = -1
        self._srtp_owner = None
        self._addr = None

    def __dealloc__(self):
        free(self.leg)

    def set_route(self, srtp, addr):
        """Where to send: both set means ready; either None stops sending."""
        if srtp is None or addr is None:
            self.leg.srtp = NULL
            self.leg.addrlen = 0
            self._srtp_owner = None
            self._addr = None
            return
        host = addr[0].encode("ascii")
        if sfu_set_address(self.leg, host, addr[1]) != 0:
            raise ValueError(f"not an IP address: {addr[0]!r}")
        self.leg.srtp = <sfu_srtp_t><uintptr_t>srtp.outbound_handle()
        self._srtp_owner = srtp
        self._addr = addr

    @property
    def srtp(self):
        return self._srtp_owner

    @property
    def addr(self):
        return self._addr

    @property
    def ready(self):
        return self.leg.srtp != NULL and self.leg.addrlen != 0

    @property
    def ssrc(self):
        return self.leg.ssrc

    @property
    def payload_type(self):
        return self.leg.payload_type

    @payload_type.setter
    def payload_type(self, int value):
        self.leg.payload_type = value

    @property
    def video(self):
        return bool(self.leg.video)

    @property
    def clock_rate(self):
        return self.leg.clock_rate

    @property
    def synced(self):
        return bool(self.leg.synced)

    @synced.setter
    def synced(self, bint value):
        self.leg.synced = value

    @property
    def paused(self):
        return bool(self.leg.paused)

    @paused.setter
    def paused(self, bint value):
        self.leg.paused = value

    @property
    def seq_offset(self):
        return self.leg.seq_offset

    @property
    def ts_offset(self):
        return self.leg.ts_offset

    @property
    def last_seq(self):
        return self.leg.last_seq

    @property
    def last_ts(self):
        return self.leg.last_ts

    @property
    def last_sent_at(self):
        return self.leg.last_sent_at

    @property
    def first_seq(self):
        return self.leg.first_seq

    @property
    def initial_seq(self):
        return self.leg.initial_seq

    @property
    def initial_ts(self):
        return self.leg.initial_ts

    @property
    def packets_sent(self):
        return self.leg.packets_sent

    @property
    def octets_sent(self):
        return self.leg.octets_sent


cdef class NativeFanOut:
    """One track's subscribers as an array of C legs."""

    cdef sfu_leg **legs
    cdef int count
    cdef int kind_index
    cdef list _members
    cdef NativeDatapath datapath
    cdef readonly str kind

    def __cinit__(self, str kind, NativeDatapath datapath):
        self.kind = kind
        self.kind_index = _KINDS[kind]
        self.datapath = datapath
        self._members = []
        self.legs = NULL
        self.count = 0

    def __dealloc__(self):
        free(self.legs)

    cdef _rebuild(self):
        cdef int n = len(self._members)
        cdef sfu_leg **legs = <sfu_leg **>malloc(max(n, 1) * sizeof(sfu_leg *))
        if legs == NULL:
            raise MemoryError()
        for i in range(n):
            legs[i] = (<NativeLeg>self._members[i]).leg
        free(self.legs)
        self.legs = legs
        self.count = n

    @property
    def legs(self):
        return list(self._members)

    def add(self, NativeLeg leg):
        if leg not in self._members:
            self._members.append(leg)
            self._rebuild()

    def remove(self, NativeLeg leg):
        if leg in self._members:
            self._members.remove(leg)
            self._rebuild()

    def forward(self, bytes packet, header, bint keyframe, double now):
        """Send to every leg; True if some leg waits for a keyframe."""
        cdef const uint8_t *data = <const uint8_t *>PyBytes_AS_STRING(packet)
        cdef int length = PyBytes_GET_SIZE(packet)
        cdef int header_size = header.header_size
        cdef uint16_t seq = header.sequence_number
        cdef uint32_t ts = header.timestamp
        cdef int wants
        if self.count == 0:
            return False
        with nogil:
            wants = sfu_fanout(self.datapath.dp, self.legs, self.count, self.kind_index,
                               data, length, header_size, seq, ts, keyframe, now)
        return bool(wants)


cdef class NativeDatapath:
    """Makes native legs and fan-outs; owns the send buffers and the counters."""

    cdef sfu_datapath *dp
    name = "native"

    def __cinit__(self):
        self.dp = <sfu_datapath *>calloc(1, sizeof(sfu_datapath))
        if self.dp == NULL:
            raise MemoryError()
        self.dp.fd = -1

    def __dealloc__(self):
        free(self.dp)

    def set_socket(self, int fileno):
        """The UDP socket every leg sends from (the media port)."""
        self.dp.fd = fileno

    def new_leg(self, uint32_t ssrc, int payload_type, bint video, uint32_t clock_rate,
                tuple initial):
        return NativeLeg(ssrc, payload_type, video, clock_rate, initial)

    def new_fanout(self, str kind):
        return NativeFanOut(kind, self)

    @property
    def forwarded_packets(self):
        return Counter({"audio": self.dp.totals.packets[0], "video": self.dp.totals.packets[1]})

    @property
    def forwarded_bytes(self):
        return Counter({"audio": self.dp.totals.bytes[0], "video": self.dp.totals.bytes[1]})

    @property
    def errors(self):
        return Counter(
            {
                "protect": self.dp.totals.protect_errors,
                "send": self.dp.totals.send_errors,
                "oversized": self.dp.totals.oversized,
            }
        )

    @property
    def datagrams_sent(self):
        """Datagrams sent by sendmmsg (the Python path counts its own in the worker)."""
        return self.dp.totals.datagrams_sent
