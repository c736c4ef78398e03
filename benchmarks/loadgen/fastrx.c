/* The load generator's subscriber receive loop in C, for the measured window.
 *
 * It does what transport.py (MediaTransport._on_readable, on_datagram), srtp.py
 * (SrtpPair.unprotect, with its rollover-counter resync), clients.py (Subscriber.on_rtp)
 * and stats.py (StreamStats, LatencySamples) do per datagram, over every subscriber
 * socket of a process at once: epoll, recvmmsg with SO_TIMESTAMPNS, libsrtp unprotect,
 * RTP header parse, probe read, window check, sequence statistics, latency samples.
 * Datagrams the Python transport must still see (STUN, DTLS) go to a bounded queue that
 * Python drains. benchmarks/loadgen/fastrx.py builds, loads and drives it;
 * tests/benchmarks/test_fastrx.py holds it to the Python path's counts.
 *
 * Threads: fastrx_run runs on one thread; fastrx_pop, fastrx_stop and
 * fastrx_datagrams_received may be called from one other thread meanwhile. Everything
 * else is called only while fastrx_run is not running.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* libsrtp 2.x, from the OpenSSL-backed build inside the pylibsrtp wheel (the library the
 * Python path calls, already loaded in this process); statuses are srtp_err_status_t. */
typedef struct srtp_ctx_t_ *srtp_t;
int srtp_unprotect(srtp_t ctx, void *srtp_hdr, int *len_ptr);
int srtp_unprotect_rtcp(srtp_t ctx, void *srtcp_hdr, int *pkt_octet_len);
int srtp_get_stream_roc(srtp_t session, uint32_t ssrc, uint32_t *roc);
int srtp_set_stream_roc(srtp_t session, uint32_t ssrc, uint32_t roc);

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif

#define EXPORT __attribute__((visibility("default")))
#define ABI_VERSION 1

#define HISTORY 4096      /* stats.py _HISTORY */
#define SEQ_MOD 0x10000
#define SEQ_HALF 0x8000
#define SLOT 4096         /* transport.py reads recvmsg(4096): longer datagrams are cut */
#define CONTROL 128       /* its ancillary buffer */
#define MAX_READS 256     /* transport.py MAX_READS_PER_WAKEUP, per socket and wakeup */
#define BATCH 64
#define MAX_EVENTS 64
#define QUEUE_LEN 256     /* datagrams for Python between drains (~100 ms) */
#define RESYNC_AFTER 8    /* srtp.py RESYNC_AFTER */
#define RESYNC_STEPS 4    /* srtp.py RESYNC_ROC_STEPS = (0, 1, 2, 3) */
#define MAX_FAILING 64    /* srtp.py _MAX_FAILING_STREAMS */
#define WAIT_CAP_MS 200   /* a lost stop signal still ends the loop soon */
#define STOP_TAG UINT32_MAX
#define KINDS 2           /* 0 audio, 1 video: probe at offset 0 and 4 (media.py) */
#define PROBE_BYTES 12    /* media.py PROBE: send_ns (8) | counter (4) */

/* StreamStats's state: extended sequence numbers and its counts. */
typedef struct {
    int64_t base, highest, received, expected, out_of_order, duplicates;
} fastrx_seqstats;

/* One stream as Python hands it over and gets it back (ReceivedStream). */
typedef struct {
    int32_t subscriber;
    uint32_t ssrc;
    int32_t kind;
    int32_t reserved;
    int64_t received_total, bad_payloads;
    fastrx_seqstats stats;
} fastrx_stream_info;

typedef struct {
    int64_t datagrams_received, srtp_errors, roc_resyncs;
    int64_t socket_drops; /* the last SO_RXQ_OVFL value, -1 if none came */
} fastrx_socket_info;

typedef struct {
    int64_t queued, queue_dropped;
    int64_t untracked; /* RTP of a new stream with no slot left */
    int64_t traced;    /* entries in the trace */
} fastrx_totals;

typedef struct {
    fastrx_stream_info info;
    int64_t seen[HISTORY];
} stream;

typedef struct {
    uint32_t ssrc;
    int failures;
} failing;

typedef struct {
    int fd;
    srtp_t srtp;
    int subscriber;
    int family, port;
    uint8_t addr[16];
    int64_t datagrams_received; /* read by another thread: atomic */
    int64_t srtp_errors, roc_resyncs, socket_drops;
    failing failing[MAX_FAILING]; /* oldest failure first, as srtp.py's dict */
    int nfailing;
} sock;

typedef struct {
    int nssrc;
    uint32_t *ssrcs;
    uint8_t *ssrc_kinds;
    uint8_t pt_kinds[128]; /* with clients.py's fallback already applied */
} subscriber;

typedef struct {
    int32_t sock, len;
    int64_t kernel_ns, app_ns;
    uint8_t data[SLOT];
} queued;

typedef struct {
    int64_t *values;
    int64_t len, cap, overflow;
    size_t mapped;
} samples;

typedef struct {
    int epoll_fd, stop_fd;
    int max_packet;
    int64_t start_ns, end_ns;
    sock *socks;
    int nsocks, max_socks;
    subscriber *subs;
    int nsubs;
    stream *streams;
    int nstreams, max_streams;
    int32_t *table; /* open addressing over (subscriber, ssrc): stream index or -1 */
    uint32_t table_mask;
    samples kernel[KINDS], app[KINDS];
    int64_t *trace; /* (subscriber, send_ns, seq) per accepted packet; tests only */
    int64_t trace_cap;
    queued *queue;
    uint32_t queue_head, queue_tail; /* producer: fastrx_run; consumer: fastrx_pop */
    fastrx_totals totals;
    uint8_t work[SLOT];
    uint8_t rx[BATCH][SLOT];
    uint8_t control[BATCH][CONTROL];
    struct sockaddr_storage names[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
} fastrx;

static int64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* -- sequence statistics (stats.py StreamStats.on_packet) -------------------------- */

static int64_t extend(const fastrx_seqstats *s, uint32_t seq) {
    if (s->highest < 0) return (int64_t)seq + SEQ_MOD;
    int64_t delta = ((int64_t)seq - s->highest) & (SEQ_MOD - 1);
    return delta < SEQ_HALF ? s->highest + delta : s->highest - (SEQ_MOD - delta);
}

static void seq_packet(fastrx_seqstats *s, int64_t *seen, uint32_t seq) {
    int64_t ext = extend(s, seq); /* never negative: highest starts at >= SEQ_MOD */
    int64_t slot = ext % HISTORY;
    if (seen[slot] == ext) {
        s->duplicates++;
        return;
    }
    seen[slot] = ext;
    s->received++;
    if (s->highest < 0) {
        s->base = s->highest = ext;
    } else if (ext > s->highest) {
        s->highest = ext;
    } else {
        s->out_of_order++;
        if (ext < s->base) s->base = ext;
    }
    s->expected = s->highest - s->base + 1;
}

EXPORT void fastrx_seq_feed(fastrx_seqstats *s, int64_t *seen, const uint16_t *seqs, int n) {
    for (int i = 0; i < n; i++) seq_packet(s, seen, seqs[i]);
}

/* -- setup ---------------------------------------------------------------------------- */

EXPORT int fastrx_abi(void) { return ABI_VERSION; }

EXPORT int fastrx_sizeof(int what) {
    switch (what) {
    case 0: return (int)sizeof(fastrx_seqstats);
    case 1: return (int)sizeof(fastrx_stream_info);
    case 2: return (int)sizeof(fastrx_socket_info);
    case 3: return (int)sizeof(fastrx_totals);
    default: return -1;
    }
}

static void free_samples(samples *s) {
    if (s->values != NULL) munmap(s->values, s->mapped);
    s->values = NULL;
}

EXPORT void fastrx_free(fastrx *fx) {
    if (fx == NULL) return;
    if (fx->epoll_fd >= 0) close(fx->epoll_fd);
    if (fx->stop_fd >= 0) close(fx->stop_fd);
    for (int i = 0; fx->subs != NULL && i < fx->nsubs; i++) {
        free(fx->subs[i].ssrcs);
        free(fx->subs[i].ssrc_kinds);
    }
    for (int k = 0; k < KINDS; k++) {
        free_samples(&fx->kernel[k]);
        free_samples(&fx->app[k]);
    }
    free(fx->subs);
    free(fx->socks);
    free(fx->streams);
    free(fx->table);
    free(fx->queue);
    free(fx);
}

/* Latency arrays as large as what LatencySamples may still take (up to 40 MB each):
 * reserved, not committed, so memory follows the samples actually written. */
static int alloc_samples(samples *s, int64_t cap) {
    s->cap = cap > 0 ? cap : 0;
    s->mapped = (size_t)(s->cap > 0 ? s->cap : 1) * sizeof(int64_t);
    void *p = mmap(NULL, s->mapped, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -1;
    s->values = p;
    return 0;
}

/* caps: remaining room of the kernel and app LatencySamples, [audio, video] each. */
EXPORT fastrx *fastrx_new(int max_socks, int max_subs, int max_streams, int max_packet,
                          const int64_t *kernel_caps, const int64_t *app_caps) {
    if (max_socks < 1 || max_subs < 1 || max_streams < 1 || max_packet < 1 ||
        max_packet > SLOT)
        return NULL;
    fastrx *fx = calloc(1, sizeof(*fx));
    if (fx == NULL) return NULL;
    fx->epoll_fd = fx->stop_fd = -1;
    fx->max_packet = max_packet;
    fx->max_socks = max_socks;
    fx->nsubs = max_subs;
    fx->max_streams = max_streams;
    uint32_t size = 16;
    while (size < 2u * (uint32_t)max_streams) size <<= 1;
    fx->table_mask = size - 1;
    fx->socks = calloc((size_t)max_socks, sizeof(sock));
    fx->subs = calloc((size_t)max_subs, sizeof(subscriber));
    fx->streams = calloc((size_t)max_streams, sizeof(stream));
    fx->table = malloc(size * sizeof(int32_t));
    fx->queue = calloc(QUEUE_LEN, sizeof(queued));
    fx->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    fx->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fx->socks == NULL || fx->subs == NULL || fx->streams == NULL || fx->table == NULL ||
        fx->queue == NULL || fx->epoll_fd < 0 || fx->stop_fd < 0)
        goto fail;
    memset(fx->table, 0xff, size * sizeof(int32_t));
    for (int k = 0; k < KINDS; k++)
        if (alloc_samples(&fx->kernel[k], kernel_caps[k]) < 0 ||
            alloc_samples(&fx->app[k], app_caps[k]) < 0)
            goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STOP_TAG};
    if (epoll_ctl(fx->epoll_fd, EPOLL_CTL_ADD, fx->stop_fd, &ev) < 0) goto fail;
    return fx;
fail:
    fastrx_free(fx);
    return NULL;
}

/* Which kind each announced SSRC and each payload type is (Subscriber.learn_streams). */
EXPORT int fastrx_set_subscriber(fastrx *fx, int index, const uint32_t *ssrcs,
                                 const uint8_t *kinds, int n, const uint8_t *pt_kinds) {
    if (index < 0 || index >= fx->nsubs || n < 0) return -1;
    subscriber *s = &fx->subs[index];
    free(s->ssrcs);
    free(s->ssrc_kinds);
    s->ssrcs = calloc((size_t)n + 1, sizeof(uint32_t));
    s->ssrc_kinds = calloc((size_t)n + 1, 1);
    if (s->ssrcs == NULL || s->ssrc_kinds == NULL) return -1;
    if (n > 0) {
        memcpy(s->ssrcs, ssrcs, (size_t)n * sizeof(uint32_t));
        memcpy(s->ssrc_kinds, kinds, (size_t)n);
    }
    s->nssrc = n;
    for (int pt = 0; pt < 128; pt++) s->pt_kinds[pt] = pt_kinds[pt] ? 1 : 0;
    return 0;
}

/* A socket with its inbound srtp_t and the server address its datagrams must come from
 * (addr: 4 or 16 bytes in network order, port in host order). Returns its index. */
EXPORT int fastrx_add_socket(fastrx *fx, int fd, void *srtp, int sub, int family,
                             const uint8_t *addr, int port) {
    if (fx->nsocks >= fx->max_socks || sub < 0 || sub >= fx->nsubs || srtp == NULL) return -1;
    if (family != AF_INET && family != AF_INET6) return -1;
    sock *s = &fx->socks[fx->nsocks];
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->srtp = srtp;
    s->subscriber = sub;
    s->family = family;
    s->port = port;
    memcpy(s->addr, addr, family == AF_INET ? 4 : 16);
    s->socket_drops = -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)fx->nsocks};
    if (epoll_ctl(fx->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) return -1;
    return fx->nsocks++;
}

static uint32_t slot_of(const fastrx *fx, int sub, uint32_t ssrc) {
    uint64_t key = (uint64_t)(uint32_t)sub << 32 | ssrc;
    key *= 0x9E3779B97F4A7C15ULL; /* Fibonacci hashing spreads near-equal keys */
    return (uint32_t)(key >> 32) & fx->table_mask;
}

static stream *find_stream(fastrx *fx, int sub, uint32_t ssrc) {
    for (uint32_t i = slot_of(fx, sub, ssrc), probes = 0; probes <= fx->table_mask;
         i = (i + 1) & fx->table_mask, probes++) {
        int32_t at = fx->table[i];
        if (at < 0) return NULL;
        stream *st = &fx->streams[at];
        if (st->info.subscriber == sub && st->info.ssrc == ssrc) return st;
    }
    return NULL;
}

static stream *add_stream(fastrx *fx, int sub, uint32_t ssrc) {
    if (fx->nstreams >= fx->max_streams) return NULL;
    uint32_t i = slot_of(fx, sub, ssrc);
    while (fx->table[i] >= 0) i = (i + 1) & fx->table_mask; /* table is twice as large */
    stream *st = &fx->streams[fx->nstreams];
    memset(&st->info, 0, sizeof(st->info));
    st->info.subscriber = sub;
    st->info.ssrc = ssrc;
    st->info.stats.base = st->info.stats.highest = -1;
    for (int k = 0; k < HISTORY; k++) st->seen[k] = -1;
    fx->table[i] = fx->nstreams++;
    return st;
}

/* A stream Python already has, with its state (seen: StreamStats's history). */
EXPORT int fastrx_put_stream(fastrx *fx, const fastrx_stream_info *info, const int64_t *seen) {
    if (info->subscriber < 0 || info->subscriber >= fx->nsubs) return -1;
    if (info->kind < 0 || info->kind >= KINDS) return -1;
    stream *st = find_stream(fx, info->subscriber, info->ssrc);
    if (st == NULL) st = add_stream(fx, info->subscriber, info->ssrc);
    if (st == NULL) return -1;
    st->info = *info;
    memcpy(st->seen, seen, sizeof(st->seen));
    return 0;
}

EXPORT int fastrx_set_trace(fastrx *fx, int64_t *buffer, int64_t entries) {
    fx->trace = buffer;
    fx->trace_cap = entries;
    fx->totals.traced = 0;
    return 0;
}

/* -- per datagram ------------------------------------------------------------------- */

static void add_sample(samples *s, int64_t value) {
    if (s->len < s->cap)
        s->values[s->len++] = value;
    else
        s->overflow++;
}

static void enqueue(fastrx *fx, int index, const uint8_t *data, int len, int64_t kernel_ns,
                    int64_t app_ns) {
    uint32_t head = fx->queue_head;
    uint32_t tail = __atomic_load_n(&fx->queue_tail, __ATOMIC_ACQUIRE);
    if (head - tail >= QUEUE_LEN) {
        fx->totals.queue_dropped++;
        return;
    }
    queued *q = &fx->queue[head % QUEUE_LEN];
    q->sock = index;
    q->len = len;
    q->kernel_ns = kernel_ns;
    q->app_ns = app_ns;
    memcpy(q->data, data, (size_t)len);
    fx->totals.queued++;
    __atomic_store_n(&fx->queue_head, head + 1, __ATOMIC_RELEASE);
}

/* SrtpPair's _Context.run: a copy is unprotected (GCM decrypts in place even when the tag
 * then fails, and a resync must retry the datagram as it came). */
static int try_unprotect(fastrx *fx, sock *s, const uint8_t *data, int len, int *plain) {
    if (len > fx->max_packet) return -1;
    memcpy(fx->work, data, (size_t)len);
    *plain = len;
    return srtp_unprotect(s->srtp, fx->work, plain) == 0 ? 0 : -1;
}

static void forget_failing(sock *s, int at) {
    memmove(&s->failing[at], &s->failing[at + 1], (size_t)(s->nfailing - at - 1) * sizeof(failing));
    s->nfailing--;
}

/* SrtpPair._resync_roc: try the stream's ROC and the next few, then clear the pending one. */
static int resync_roc(fastrx *fx, sock *s, const uint8_t *data, int len, uint32_t ssrc,
                      int *plain) {
    uint32_t roc;
    if (srtp_get_stream_roc(s->srtp, ssrc, &roc) != 0) return -1;
    int found = -1;
    for (uint32_t step = 0; step < RESYNC_STEPS && found < 0; step++) {
        uint32_t candidate = roc + step;
        if (candidate == 0) continue; /* to libsrtp a pending ROC of 0 means none */
        srtp_set_stream_roc(s->srtp, ssrc, candidate);
        found = try_unprotect(fx, s, data, len, plain);
    }
    srtp_set_stream_roc(s->srtp, ssrc, 0);
    return found;
}

/* SrtpPair.unprotect: count consecutive failures per SSRC, resync every RESYNC_AFTER. */
static int unprotect_rtp(fastrx *fx, sock *s, const uint8_t *data, int len, int *plain) {
    if (try_unprotect(fx, s, data, len, plain) == 0) {
        if (s->nfailing) {
            uint32_t ssrc = be32(data + 8);
            for (int i = 0; i < s->nfailing; i++)
                if (s->failing[i].ssrc == ssrc) {
                    forget_failing(s, i);
                    break;
                }
        }
        return 0;
    }
    if (len < 12) return -1;
    uint32_t ssrc = be32(data + 8);
    int failures = 1;
    for (int i = 0; i < s->nfailing; i++)
        if (s->failing[i].ssrc == ssrc) {
            failures += s->failing[i].failures;
            forget_failing(s, i);
            break;
        }
    if (s->nfailing >= MAX_FAILING) forget_failing(s, 0);
    s->failing[s->nfailing++] = (failing){ssrc, failures};
    if (failures % RESYNC_AFTER) return -1;
    if (resync_roc(fx, s, data, len, ssrc, plain) < 0) return -1;
    forget_failing(s, s->nfailing - 1);
    s->roc_resyncs++;
    return 0;
}

/* sfu/wire/rtp.py parse_rtp_header: the payload's bounds, or -1 for malformed RTP. */
static int rtp_payload(const uint8_t *p, int size, int *start, int *end) {
    if (size < 12 || p[0] >> 6 != 2) return -1;
    int offset = 12 + 4 * (p[0] & 0x0F);
    if (offset > size) return -1;
    if (p[0] & 0x10) {
        if (offset + 4 > size) return -1;
        offset += 4 + 4 * (p[offset + 2] << 8 | p[offset + 3]);
        if (offset > size) return -1;
    }
    int padding = 0;
    if (p[0] & 0x20) {
        if (size == offset) return -1;
        padding = p[size - 1];
        if (padding == 0 || padding > size - offset) return -1;
    }
    *start = offset;
    *end = size - padding;
    return 0;
}

static int kind_of(const subscriber *sub, uint32_t ssrc, int pt) {
    for (int i = 0; i < sub->nssrc; i++)
        if (sub->ssrcs[i] == ssrc) return sub->ssrc_kinds[i];
    return sub->pt_kinds[pt];
}

/* Subscriber.on_rtp */
static void on_rtp(fastrx *fx, sock *s, const uint8_t *pkt, int start, int end,
                   int64_t kernel_ns, int64_t app_ns) {
    uint32_t ssrc = be32(pkt + 8);
    stream *st = find_stream(fx, s->subscriber, ssrc);
    if (st == NULL) {
        st = add_stream(fx, s->subscriber, ssrc);
        if (st == NULL) {
            fx->totals.untracked++;
            return;
        }
        st->info.kind = kind_of(&fx->subs[s->subscriber], ssrc, pkt[1] & 0x7F);
    }
    st->info.received_total++;
    int offset = st->info.kind == 0 ? 0 : 4;
    if (end - start < offset + PROBE_BYTES) {
        st->info.bad_payloads++;
        return;
    }
    uint64_t send_ns = be64(pkt + start + offset);
    if (send_ns < (uint64_t)fx->start_ns || send_ns >= (uint64_t)fx->end_ns) return;
    seq_packet(&st->info.stats, st->seen, (uint32_t)(pkt[2] << 8 | pkt[3]));
    add_sample(&fx->kernel[st->info.kind], kernel_ns - (int64_t)send_ns);
    add_sample(&fx->app[st->info.kind], app_ns - (int64_t)send_ns);
    if (fx->totals.traced < fx->trace_cap) {
        int64_t *t = &fx->trace[3 * fx->totals.traced++];
        t[0] = s->subscriber;
        t[1] = (int64_t)send_ns;
        t[2] = pkt[2] << 8 | pkt[3];
    }
}

static int from_server(const sock *s, const struct sockaddr_storage *name) {
    if (name->ss_family != s->family) return 0;
    if (s->family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)name;
        return ntohs(a->sin_port) == s->port && memcmp(&a->sin_addr, s->addr, 4) == 0;
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)name;
    return ntohs(a->sin6_port) == s->port && memcmp(&a->sin6_addr, s->addr, 16) == 0;
}

/* MediaTransport.on_datagram, for a datagram already counted. */
static void on_datagram(fastrx *fx, int index, const uint8_t *data, int len, int64_t kernel_ns,
                        int64_t app_ns) {
    sock *s = &fx->socks[index];
    uint8_t first = data[0];
    if (first >= 128 && first <= 191) {
        int plain;
        if (len > 1 && data[1] >= 192 && data[1] <= 223) {
            /* Subscribers ignore RTCP (Client.on_rtcp); unprotecting it still counts
             * failures and moves the SRTCP replay window as the Python path does. */
            if (len > fx->max_packet) {
                s->srtp_errors++;
                return;
            }
            memcpy(fx->work, data, (size_t)len);
            plain = len;
            if (srtp_unprotect_rtcp(s->srtp, fx->work, &plain) != 0) s->srtp_errors++;
            return;
        }
        int start, end;
        if (unprotect_rtp(fx, s, data, len, &plain) < 0 ||
            rtp_payload(fx->work, plain, &start, &end) < 0) {
            s->srtp_errors++;
            return;
        }
        on_rtp(fx, s, fx->work, start, end, kernel_ns, app_ns);
    } else if (first <= 3 || (first >= 20 && first <= 63)) {
        enqueue(fx, index, data, len, kernel_ns, app_ns); /* STUN, DTLS: for Python */
    }
}

/* MediaTransport._on_readable, in batches. offset: CLOCK_REALTIME - CLOCK_MONOTONIC. */
static void read_socket(fastrx *fx, int index, int64_t offset) {
    sock *s = &fx->socks[index];
    for (int done = 0; done < MAX_READS;) {
        int want = MAX_READS - done < BATCH ? MAX_READS - done : BATCH;
        for (int i = 0; i < want; i++) {
            fx->iov[i].iov_base = fx->rx[i];
            fx->iov[i].iov_len = SLOT;
            memset(&fx->msgs[i].msg_hdr, 0, sizeof(struct msghdr));
            fx->msgs[i].msg_hdr.msg_name = &fx->names[i];
            fx->msgs[i].msg_hdr.msg_namelen = sizeof(fx->names[i]);
            fx->msgs[i].msg_hdr.msg_iov = &fx->iov[i];
            fx->msgs[i].msg_hdr.msg_iovlen = 1;
            fx->msgs[i].msg_hdr.msg_control = fx->control[i];
            fx->msgs[i].msg_hdr.msg_controllen = CONTROL;
        }
        int n = recvmmsg(s->fd, fx->msgs, (unsigned)want, MSG_DONTWAIT, NULL);
        if (n <= 0) return; /* EAGAIN, EINTR or a socket error: as transport.py */
        int64_t app_ns = clock_ns(CLOCK_MONOTONIC);
        for (int i = 0; i < n; i++) {
            struct msghdr *h = &fx->msgs[i].msg_hdr;
            int64_t kernel_ns = app_ns;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
                if (c->cmsg_level != SOL_SOCKET) continue;
                if (c->cmsg_type == SO_TIMESTAMPNS &&
                    c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(c), sizeof(ts));
                    kernel_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - offset;
                } else if (c->cmsg_type == SO_RXQ_OVFL &&
                           c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
                    uint32_t drops;
                    memcpy(&drops, CMSG_DATA(c), sizeof(drops));
                    s->socket_drops = drops;
                }
            }
            int len = (int)fx->msgs[i].msg_len;
            if (len == 0 || !from_server(s, &fx->names[i])) continue;
            __atomic_fetch_add(&s->datagrams_received, 1, __ATOMIC_RELAXED);
            on_datagram(fx, index, fx->rx[i], len, kernel_ns, app_ns);
        }
        done += n;
        if (n < want) return; /* drained; epoll says when more comes */
    }
}

/* -- the loop ------------------------------------------------------------------------- */

/* Receive until until_ns (CLOCK_MONOTONIC) or fastrx_stop; packets whose probe says they
 * were sent in [start_ns, end_ns) are measured. 0: time is up, 1: stopped, -1: error. */
EXPORT int fastrx_run(fastrx *fx, int64_t start_ns, int64_t end_ns, int64_t until_ns) {
    fx->start_ns = start_ns;
    fx->end_ns = end_ns;
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int64_t now = clock_ns(CLOCK_MONOTONIC);
        if (now >= until_ns) return 0;
        int64_t wait_ms = (until_ns - now + 999999) / 1000000;
        int n = epoll_wait(fx->epoll_fd, events, MAX_EVENTS,
                           (int)(wait_ms < WAIT_CAP_MS ? wait_ms : WAIT_CAP_MS));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        /* One clock pair per wakeup converts the kernel's CLOCK_REALTIME stamps. */
        int64_t offset = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);
        for (int i = 0; i < n; i++) {
            if (events[i].data.u32 == STOP_TAG) return 1;
            read_socket(fx, (int)events[i].data.u32, offset);
        }
    }
}

EXPORT void fastrx_stop(fastrx *fx) {
    uint64_t one = 1;
    ssize_t written = write(fx->stop_fd, &one, sizeof(one));
    (void)written; /* a full counter is still readable, which is all that matters */
}

EXPORT int64_t fastrx_datagrams_received(fastrx *fx) {
    int64_t total = 0;
    for (int i = 0; i < fx->nsocks; i++)
        total += __atomic_load_n(&fx->socks[i].datagrams_received, __ATOMIC_RELAXED);
    return total;
}

/* The oldest queued datagram into buffer: its length, 0 if none, -1 if buffer is small. */
EXPORT int fastrx_pop(fastrx *fx, uint8_t *buffer, int size, int32_t *sock_index,
                      int64_t *kernel_ns, int64_t *app_ns) {
    uint32_t tail = fx->queue_tail;
    if (tail == __atomic_load_n(&fx->queue_head, __ATOMIC_ACQUIRE)) return 0;
    queued *q = &fx->queue[tail % QUEUE_LEN];
    if (q->len > size) return -1;
    memcpy(buffer, q->data, (size_t)q->len);
    *sock_index = q->sock;
    *kernel_ns = q->kernel_ns;
    *app_ns = q->app_ns;
    int len = q->len;
    __atomic_store_n(&fx->queue_tail, tail + 1, __ATOMIC_RELEASE);
    return len;
}

/* -- results -------------------------------------------------------------------------- */

EXPORT int fastrx_stream_count(fastrx *fx) { return fx->nstreams; }

EXPORT int fastrx_get_stream(fastrx *fx, int index, fastrx_stream_info *info, int64_t *seen) {
    if (index < 0 || index >= fx->nstreams) return -1;
    *info = fx->streams[index].info;
    memcpy(seen, fx->streams[index].seen, sizeof(fx->streams[index].seen));
    return 0;
}

EXPORT int fastrx_get_socket(fastrx *fx, int index, fastrx_socket_info *info) {
    if (index < 0 || index >= fx->nsocks) return -1;
    const sock *s = &fx->socks[index];
    info->datagrams_received = s->datagrams_received;
    info->srtp_errors = s->srtp_errors;
    info->roc_resyncs = s->roc_resyncs;
    info->socket_drops = s->socket_drops;
    return 0;
}

EXPORT void fastrx_get_totals(fastrx *fx, fastrx_totals *totals) { *totals = fx->totals; }

/* Latency samples of one kind (app: 0 kernel stamp, 1 read time); *values stays valid
 * until fastrx_free. */
EXPORT int64_t fastrx_samples(fastrx *fx, int kind, int app, const int64_t **values,
                              int64_t *overflow) {
    if (kind < 0 || kind >= KINDS) return -1;
    const samples *s = app ? &fx->app[kind] : &fx->kernel[kind];
    *values = s->values;
    *overflow = s->overflow;
    return s->len;
}
