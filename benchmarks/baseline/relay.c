/* The physical bound for the SFU's fan-out: the least work a relay can do per packet.
 *
 * One loopback UDP socket; for each batch from recvmmsg: srtp_unprotect once, then for
 * every subscriber copy the packet, write the subscriber's SSRC, srtp_protect it with
 * the subscriber's own context and queue it; sendmmsg the queue. No routing, no RTCP,
 * no Python. benchmarks/baseline/run.py builds, drives and measures it.
 *
 * Usage: relay MAX_SECONDS, with the keys on stdin, one line each:
 *     rx HEXKEY                 the publisher's master key + salt (28 bytes, AES-128-GCM)
 *     tx PORT SSRC HEXKEY       one line per subscriber on 127.0.0.1
 *     end
 * then "ready PORT LIBSRTP_VERSION" on stdout. SIGUSR1 prints a "stats ..." line (see
 * print_stats); SIGTERM, a closed parent or MAX_SECONDS ends the relay after a last one.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* libsrtp 2.x, from the OpenSSL-backed build inside the pylibsrtp wheel. Only what is
 * used is declared; the layouts follow include/srtp.h of libsrtp 2.x. */
typedef struct {
    uint32_t cipher_type;
    int cipher_key_len;
    uint32_t auth_type;
    int auth_key_len;
    int auth_tag_len;
    int sec_serv; /* srtp_sec_serv_t */
} srtp_crypto_policy_t;

enum { SSRC_ANY_INBOUND = 2, SSRC_ANY_OUTBOUND = 3 }; /* srtp_ssrc_type_t */

typedef struct {
    int type; /* srtp_ssrc_type_t */
    unsigned int value;
} srtp_ssrc_t;

typedef struct srtp_policy_t {
    srtp_ssrc_t ssrc;
    srtp_crypto_policy_t rtp;
    srtp_crypto_policy_t rtcp;
    unsigned char *key;
    void **keys; /* srtp_master_key_t **, unused: one key */
    unsigned long num_master_keys;
    void *deprecated_ekt;
    unsigned long window_size;
    int allow_repeat_tx;
    int *enc_xtn_hdr;
    int enc_xtn_hdr_count;
    struct srtp_policy_t *next;
} srtp_policy_t;

typedef struct srtp_ctx_t_ *srtp_t;

int srtp_init(void); /* every int below is srtp_err_status_t; 0 is ok */
int srtp_create(srtp_t *session, const srtp_policy_t *policy);
int srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr);
int srtp_unprotect(srtp_t ctx, void *srtp_hdr, int *len_ptr);
void srtp_crypto_policy_set_aes_gcm_128_16_auth(srtp_crypto_policy_t *p);
const char *srtp_get_version_string(void);

/* The wheel's .so is a CPython extension: it refers to the interpreter's None object,
 * whose address the dynamic linker must find at load time. The relay never enters the
 * Python half of the .so, so an unused stand-in satisfies it (its functions bind lazily
 * and are never called). */
__attribute__((visibility("default"), used)) char _Py_NoneStruct[64];

#define KEY_LEN 28          /* SRTP_AES_GCM_128_KEY_LEN_WSALT */
#define TRAILER_LEN 144     /* SRTP_MAX_TRAILER_LEN */
#define MAX_RTP 1500
#define SLOT (MAX_RTP + TRAILER_LEN)
#define IN_BATCH 32
#define OUT_BATCH 64
#define MAX_SUBSCRIBERS 1024
#define REPLAY_WINDOW 1024 /* as sfu/proto/srtp.py */

typedef struct {
    srtp_t srtp;
    struct sockaddr_in addr;
    uint32_t ssrc_be;
} subscriber;

static subscriber subscribers[MAX_SUBSCRIBERS];
static int subscriber_count;
static srtp_t inbound;
static int fd;

static uint8_t in_buf[IN_BATCH][SLOT];
static struct iovec in_iov[IN_BATCH];
static struct mmsghdr in_msgs[IN_BATCH];
static uint8_t out_buf[OUT_BATCH][SLOT];
static struct iovec out_iov[OUT_BATCH];
static struct mmsghdr out_msgs[OUT_BATCH];
static int out_queued;

static uint64_t received, unprotect_errors, forwarded, protect_errors, send_errors;
static volatile sig_atomic_t want_stats, want_stop;

static void on_signal(int sig) {
    if (sig == SIGUSR1)
        want_stats = 1;
    else
        want_stop = 1;
}

static void die(const char *what, const char *why) {
    fprintf(stderr, "relay: %s: %s\n", what, why);
    exit(1);
}

static void die_errno(const char *what) { die(what, strerror(errno)); }

static uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double monotonic_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_stats(void) {
    printf("stats received=%llu unprotect_errors=%llu forwarded=%llu protect_errors=%llu "
           "send_errors=%llu cpu_ns=%llu\n",
           (unsigned long long)received, (unsigned long long)unprotect_errors,
           (unsigned long long)forwarded, (unsigned long long)protect_errors,
           (unsigned long long)send_errors, (unsigned long long)cpu_ns());
    fflush(stdout);
}

static int parse_key(const char *hex, unsigned char *key) {
    if (strlen(hex) != 2 * KEY_LEN) return -1;
    for (int i = 0; i < KEY_LEN; i++) {
        unsigned int byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return -1;
        key[i] = (unsigned char)byte;
    }
    return 0;
}

static srtp_t make_context(int ssrc_type, unsigned char *key) {
    srtp_policy_t policy;
    srtp_t session;
    memset(&policy, 0, sizeof policy);
    srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp);
    srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp);
    policy.ssrc.type = ssrc_type;
    policy.key = key;
    policy.window_size = REPLAY_WINDOW;
    policy.allow_repeat_tx = ssrc_type == SSRC_ANY_OUTBOUND;
    if (srtp_create(&session, &policy) != 0) die("srtp_create", "libsrtp refused the policy");
    return session; /* libsrtp has copied the key into its own state */
}

static void read_keys(void) {
    char line[256], hex[128];
    unsigned char key[KEY_LEN];
    unsigned int port, ssrc;
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "end", 3) == 0) {
            if (inbound == NULL || subscriber_count == 0)
                die("keys", "need an rx line and at least one tx line");
            return;
        }
        if (sscanf(line, "rx %127s", hex) == 1) {
            if (parse_key(hex, key) != 0) die("keys", "bad rx key");
            inbound = make_context(SSRC_ANY_INBOUND, key);
        } else if (sscanf(line, "tx %u %u %127s", &port, &ssrc, hex) == 3) {
            if (subscriber_count == MAX_SUBSCRIBERS || port == 0 || port > 65535)
                die("keys", "bad tx line");
            if (parse_key(hex, key) != 0) die("keys", "bad tx key");
            subscriber *sub = &subscribers[subscriber_count++];
            sub->srtp = make_context(SSRC_ANY_OUTBOUND, key);
            sub->addr.sin_family = AF_INET;
            sub->addr.sin_port = htons((uint16_t)port);
            sub->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            sub->ssrc_be = htonl(ssrc);
        } else {
            die("keys", "unknown line");
        }
    }
    die("keys", "no end line");
}

static void open_socket(void) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int rcvbuf = 4 << 20, sndbuf = 4 << 20;
    struct timeval wake = {.tv_sec = 0, .tv_usec = 200000}; /* to check the deadline */
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die_errno("socket");
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wake, sizeof wake);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die_errno("bind");
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) die_errno("getsockname");
    for (int i = 0; i < IN_BATCH; i++) {
        in_iov[i].iov_base = in_buf[i];
        in_iov[i].iov_len = MAX_RTP;
        in_msgs[i].msg_hdr.msg_iov = &in_iov[i];
        in_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    for (int i = 0; i < OUT_BATCH; i++) {
        out_iov[i].iov_base = out_buf[i];
        out_msgs[i].msg_hdr.msg_iov = &out_iov[i];
        out_msgs[i].msg_hdr.msg_iovlen = 1;
        out_msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    }
    printf("ready %u %s\n", ntohs(addr.sin_port), srtp_get_version_string());
    fflush(stdout);
}

static void flush_queue(void) {
    int done = 0;
    while (done < out_queued) {
        int sent = sendmmsg(fd, out_msgs + done, (unsigned int)(out_queued - done), 0);
        if (sent > 0) {
            forwarded += (uint64_t)sent;
            done += sent;
        } else if (sent < 0 && errno == EINTR) {
            continue;
        } else {
            send_errors++; /* drop the datagram the kernel refused, send the rest */
            done++;
        }
    }
    out_queued = 0;
}

static void fan_out(const uint8_t *packet, int len) {
    for (int s = 0; s < subscriber_count; s++) {
        subscriber *sub = &subscribers[s];
        uint8_t *copy = out_buf[out_queued];
        int out_len = len;
        memcpy(copy, packet, (size_t)len);
        memcpy(copy + 8, &sub->ssrc_be, 4);
        if (srtp_protect(sub->srtp, copy, &out_len) != 0) {
            protect_errors++;
            continue;
        }
        out_iov[out_queued].iov_len = (size_t)out_len;
        out_msgs[out_queued].msg_hdr.msg_name = &sub->addr;
        if (++out_queued == OUT_BATCH) flush_queue();
    }
}

int main(int argc, char **argv) {
    struct sigaction action;
    double deadline;
    if (argc != 2 || atof(argv[1]) <= 0) {
        fprintf(stderr, "usage: relay MAX_SECONDS < keys\n");
        return 2;
    }
    deadline = monotonic_s() + atof(argv[1]);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal; /* no SA_RESTART: a signal ends the blocking recvmmsg */
    sigaction(SIGUSR1, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    if (srtp_init() != 0) die("srtp_init", "libsrtp failed to start");
    read_keys();
    open_socket();

    while (!want_stop && monotonic_s() < deadline) {
        if (want_stats) {
            want_stats = 0;
            print_stats();
        }
        int n = recvmmsg(fd, in_msgs, IN_BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            die_errno("recvmmsg");
        }
        for (int i = 0; i < n; i++) {
            int len = (int)in_msgs[i].msg_len;
            received++;
            if (len < 12 || srtp_unprotect(inbound, in_buf[i], &len) != 0) {
                unprotect_errors++;
                continue;
            }
            fan_out(in_buf[i], len);
        }
        flush_queue();
    }
    print_stats();
    return 0;
}
