# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The native datapath: Python objects over the C in native/datapath.h.

Per packet, everything runs in C with the GIL released: `NativeDatapath.receive` reads
a batch with recvmmsg, and for RTP from a known address and SSRC unprotects it, updates
the track's receive state (rate limit, RFC 3550 statistics, NACK cache, keyframe
detection) and fans it out to every leg (rewrite, libsrtp protect, sendmmsg). Python
gets back only what needs a decision. Python installs routes and keys, and reads
state through the objects here.

The behaviour is that of the pure-Python path (sfu/routing/fanout.py, track.py,
transport.py), byte for byte; tests/io/test_native_fanout.py and
tests/io/test_native_receive.py hold the two to the same output.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

import time
from collections import Counter

from sfu.wire.rtcp import ReportBlock, ntp_middle32

cdef extern from "datapath.h" nogil:
    ctypedef void *sfu_srtp_t
    int SFU_BATCH
    int SFU_CACHE_SIZE
    int SFU_LATENCY_BUCKETS
    int SFU_RX_PYTHON
    int SFU_EV_KEYFRAME
    int SFU_EV_SHED
    int SFU_AUDIO
    int SFU_VIDEO
    int SFU_CODEC_NONE
    int SFU_CODEC_VP8
    int SFU_CODEC_VP9
    int SFU_CODEC_H264
    int SFU_CODEC_AV1
    int SFU_IN_MUTED
    int SFU_IN_NO_LEGS
    ctypedef unsigned int socklen_t
    struct sockaddr:
        unsigned short sa_family
    struct sockaddr_storage:
        unsigned short ss_family
    ctypedef struct sfu_leg:
        sfu_srtp_t srtp
        socklen_t addrlen
        sockaddr_storage addr
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
    ctypedef struct sfu_limiter:
        double rate, tokens, byte_rate, bytes, updated
    ctypedef struct sfu_rxstats:
        uint32_t ssrc, clock_rate
        uint8_t started, have_transit, have_sr
        int64_t packets_received, cycles, expected_prior, received_prior
        uint32_t base_seq, max_seq, bad_seq, last_rtp_ts
        double jitter, last_arrival, last_sr_arrival
        uint64_t last_sr_ntp
    ctypedef struct sfu_cache_slot:
        int32_t seq
        uint16_t length
        uint8_t *data
    ctypedef struct sfu_track:
        void *owner
        uint8_t kind, codec, muted, events
        sfu_limiter limiter
        sfu_rxstats stats
        sfu_cache_slot *cache
        uint64_t packets, dropped_rate
        sfu_leg **legs
        int nlegs
    ctypedef struct sfu_ssrc_route:
        uint32_t ssrc
        sfu_track *track
    ctypedef struct sfu_ingress:
        void *owner
        sfu_srtp_t srtp
        uint8_t slow
        double last_heard
        sockaddr_storage addr
        socklen_t addrlen
        sfu_ssrc_route *routes
        int nroutes
    ctypedef struct sfu_totals:
        uint64_t packets[2]
        uint64_t bytes[2]
        uint64_t protect_errors, send_errors, oversized, datagrams_sent
        uint64_t rx_datagrams, rx_fast, rx_shed, rx_malformed, rx_rate_limited
        uint64_t rx_bitrate_limited, rx_socket_errors, rx_oversized
    ctypedef struct sfu_histogram:
        double bounds[11]
        uint64_t counts[12]
        double sum
        uint64_t count
    ctypedef struct sfu_datapath:
        int fd
        uint8_t shedding
        sfu_totals totals
        sfu_histogram latency
        uint8_t rx_buffers[64][3001]
        sockaddr_storage rx_addrs[64]
        int rx_slow[64]
        int rx_nslow
        int64_t rx_stamp_ns
        int64_t rx_queued_ns
        int64_t rx_overflow
        double rx_now
        sfu_track *events[64]
        int nevents
        sfu_ingress **table
        uint32_t mask
    int sfu_fanout(sfu_datapath *dp, sfu_leg **legs, int n, int kind, const uint8_t *pkt,
                   int length, int header_size, uint16_t pub_seq, uint32_t pub_ts,
                   int keyframe, double now)
    int sfu_set_address(sockaddr_storage *addr, socklen_t *addrlen, const char *host, int port)
    int sfu_limiter_check(sfu_limiter *l, double now, int size)
    void sfu_stats_reset(sfu_rxstats *s, uint32_t ssrc, uint32_t clock_rate)
    void sfu_stats_packet(sfu_rxstats *s, uint32_t seq, uint32_t ts, double arrival)
    int sfu_cache_put(sfu_cache_slot *cache, uint16_t seq, const uint8_t *p, int len)
    void sfu_cache_clear(sfu_cache_slot *cache)
    void sfu_cache_free(sfu_cache_slot *cache)
    int sfu_keyframe(int codec, const uint8_t *p, int size)
    int sfu_track_ingest(sfu_datapath *dp, sfu_track *t, const uint8_t *pkt, int len,
                         int header_size, int padding, double now)
    int sfu_rtp_parse(const uint8_t *p, int size, int *padding)
    int sfu_rx_one(sfu_datapath *dp, const uint8_t *data, int len, const sockaddr *src,
                   double now)
    int sfu_rx_batch(sfu_datapath *dp, int fd)
    int sfu_routes_build(sfu_datapath *dp, sfu_ingress **ins, int n)
    int sfu_rx_length(sfu_datapath *dp, int i)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    int AF_INET
    int AF_INET6
    ctypedef struct in_addr:
        pass
    ctypedef struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    uint16_t ntohs(uint16_t)

cdef extern from "<net/if.h>" nogil:
    char *if_indextoname(unsigned int ifindex, char *ifname)

def _check_stats_args(ssrc, clock_rate):
    """What RtpReceiverStats accepts (sfu/proto/rtp_stats.py), with its messages."""
    if not 0 <= ssrc <= _U32_MAX:
        raise ValueError(f"SSRC must be a 32-bit unsigned integer, got {ssrc}")
    if not 0 < clock_rate <= _U32_MAX:
        raise ValueError(f"clock rate must be positive, got {clock_rate}")


def _check_seq(seq):
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"an RTP sequence number is 16 bits, got {seq}")


_KINDS = {"audio": 0, "video": 1}
_CODECS = {"VP8": 1, "VP9": 2, "H264": 3, "AV1": 4}
_U32_MAX = 0xFFFF_FFFF



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
        if sfu_set_address(&self.leg.addr, &self.leg.addrlen, host, addr[1]) != 0:
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



cdef class NativeRxStats:
    """RFC 3550 receiver statistics in C; the interface of sfu.proto.rtp_stats."""

    cdef sfu_rxstats *s
    cdef object _owner  # the track whose struct this views, or None: owned here

    def __cinit__(self, ssrc=0, clock_rate=90000):
        # The same checks and messages as sfu.proto.rtp_stats, before any C conversion.
        _check_stats_args(ssrc, clock_rate)
        self.s = <sfu_rxstats *>calloc(1, sizeof(sfu_rxstats))
        if self.s == NULL:
            raise MemoryError()
        sfu_stats_reset(self.s, ssrc, clock_rate)
        self._owner = None

    def __dealloc__(self):
        if self._owner is None:
            free(self.s)

    cdef _view(self, sfu_rxstats *s, object owner):
        free(self.s)
        self.s = s
        self._owner = owner

    @property
    def ssrc(self):
        return self.s.ssrc

    @property
    def clock_rate(self):
        return self.s.clock_rate

    @property
    def packets_received(self):
        return self.s.packets_received

    def on_packet(self, int sequence_number, uint32_t rtp_timestamp, double arrival_s):
        sfu_stats_packet(self.s, sequence_number & 0xFFFF, rtp_timestamp, arrival_s)

    def on_sender_report(self, uint64_t ntp_timestamp, double arrival_s):
        self.s.last_sr_ntp = ntp_timestamp
        self.s.last_sr_arrival = arrival_s
        self.s.have_sr = 1

    @property
    def extended_highest_sequence(self):
        return self.s.cycles + self.s.max_seq

    @property
    def packets_expected(self):
        if not self.s.started:
            return 0
        return self.s.cycles + self.s.max_seq - self.s.base_seq + 1

    @property
    def packets_lost(self):
        return self.packets_expected - self.s.packets_received

    @property
    def jitter(self):
        return self.s.jitter

    def report_block(self, double now_s):
        """As RtpReceiverStats.report_block: the fraction covers the time since the last."""
        expected = self.packets_expected
        expected_interval = expected - self.s.expected_prior
        received_interval = self.s.packets_received - self.s.received_prior
        self.s.expected_prior = expected
        self.s.received_prior = self.s.packets_received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        lost = min(max(self.packets_lost, -0x800000), 0x7FFFFF)
        lsr = 0
        dlsr = 0
        if self.s.have_sr:
            lsr = ntp_middle32(self.s.last_sr_ntp)
            dlsr = min(max(int((now_s - self.s.last_sr_arrival) * 65536), 0), _U32_MAX)
        return ReportBlock(
            ssrc=self.s.ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_sequence=(self.s.cycles + self.s.max_seq) & _U32_MAX,
            jitter=min(int(self.s.jitter), _U32_MAX),
            lsr=lsr,
            dlsr=dlsr,
        )


cdef class NativeCache:
    """A track's recent plaintext packets by sequence number (for NACK answers)."""

    cdef sfu_cache_slot *slots
    cdef object _owner

    cdef _view(self, sfu_cache_slot *slots, object owner):
        self.slots = slots
        self._owner = owner

    def put(self, seq, bytes packet):
        _check_seq(seq)
        sfu_cache_put(self.slots, seq, <const uint8_t *>PyBytes_AS_STRING(packet),
                      PyBytes_GET_SIZE(packet))

    def get(self, seq):
        if not 0 <= seq <= 0xFFFF:
            return None  # never stored: put refuses it
        cdef sfu_cache_slot *slot = &self.slots[<int>seq % SFU_CACHE_SIZE]
        if slot.seq != seq:
            return None
        return PyBytes_FromStringAndSize(<const char *>slot.data, slot.length)

    def clear(self):
        sfu_cache_clear(self.slots)


def is_keyframe(str codec, bytes payload):
    """The C keyframe detector (sfu/wire/codecs.py is the reference)."""
    code = _CODECS.get(codec.upper(), 0)
    return bool(sfu_keyframe(code, <const uint8_t *>PyBytes_AS_STRING(payload),
                             PyBytes_GET_SIZE(payload)))


cdef class NativeTrack:
    """One incoming track: its receive state (rate limit, statistics, NACK cache) and
    its subscribers' legs, as C structs the receive path reaches without Python."""

    cdef sfu_track *t
    cdef list _members
    cdef NativeDatapath datapath
    cdef readonly str kind
    cdef readonly NativeRxStats stats
    cdef readonly object cache
    cdef public object owner  # the Producer, for the datapath's events

    def __cinit__(self, str kind, NativeDatapath datapath, str codec="",
                  uint32_t clock_rate=90000, double rate_pps=float("inf"),
                  double rate_bps=float("inf")):
        self.t = <sfu_track *>calloc(1, sizeof(sfu_track))
        if self.t == NULL:
            raise MemoryError()
        self.kind = kind
        self.t.kind = _KINDS[kind]
        self.t.codec = _CODECS.get(codec.upper(), 0)
        self.t.owner = <void *>self
        self.t.limiter.rate = rate_pps
        self.t.limiter.tokens = rate_pps
        self.t.limiter.byte_rate = rate_bps / 8
        self.t.limiter.bytes = rate_bps / 8
        self.datapath = datapath
        self._members = []
        self.owner = None
        self.stats = NativeRxStats(0, clock_rate)
        self.stats._view(&self.t.stats, self)
        sfu_stats_reset(&self.t.stats, 0, clock_rate)
        self.cache = None
        if kind == "video":
            self.t.cache = <sfu_cache_slot *>calloc(SFU_CACHE_SIZE, sizeof(sfu_cache_slot))
            if self.t.cache == NULL:
                raise MemoryError()
            sfu_cache_clear(self.t.cache)
            cache = NativeCache()
            cache._view(self.t.cache, self)
            self.cache = cache

    def __dealloc__(self):
        if self.t != NULL:
            sfu_cache_free(self.t.cache)
            free(self.t.legs)
            free(self.t)

    cdef _rebuild(self):
        cdef int n = len(self._members)
        cdef sfu_leg **legs = <sfu_leg **>malloc(max(n, 1) * sizeof(sfu_leg *))
        if legs == NULL:
            raise MemoryError()
        for i in range(n):
            legs[i] = (<NativeLeg>self._members[i]).leg
        free(self.t.legs)
        self.t.legs = legs
        self.t.nlegs = n

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

    @property
    def muted(self):
        return bool(self.t.muted)

    @muted.setter
    def muted(self, bint value):
        self.t.muted = value

    @property
    def packets(self):
        return self.t.packets

    @property
    def dropped_rate(self):
        return self.t.dropped_rate

    def reset_stats(self, uint32_t ssrc):
        sfu_stats_reset(&self.t.stats, ssrc, self.t.stats.clock_rate)

    def check_rate(self, double now, int size):
        """The rate limiter alone (tests): "" to pass, else the drop reason."""
        code = sfu_limiter_check(&self.t.limiter, now, size)
        return ("", "", "", "", "rate_limited", "bitrate_limited")[code]

    def forward(self, bytes packet, header, bint keyframe, double now):
        """Send to every leg; True if some leg waits for a keyframe."""
        cdef const uint8_t *data = <const uint8_t *>PyBytes_AS_STRING(packet)
        cdef int length = PyBytes_GET_SIZE(packet)
        cdef int header_size = header.header_size
        cdef uint16_t seq = header.sequence_number
        cdef uint32_t ts = header.timestamp
        cdef int wants
        if self.t.nlegs == 0:
            return False
        with nogil:
            wants = sfu_fanout(self.datapath.dp, self.t.legs, self.t.nlegs, self.t.kind,
                               data, length, header_size, seq, ts, keyframe, now)
        return bool(wants)

    def ingest(self, bytes packet, header, double now):
        """One decrypted packet, as the receive path does it in C: a code of
        sfu/routing/track.py (forwarded, wants keyframe, no legs, muted, limited)."""
        cdef const uint8_t *data = <const uint8_t *>PyBytes_AS_STRING(packet)
        cdef int length = PyBytes_GET_SIZE(packet)
        cdef int header_size = header.header_size
        cdef int padding = header.padding_size
        cdef int code
        with nogil:
            code = sfu_track_ingest(self.datapath.dp, self.t, data, length, header_size,
                                    padding, now)
        return code


cdef class NativeIngress:
    """One transport's receive side: its validated address, inbound SRTP, and the
    tracks it publishes by SSRC. Routable once it has both keys and an address."""

    cdef sfu_ingress *i
    cdef NativeDatapath datapath
    cdef object _srtp
    cdef dict _tracks
    cdef readonly object addr

    def __cinit__(self, NativeDatapath datapath):
        self.i = <sfu_ingress *>calloc(1, sizeof(sfu_ingress))
        if self.i == NULL:
            raise MemoryError()
        self.i.owner = <void *>self
        self.datapath = datapath
        self._srtp = None
        self._tracks = {}
        self.addr = None

    def __dealloc__(self):
        if self.i != NULL:
            free(self.i.routes)
            free(self.i)

    def set_route(self, srtp, addr):
        """Keys and address (from ICE and DTLS); either None takes it off the fast path."""
        if srtp is None or addr is None:
            self.i.srtp = NULL
            self.i.addrlen = 0
            self._srtp = None
            self.addr = None
            self.datapath._unroute(self)
            return
        if sfu_set_address(&self.i.addr, &self.i.addrlen, addr[0].encode("ascii"), addr[1]):
            raise ValueError(f"not an IP address: {addr[0]!r}")
        self.i.srtp = <sfu_srtp_t><uintptr_t>srtp.inbound_handle()
        self._srtp = srtp
        self.addr = addr
        self.datapath._route(self)

    def set_tracks(self, dict by_ssrc):
        """The tracks whose packets the fast path handles, by SSRC."""
        cdef int n = len(by_ssrc)
        cdef sfu_ssrc_route *routes = <sfu_ssrc_route *>calloc(max(n, 1), sizeof(sfu_ssrc_route))
        if routes == NULL:
            raise MemoryError()
        for k, (ssrc, track) in enumerate(by_ssrc.items()):
            routes[k].ssrc = ssrc
            routes[k].track = (<NativeTrack?>track).t
        free(self.i.routes)
        self.i.routes = routes
        self.i.nroutes = n
        self._tracks = dict(by_ssrc)  # keeps them alive while C points at them

    @property
    def slow(self):
        return bool(self.i.slow)

    @slow.setter
    def slow(self, bint value):
        self.i.slow = value

    @property
    def last_heard(self):
        return self.i.last_heard

    @property
    def routed(self):
        return self.i.addrlen != 0 and self.i.srtp != NULL


cdef object _format_address(sockaddr_storage *addr):
    cdef char text[64]
    cdef char name[32]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if addr.ss_family == AF_INET:
        v4 = <sockaddr_in *>addr
        inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(v4.sin_port))
    if addr.ss_family == AF_INET6:
        v6 = <sockaddr_in6 *>addr
        inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
        host = text.decode("ascii")
        if v6.sin6_scope_id:  # as the socket module formats link-local addresses
            if if_indextoname(v6.sin6_scope_id, name) != NULL:
                host += "%" + name.decode("ascii")
            else:
                host += "%" + str(v6.sin6_scope_id)
        return (host, ntohs(v6.sin6_port))
    return ("", 0)


cdef class NativeDatapath:
    """Owns the C state: send and receive buffers, the route table, the counters."""

    cdef sfu_datapath *dp
    cdef set _routed
    cdef public object on_keyframe_wanted  # (track owner, now): a leg waits for one
    cdef public object on_shed  # (track owner): video dropped while overloaded
    cdef public object latency_sink  # a LatencyHistogram the C one is drained into
    name = "native"

    def __cinit__(self):
        self.dp = <sfu_datapath *>calloc(1, sizeof(sfu_datapath))
        if self.dp == NULL:
            raise MemoryError()
        self.dp.fd = -1
        self._routed = set()
        self.on_keyframe_wanted = None
        self.on_shed = None
        self.latency_sink = None

    def __dealloc__(self):
        if self.dp != NULL:
            free(self.dp.table)
            free(self.dp)

    def set_socket(self, int fileno):
        """The UDP socket every leg sends from (the media port)."""
        self.dp.fd = fileno

    def attach(self, on_keyframe_wanted, on_shed, latency):
        """Who hears of the batch's events (with the track's owner), and the histogram
        the forwarding latencies measured in C are added to after each batch."""
        bounds = tuple(latency.bounds)
        if len(bounds) != SFU_LATENCY_BUCKETS:
            raise ValueError(f"{SFU_LATENCY_BUCKETS} latency bounds expected")
        for k, bound in enumerate(bounds):
            self.dp.latency.bounds[k] = bound
        self.on_keyframe_wanted = on_keyframe_wanted
        self.on_shed = on_shed
        self.latency_sink = latency

    def set_shedding(self, bint shedding):
        self.dp.shedding = shedding

    def new_leg(self, uint32_t ssrc, int payload_type, bint video, uint32_t clock_rate,
                tuple initial):
        return NativeLeg(ssrc, payload_type, video, clock_rate, initial)

    def new_track(self, str kind, str codec="", uint32_t clock_rate=90000,
                  double rate_pps=float("inf"), double rate_bps=float("inf")):
        return NativeTrack(kind, self, codec, clock_rate, rate_pps, rate_bps)

    def new_ingress(self):
        return NativeIngress(self)

    def _route(self, NativeIngress ingress):
        self._routed.add(ingress)
        self._rebuild()

    def _unroute(self, NativeIngress ingress):
        if ingress in self._routed:
            self._routed.discard(ingress)
            self._rebuild()

    cdef _rebuild(self):
        cdef list ingresses = list(self._routed)
        cdef int n = len(ingresses)
        cdef sfu_ingress **items = <sfu_ingress **>malloc(max(n, 1) * sizeof(sfu_ingress *))
        if items == NULL:
            raise MemoryError()
        for k in range(n):
            items[k] = (<NativeIngress>ingresses[k]).i
        status = sfu_routes_build(self.dp, items, n)
        free(items)
        if status != 0:
            raise MemoryError()

    cdef _after(self, double now):
        """Events the batch raised, and its latency observations."""
        cdef sfu_track *t
        cdef int k, flags
        cdef list events = []
        for k in range(self.dp.nevents):
            t = self.dp.events[k]
            events.append((<NativeTrack>t.owner, t.events))
            t.events = 0
        self.dp.nevents = 0
        for track, flags in events:
            if flags & SFU_EV_SHED and self.on_shed is not None:
                self.on_shed(track.owner)
            if flags & SFU_EV_KEYFRAME and self.on_keyframe_wanted is not None:
                self.on_keyframe_wanted(track.owner, now)
        sink = self.latency_sink
        if self.dp.latency.count and sink is not None:
            counts = sink.counts
            for k in range(SFU_LATENCY_BUCKETS + 1):
                if self.dp.latency.counts[k]:
                    counts[k] += self.dp.latency.counts[k]
                    self.dp.latency.counts[k] = 0
            sink.sum += self.dp.latency.sum
            sink.count += self.dp.latency.count
            self.dp.latency.sum = 0
            self.dp.latency.count = 0

    def receive(self, int fd):
        """Read one batch (at most 64) and handle what C can. Returns None when nothing
        was waiting, else (datagrams read, [(data, addr)] for Python, how long the
        first had waited in the socket when the batch was read, in ns, or -1 without
        kernel timestamps, the kernel's drop counter or -1)."""
        cdef int n, k, index
        with nogil:
            n = sfu_rx_batch(self.dp, fd)
        if n <= 0:
            return None if n == 0 else (0, [], -1, -1)
        slow = []
        for k in range(self.dp.rx_nslow):
            index = self.dp.rx_slow[k]
            data = PyBytes_FromStringAndSize(<const char *>self.dp.rx_buffers[index],
                                             sfu_rx_length(self.dp, index))
            slow.append((data, _format_address(&self.dp.rx_addrs[index])))
        if self.dp.nevents or self.dp.latency.count:
            self._after(self.dp.rx_now)
        return (n, slow, self.dp.rx_queued_ns, self.dp.rx_overflow)

    def process(self, bytes data, tuple addr, double now):
        """One datagram without a socket (tests): True if C handled it, False if it is
        Python's to handle."""
        cdef sockaddr_storage storage
        cdef socklen_t length
        if sfu_set_address(&storage, &length, addr[0].encode("ascii"), addr[1]) != 0:
            return False
        self.dp.totals.rx_datagrams += 1
        handled = sfu_rx_one(self.dp, <const uint8_t *>PyBytes_AS_STRING(data),
                             PyBytes_GET_SIZE(data), <sockaddr *>&storage, now) != SFU_RX_PYTHON
        self._after(now)
        return handled

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
    def counters(self):
        """What the receive path counted, under the Worker's counter names."""
        totals = self.dp.totals
        return Counter(
            {
                "datagrams_in": totals.rx_fast + totals.rx_oversized,
                "oversized": totals.rx_oversized,
                "overload_shed": totals.rx_shed,
                "malformed_rtp": totals.rx_malformed,
                "rate_limited": totals.rx_rate_limited,
                "bitrate_limited": totals.rx_bitrate_limited,
                "socket_errors": totals.rx_socket_errors,
            }
        )

    @property
    def datagrams_sent(self):
        """Datagrams sent by sendmmsg (the Python path counts its own in the worker)."""
        return self.dp.totals.datagrams_sent
