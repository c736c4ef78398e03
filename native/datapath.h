/* The native datapath in C: receive (recvmmsg), demultiplex, SRTP unprotect, route,
 * per-track receive state, rewrite, SRTP protect and send (sendmmsg), with no Python
 * object per packet. native/fanout.pyx wraps it; the pure-Python reference it must
 * match byte for byte is sfu/routing/fanout.py, sfu/routing/track.py,
 * sfu/proto/rtp_stats.py and sfu/wire/codecs.py.
 *
 * Only RTP from a known address and SSRC whose transport is keyed is handled here.
 * Everything else (STUN, DTLS, RTCP, unknown senders or SSRCs, SRTP failures) is
 * handed back to Python unchanged, which decides as the pure-Python path does.
 */
#ifndef SFU_DATAPATH_H
#define SFU_DATAPATH_H

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* libsrtp 2 (the OpenSSL-backed build that the pylibsrtp wheel ships, loaded
   RTLD_GLOBAL by sfu/io/datapath.py before this module): only what is used. */
typedef struct srtp_ctx_t_ *sfu_srtp_t;
int srtp_protect(sfu_srtp_t ctx, void *rtp_hdr, int *len_ptr);
int srtp_unprotect(sfu_srtp_t ctx, void *srtp_hdr, int *len_ptr);

#define SFU_MAX_RTP 3000
#define SFU_MAX_DATAGRAM 3000 /* sfu/routing/worker.py MAX_DATAGRAM */
#define SFU_SLOT (SFU_MAX_RTP + 144)
#define SFU_BATCH 64
#define SFU_RX_SLOT (SFU_MAX_DATAGRAM + 1)
#define SFU_CACHE_SIZE 1024 /* sfu/routing/track.py CACHE_SIZE */
#define SFU_LATENCY_BUCKETS 11 /* sfu/routing/stats.py LATENCY_BUCKETS_S */

enum { SFU_AUDIO = 0, SFU_VIDEO = 1 };
enum { SFU_CODEC_NONE = 0, SFU_CODEC_VP8, SFU_CODEC_VP9, SFU_CODEC_H264, SFU_CODEC_AV1 };
/* What ingesting one packet did (sfu/routing/track.py has the same codes). */
enum {
    SFU_IN_FORWARDED = 0,
    SFU_IN_WANTS_KEYFRAME = 1,
    SFU_IN_NO_LEGS = 2,
    SFU_IN_MUTED = 3,
    SFU_IN_RATE_LIMITED = 4,
    SFU_IN_BITRATE_LIMITED = 5,
};
/* Events a track raises once per batch for Python to act on. */
enum { SFU_EV_KEYFRAME = 1, SFU_EV_SHED = 2 };

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

/* Token buckets over packets and bytes (sfu/routing/track.py RateLimiter). */
typedef struct {
    double rate, tokens, byte_rate, bytes, updated;
} sfu_limiter;

/* RFC 3550 A.1/A.3/A.8 receiver statistics (sfu/proto/rtp_stats.py). */
typedef struct {
    uint32_t ssrc, clock_rate;
    uint8_t started, have_transit, have_sr;
    int64_t packets_received, cycles, expected_prior, received_prior;
    uint32_t base_seq, max_seq, bad_seq, last_rtp_ts;
    double jitter, last_arrival, last_sr_arrival;
    uint64_t last_sr_ntp;
} sfu_rxstats;

typedef struct {
    int32_t seq;
    uint16_t length, capacity;
    uint8_t *data;
} sfu_cache_slot;

/* One incoming track: receive state plus the subscribers' legs. */
typedef struct {
    void *owner; /* the NativeTrack object (borrowed: Python keeps it alive) */
    uint8_t kind, codec, muted, events;
    sfu_limiter limiter;
    sfu_rxstats stats;
    sfu_cache_slot *cache; /* video only */
    uint64_t packets, dropped_rate;
    sfu_leg **legs;
    int nlegs;
} sfu_track;

typedef struct {
    uint32_t ssrc;
    sfu_track *track;
} sfu_ssrc_route;

/* One transport's receive side: the address ICE validated, its inbound SRTP, and
   the tracks it publishes by SSRC. */
typedef struct {
    void *owner;
    sfu_srtp_t srtp;
    uint8_t slow; /* Python handles this transport's RTP for now */
    double last_heard;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    sfu_ssrc_route *routes;
    int nroutes;
} sfu_ingress;

typedef struct {
    uint64_t packets[2], bytes[2];
    uint64_t protect_errors, send_errors, oversized, datagrams_sent;
    /* receive side */
    uint64_t rx_datagrams, rx_fast, rx_shed, rx_malformed, rx_rate_limited,
        rx_bitrate_limited, rx_socket_errors, rx_oversized;
} sfu_totals;

typedef struct {
    double bounds[SFU_LATENCY_BUCKETS];
    uint64_t counts[SFU_LATENCY_BUCKETS + 1];
    double sum;
    uint64_t count;
} sfu_histogram;

typedef struct {
    int fd;
    uint8_t shedding;
    sfu_totals totals;
    sfu_histogram latency;
    /* address -> ingress, open addressing, rebuilt whole on change (rare) */
    sfu_ingress **table;
    uint32_t mask;
    /* send side */
    uint8_t buffers[SFU_BATCH][SFU_SLOT];
    struct iovec iov[SFU_BATCH];
    struct mmsghdr msgs[SFU_BATCH];
    /* receive side */
    uint8_t rx_buffers[SFU_BATCH][SFU_RX_SLOT];
    struct sockaddr_storage rx_addrs[SFU_BATCH];
    char rx_control[SFU_BATCH][64];
    struct iovec rx_iov[SFU_BATCH];
    struct mmsghdr rx_msgs[SFU_BATCH];
    uint8_t work[SFU_RX_SLOT + 16];
    int rx_slow[SFU_BATCH];
    int rx_nslow;
    int64_t rx_stamp_ns; /* kernel receive time of the batch's first datagram, or 0 */
    int64_t rx_queued_ns; /* how long it had waited when the batch was read, or -1 */
    int64_t rx_overflow; /* the kernel's drop counter, or -1 */
    double rx_now;
    sfu_track *events[SFU_BATCH];
    int nevents;
} sfu_datapath;

static double sfu_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* what Python's time.monotonic() reads */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t sfu_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* ---- RTP header (sfu/wire/rtp.py parse_rtp_header): header size, or -1 ---- */

static int sfu_rtp_parse(const uint8_t *p, int size, int *padding) {
    if (size < 12 || (p[0] >> 6) != 2) return -1;
    int offset = 12 + 4 * (p[0] & 0x0F);
    if (offset > size) return -1;
    if (p[0] & 0x10) {
        if (offset + 4 > size) return -1;
        offset += 4 + 4 * (((int)p[offset + 2] << 8) | p[offset + 3]);
        if (offset > size) return -1;
    }
    *padding = 0;
    if (p[0] & 0x20) {
        if (size == offset) return -1;
        int pad = p[size - 1];
        if (pad == 0 || pad > size - offset) return -1;
        *padding = pad;
    }
    return offset;
}

/* ---- keyframes (sfu/wire/codecs.py) ---- */

static int sfu_vp8_keyframe(const uint8_t *p, int size) {
    if (size < 1) return 0;
    int b0 = p[0];
    if (!(b0 & 0x10) || (b0 & 0x07)) return 0;
    int pos = 1;
    if (b0 & 0x80) {
        if (size < 2) return 0;
        int ext = p[1];
        pos = 2;
        if (ext & 0x80) {
            if (pos >= size) return 0;
            pos += (p[pos] & 0x80) ? 2 : 1;
        }
        if (ext & 0x40) pos += 1;
        if (ext & 0x30) pos += 1;
    }
    if (pos >= size) return 0;
    return !(p[pos] & 0x01);
}

static int sfu_vp9_keyframe(const uint8_t *p, int size) {
    if (size < 1) return 0;
    int b0 = p[0];
    if (!(b0 & 0x08) || (b0 & 0x40)) return 0;
    int pos = 1;
    if (b0 & 0x80) {
        if (pos >= size) return 0;
        pos += (p[pos] & 0x80) ? 2 : 1;
    }
    if (b0 & 0x20) {
        if (pos >= size) return 0;
        if ((p[pos] >> 1) & 0x07) return 0;
        pos += (b0 & 0x10) ? 1 : 2;
    }
    if (b0 & 0x02) {
        if (pos >= size) return 0;
        int ss = p[pos];
        pos += 1;
        if (ss & 0x10) pos += 4 * ((ss >> 5) + 1);
        if (ss & 0x08) {
            if (pos >= size) return 0;
            int groups = p[pos];
            pos += 1;
            for (int i = 0; i < groups; i++) {
                if (pos >= size) return 0;
                pos += 1 + ((p[pos] >> 2) & 0x03);
            }
        }
    }
    return pos < size;
}

static int sfu_h264_key_type(int nal) { return nal == 5 || nal == 7; }

static int sfu_h264_keyframe(const uint8_t *p, int size) {
    if (size < 1) return 0;
    int nal = p[0] & 0x1F;
    if (sfu_h264_key_type(nal)) return 1;
    if (nal == 24) { /* STAP-A */
        int pos = 1;
        while (pos + 2 <= size) {
            int nal_size = ((int)p[pos] << 8) | p[pos + 1];
            pos += 2;
            if (nal_size == 0 || pos + nal_size > size) return 0;
            if (sfu_h264_key_type(p[pos] & 0x1F)) return 1;
            pos += nal_size;
        }
        return 0;
    }
    if (nal == 28) { /* FU-A */
        if (size < 2) return 0;
        return (p[1] & 0x80) && sfu_h264_key_type(p[1] & 0x1F);
    }
    return 0;
}

static int sfu_keyframe(int codec, const uint8_t *p, int size) {
    switch (codec) {
    case SFU_CODEC_VP8: return sfu_vp8_keyframe(p, size);
    case SFU_CODEC_VP9: return sfu_vp9_keyframe(p, size);
    case SFU_CODEC_H264: return sfu_h264_keyframe(p, size);
    case SFU_CODEC_AV1: return size >= 2 && (p[0] & 0x88) == 0x08;
    default: return 0;
    }
}

/* ---- rate limiter: 0 to pass, else SFU_IN_RATE_LIMITED / SFU_IN_BITRATE_LIMITED ---- */

static int sfu_limiter_check(sfu_limiter *l, double now, int size) {
    double elapsed = now - l->updated;
    l->updated = now;
    /* Python's min(a, b) is a unless b < a (also when b is NaN: 0 * inf). */
    double tokens = l->tokens + elapsed * l->rate;
    l->tokens = tokens < l->rate ? tokens : l->rate;
    double bytes = l->bytes + elapsed * l->byte_rate;
    l->bytes = bytes < l->byte_rate ? bytes : l->byte_rate;
    if (l->tokens < 1.0) return SFU_IN_RATE_LIMITED;
    if (l->bytes < size) return SFU_IN_BITRATE_LIMITED;
    l->tokens -= 1.0;
    l->bytes -= size;
    return 0;
}

/* ---- receiver statistics ---- */

static void sfu_stats_reset(sfu_rxstats *s, uint32_t ssrc, uint32_t clock_rate) {
    memset(s, 0, sizeof(*s));
    s->ssrc = ssrc;
    s->clock_rate = clock_rate;
    s->bad_seq = 65537;
}

static void sfu_stats_init_seq(sfu_rxstats *s, uint32_t seq) {
    s->base_seq = seq;
    s->max_seq = seq;
    s->bad_seq = 65537;
    s->cycles = 0;
    s->packets_received = 0;
    s->expected_prior = 0;
    s->received_prior = 0;
}

/* 1 in order, 0 reordered or duplicate, -1 ignored (a jump, maybe a restart). */
static int sfu_stats_update_seq(sfu_rxstats *s, uint32_t seq) {
    uint32_t udelta = (seq - s->max_seq) & 0xFFFF;
    int in_order = 0;
    if (udelta < 3000) {
        if (seq < s->max_seq) s->cycles += 65536;
        s->max_seq = seq;
        in_order = udelta != 0;
    } else if (udelta <= 65536 - 100) {
        if (seq != s->bad_seq) {
            s->bad_seq = (seq + 1) & 0xFFFF;
            return -1;
        }
        sfu_stats_init_seq(s, seq);
        s->have_transit = 0;
        in_order = 1;
    }
    s->packets_received++;
    return in_order;
}

static void sfu_stats_packet(sfu_rxstats *s, uint32_t seq, uint32_t ts, double arrival) {
    int in_order;
    seq &= 0xFFFF;
    if (!s->started) {
        s->started = 1;
        sfu_stats_init_seq(s, seq);
        s->packets_received = 1;
        in_order = 1;
    } else {
        in_order = sfu_stats_update_seq(s, seq);
    }
    if (in_order != 1) return; /* reordering would feed a bogus transit difference */
    if (s->have_transit) {
        uint32_t raw = ts - s->last_rtp_ts;
        int64_t delta = raw >= 0x80000000u ? (int64_t)raw - 0x100000000LL : (int64_t)raw;
        double d = (arrival - s->last_arrival) * s->clock_rate - (double)delta;
        s->jitter += (fabs(d) - s->jitter) / 16.0;
    }
    s->have_transit = 1;
    s->last_rtp_ts = ts;
    s->last_arrival = arrival;
}

/* ---- NACK cache ---- */

static int sfu_cache_put(sfu_cache_slot *cache, uint16_t seq, const uint8_t *p, int len) {
    sfu_cache_slot *slot = &cache[seq % SFU_CACHE_SIZE];
    if (slot->capacity < len) {
        uint8_t *data = (uint8_t *)realloc(slot->data, (size_t)len);
        if (data == NULL) {
            slot->seq = -1;
            return -1;
        }
        slot->data = data;
        slot->capacity = (uint16_t)len;
    }
    memcpy(slot->data, p, (size_t)len);
    slot->length = (uint16_t)len;
    slot->seq = seq;
    return 0;
}

static void sfu_cache_clear(sfu_cache_slot *cache) {
    for (int i = 0; i < SFU_CACHE_SIZE; i++) cache[i].seq = -1;
}

static void sfu_cache_free(sfu_cache_slot *cache) {
    if (cache == NULL) return;
    for (int i = 0; i < SFU_CACHE_SIZE; i++) free(cache[i].data);
    free(cache);
}

/* ---- fan-out: rewrite, protect and send one packet to every leg ---- */

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

/* One decrypted packet into a track (sfu/routing/track.py PyTrack.ingest). */
static int sfu_track_ingest(sfu_datapath *dp, sfu_track *t, const uint8_t *pkt, int len,
                            int header_size, int padding, double now) {
    if (t->muted) return SFU_IN_MUTED;
    int refused = sfu_limiter_check(&t->limiter, now, len);
    if (refused) {
        t->dropped_rate++;
        return refused;
    }
    uint16_t seq = ((uint16_t)pkt[2] << 8) | pkt[3];
    uint32_t ts = sfu_be32(pkt + 4);
    t->packets++;
    sfu_stats_packet(&t->stats, seq, ts, now);
    if (t->cache != NULL) sfu_cache_put(t->cache, seq, pkt, len);
    if (t->nlegs == 0) return SFU_IN_NO_LEGS;
    int keyframe = t->kind == SFU_VIDEO &&
                   sfu_keyframe(t->codec, pkt + header_size, len - padding - header_size);
    if (sfu_fanout(dp, t->legs, t->nlegs, t->kind, pkt, len, header_size, seq, ts, keyframe,
                   now))
        return SFU_IN_WANTS_KEYFRAME;
    return SFU_IN_FORWARDED;
}

static void sfu_event(sfu_datapath *dp, sfu_track *t, int what) {
    if (t->events == 0) {
        /* A flag set without a queue entry would never be cleared: no entry, no flag. */
        if (dp->nevents >= SFU_BATCH) return;
        dp->events[dp->nevents++] = t;
    }
    t->events |= what;
}

static void sfu_observe(sfu_histogram *h, double seconds) {
    int i = 0; /* bisect_left: the first bound >= seconds */
    while (i < SFU_LATENCY_BUCKETS && h->bounds[i] < seconds) i++;
    h->counts[i]++;
    h->sum += seconds;
    h->count++;
}

/* ---- routes: address -> ingress ---- */

static uint32_t sfu_addr_hash(const struct sockaddr *a) {
    uint32_t h = 2166136261u;
    const uint8_t *p;
    int n;
    uint16_t port;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
        p = (const uint8_t *)&v4->sin_addr;
        n = 4;
        port = v4->sin_port;
    } else {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
        p = (const uint8_t *)&v6->sin6_addr;
        n = 16;
        port = v6->sin6_port;
    }
    for (int i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    h = (h ^ (port & 0xFF)) * 16777619u;
    h = (h ^ (port >> 8)) * 16777619u;
    return h;
}

static int sfu_addr_equal(const struct sockaddr *a, const struct sockaddr *b) {
    if (a->sa_family != b->sa_family) return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

static sfu_ingress *sfu_route_find(sfu_datapath *dp, const struct sockaddr *a) {
    if (dp->table == NULL || (a->sa_family != AF_INET && a->sa_family != AF_INET6)) return NULL;
    for (uint32_t i = sfu_addr_hash(a) & dp->mask;; i = (i + 1) & dp->mask) {
        sfu_ingress *in = dp->table[i];
        if (in == NULL) return NULL;
        if (sfu_addr_equal((const struct sockaddr *)&in->addr, a)) return in;
    }
}

/* A new table holding these ingresses (at most half full); -1 if out of memory. */
static int sfu_routes_build(sfu_datapath *dp, sfu_ingress **ins, int n) {
    uint32_t size = 16;
    while (size < (uint32_t)n * 2 + 2) size <<= 1;
    sfu_ingress **table = (sfu_ingress **)calloc(size, sizeof(sfu_ingress *));
    if (table == NULL) return -1;
    for (int k = 0; k < n; k++) {
        const struct sockaddr *a = (const struct sockaddr *)&ins[k]->addr;
        uint32_t i = sfu_addr_hash(a) & (size - 1);
        while (table[i] != NULL) i = (i + 1) & (size - 1);
        table[i] = ins[k];
    }
    free(dp->table);
    dp->table = table;
    dp->mask = size - 1;
    return 0;
}

static sfu_track *sfu_ingress_track(sfu_ingress *in, uint32_t ssrc) {
    for (int i = 0; i < in->nroutes; i++)
        if (in->routes[i].ssrc == ssrc) return in->routes[i].track;
    return NULL;
}

/* ---- receive ---- */

enum { SFU_RX_DONE = 0, SFU_RX_PYTHON = 1 };

/* One datagram: handled here (forwarded or dropped and counted), or SFU_RX_PYTHON
   for Python to handle exactly as the pure-Python path would. */
static int sfu_rx_one(sfu_datapath *dp, const uint8_t *data, int len,
                      const struct sockaddr *from, double now) {
    if (len < 12 || len > SFU_MAX_DATAGRAM) return SFU_RX_PYTHON;
    if (data[0] < 128 || data[0] > 191 || (data[1] >= 192 && data[1] <= 223))
        return SFU_RX_PYTHON; /* not RTP (RFC 7983, RFC 5761) */
    sfu_ingress *in = sfu_route_find(dp, from);
    if (in == NULL || in->slow || in->srtp == NULL) return SFU_RX_PYTHON;
    sfu_track *t = sfu_ingress_track(in, sfu_be32(data + 8));
    if (t == NULL) return SFU_RX_PYTHON;
    if (dp->shedding && t->kind == SFU_VIDEO) {
        /* The SSRC is in clear text: shed video before paying for its decryption. */
        dp->totals.rx_fast++;
        dp->totals.rx_shed++;
        sfu_event(dp, t, SFU_EV_SHED);
        return SFU_RX_DONE;
    }
    /* Unprotect a copy: on failure Python gets the datagram as it came. */
    uint8_t *pkt = dp->work;
    memcpy(pkt, data, (size_t)len);
    int plain = len;
    if (srtp_unprotect(in->srtp, pkt, &plain) != 0) return SFU_RX_PYTHON;
    dp->totals.rx_fast++;
    int padding;
    int header_size = sfu_rtp_parse(pkt, plain, &padding);
    if (header_size < 0) {
        dp->totals.rx_malformed++;
        return SFU_RX_DONE;
    }
    in->last_heard = now;
    int code = sfu_track_ingest(dp, t, pkt, plain, header_size, padding, now);
    if (code == SFU_IN_RATE_LIMITED) dp->totals.rx_rate_limited++;
    else if (code == SFU_IN_BITRATE_LIMITED) dp->totals.rx_bitrate_limited++;
    else if (code == SFU_IN_FORWARDED || code == SFU_IN_WANTS_KEYFRAME) {
        if (code == SFU_IN_WANTS_KEYFRAME) sfu_event(dp, t, SFU_EV_KEYFRAME);
        sfu_observe(&dp->latency, sfu_monotonic() - now);
    }
    return SFU_RX_DONE;
}

static void sfu_rx_control(sfu_datapath *dp, struct msghdr *hdr) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(hdr); c != NULL; c = CMSG_NXTHDR(hdr, c)) {
        if (c->cmsg_level != SOL_SOCKET) continue;
        if (c->cmsg_type == SO_TIMESTAMPNS && c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            dp->rx_stamp_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        } else if (c->cmsg_type == SO_RXQ_OVFL && c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
            uint32_t drops;
            memcpy(&drops, CMSG_DATA(c), sizeof(drops));
            dp->rx_overflow = drops;
        }
    }
}

/* Read up to SFU_BATCH datagrams from fd and handle what can be handled here. Returns
   the number read (0: nothing waiting, -1: a socket error, counted). rx_slow lists
   the datagrams for Python; rx_queued_ns and rx_overflow come from the first. */
static int sfu_rx_batch(sfu_datapath *dp, int fd) {
    dp->rx_nslow = 0;
    dp->rx_stamp_ns = 0;
    dp->rx_queued_ns = -1;
    dp->rx_overflow = -1;
    for (int i = 0; i < SFU_BATCH; i++) {
        dp->rx_iov[i].iov_base = dp->rx_buffers[i];
        dp->rx_iov[i].iov_len = SFU_RX_SLOT;
        memset(&dp->rx_msgs[i].msg_hdr, 0, sizeof(struct msghdr));
        dp->rx_msgs[i].msg_hdr.msg_name = &dp->rx_addrs[i];
        dp->rx_msgs[i].msg_hdr.msg_namelen = sizeof(dp->rx_addrs[i]);
        dp->rx_msgs[i].msg_hdr.msg_iov = &dp->rx_iov[i];
        dp->rx_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    /* Only the first datagram's ancillary data is read: how long the oldest waited. */
    dp->rx_msgs[0].msg_hdr.msg_control = dp->rx_control[0];
    dp->rx_msgs[0].msg_hdr.msg_controllen = sizeof(dp->rx_control[0]);
    int n;
    do {
        n = recvmmsg(fd, dp->rx_msgs, SFU_BATCH, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        dp->totals.rx_socket_errors++; /* ICMP errors (a peer gone) surface here */
        return -1;
    }
    double now = sfu_monotonic();
    dp->rx_now = now;
    if (n > 0) {
        sfu_rx_control(dp, &dp->rx_msgs[0].msg_hdr);
        if (dp->rx_stamp_ns) { /* how long the oldest waited, before this batch's work */
            struct timespec wall;
            clock_gettime(CLOCK_REALTIME, &wall); /* the clock of the kernel's stamps */
            int64_t queued = (int64_t)wall.tv_sec * 1000000000LL + wall.tv_nsec - dp->rx_stamp_ns;
            dp->rx_queued_ns = queued > 0 ? queued : 0;
        }
    }
    for (int i = 0; i < n; i++) {
        dp->totals.rx_datagrams++;
        int len = (int)dp->rx_msgs[i].msg_len;
        if (dp->rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
            dp->totals.rx_oversized++;
            continue;
        }
        if (i > 0) now = sfu_monotonic();
        if (sfu_rx_one(dp, dp->rx_buffers[i], len, (const struct sockaddr *)&dp->rx_addrs[i],
                       now) == SFU_RX_PYTHON)
            dp->rx_slow[dp->rx_nslow++] = i;
    }
    return n;
}

static int sfu_rx_length(sfu_datapath *dp, int i) { return (int)dp->rx_msgs[i].msg_len; }

static int sfu_set_address(struct sockaddr_storage *addr, socklen_t *addrlen, const char *host,
                           int port) {
    memset(addr, 0, sizeof(*addr));
    struct sockaddr_in *v4 = (struct sockaddr_in *)addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *addrlen = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *addrlen = sizeof(*v6);
        return 0;
    }
    *addrlen = 0;
    return -1;
}

#endif
