/*
 * chat-bench's timed phase in C: paced sends and per-message checking.
 *
 * Why C: on a machine the load generator shares with the relay, its CPU per
 * delivered message caps what any server can show (redis-benchmark and wrk
 * are C for the same reason). Python still connects and does every
 * handshake (benchmarks/loadproc.py, benchmarks/dialects.py); it hands the
 * ready sockets to this engine and calls eng_run() in short slices, reading
 * counts back between them for progress and control messages.
 *
 * The checks are those of benchmarks/dialects.py, message for message:
 * native frames are walked by their length prefix and every body must be
 * one well-formed msgpack map; a msg in the peer's room has its seq checked
 * (benchmarks/seqcheck.py's StreamChecker) and the send time at the head of
 * its text recorded. Text and IRC lines carry the payload whose sender id and
 * counter are checked per sender, with the exact length payload.make gives.
 * No Python API is used: loaded with ctypes, so no Python headers are needed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { D_NATIVE = 0, D_TEXT = 1, D_IRC = 2 };

#define MAX_FRAME (16u * 1024 * 1024) /* as dialects.MAX_FRAME */
#define MAX_LINE (1u << 20)            /* as dialects.MAX_LINE */
#define MAX_MISSING 100000             /* as StreamChecker.max_missing */
#define MAX_SENDER_ID 1000000          /* a larger id in a line is corrupt */
#define ERR_TEXT 200                   /* bytes of an error kept: dialects.ERROR_TEXT */
#define TS_DIGITS 20
#define HEADER_MIN (2 + TS_DIGITS + 1)
#define RECV_SIZE (256 * 1024)
#define TICK_EVENTS 32
#define MAX_EVENTS 1024
#define HIST_SUB 2048 /* values below are exact; above, 1024 buckets per power of two */
#define HIST_TOP 120000000LL /* histo.HIGHEST_US */
#define HIST_BUCKETS (HIST_SUB + 17 * 1024)

/* A set of int64 (open addressing), for the numbers a gap skipped. */
typedef struct {
    int64_t *keys;
    uint8_t *state; /* 0 empty, 1 full, 2 deleted */
    size_t cap, len, used;
} iset;

static size_t iset_slot(int64_t k, size_t cap) {
    uint64_t h = (uint64_t)k * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static int iset_grow(iset *s) {
    size_t ncap = s->cap ? s->cap * 2 : 64;
    while (ncap < (s->len + 1) * 2) ncap *= 2;
    int64_t *keys = calloc(ncap, sizeof *keys);
    uint8_t *state = calloc(ncap, 1);
    if (!keys || !state) {
        free(keys);
        free(state);
        return -1;
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (s->state[i] != 1) continue;
        size_t j = iset_slot(s->keys[i], ncap);
        while (state[j]) j = (j + 1) & (ncap - 1);
        keys[j] = s->keys[i];
        state[j] = 1;
    }
    free(s->keys);
    free(s->state);
    s->keys = keys;
    s->state = state;
    s->cap = ncap;
    s->used = s->len;
    return 0;
}

static void iset_add(iset *s, int64_t k) {
    if ((s->used + 1) * 2 > s->cap && iset_grow(s) < 0) return;
    size_t j = iset_slot(k, s->cap), tomb = (size_t)-1;
    while (s->state[j]) {
        if (s->state[j] == 1 && s->keys[j] == k) return;
        if (s->state[j] == 2 && tomb == (size_t)-1) tomb = j;
        j = (j + 1) & (s->cap - 1);
    }
    if (tomb != (size_t)-1) {
        j = tomb;
    } else {
        s->used++;
    }
    s->keys[j] = k;
    s->state[j] = 1;
    s->len++;
}

static int iset_remove(iset *s, int64_t k) {
    if (!s->len) return 0;
    size_t j = iset_slot(k, s->cap);
    while (s->state[j]) {
        if (s->state[j] == 1 && s->keys[j] == k) {
            s->state[j] = 2;
            s->len--;
            return 1;
        }
        j = (j + 1) & (s->cap - 1);
    }
    return 0;
}

/* StreamChecker: numbers should arrive as next, next+1, ... */
typedef struct {
    int64_t next, unique, duplicates, reorders, gaps;
    int overflow, used;
    iset missing;
} checker;

static void check_slow(checker *c, int64_t n) {
    if (n > c->next) {
        int64_t skipped = n - c->next;
        int64_t room = MAX_MISSING - (int64_t)c->missing.len;
        c->gaps += skipped;
        if (skipped > room) c->overflow = 1;
        int64_t keep = skipped < room ? skipped : (room > 0 ? room : 0);
        for (int64_t k = 0; k < keep; k++) iset_add(&c->missing, c->next + k);
        c->next = n + 1;
        c->unique++;
    } else if (iset_remove(&c->missing, n)) {
        c->gaps--;
        c->reorders++;
        c->unique++;
    } else {
        c->duplicates++;
    }
}

static inline void check_see(checker *c, int64_t n) {
    if (n == c->next) {
        c->next = n + 1;
        c->unique++;
    } else {
        check_slow(c, n);
    }
}

typedef struct {
    int fd, sender, room, sender_id, alive, dead;
    char *pend; /* an incomplete frame or line, waiting for the rest */
    size_t plen, pcap;
    char *out; /* bytes the kernel did not take yet */
    size_t olen, ocap;
    int64_t delivered, corrupt, counter;
    checker chk;       /* native: the room's seq */
    checker *streams;  /* text, IRC: one per sender id */
    int nstreams;
    char err[ERR_TEXT + 1];
} conn;

typedef struct {
    int dialect, size, epfd, n, nrooms, nsenders;
    conn *conns;
    char **rooms;
    int *room_len;
    int *senders; /* conn indices, in the order messages are dealt to them */
    int64_t *sent_per_room, *expect;
    int has_expect;
    /* the schedule (benchmarks/pacing.py) */
    int64_t t0, count, next_index, late, max_lag, late_threshold;
    double rate;
    int64_t measure_from, window_from, window_to, window_deliveries;
    uint64_t hist[HIST_BUCKETS];
    uint64_t lag_hist[HIST_BUCKETS]; /* how late each timed message left (send lag) */
    char *rbuf;
    size_t rcap;
    char *mbuf; /* one message being built */
    size_t mcap;
} engine;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 256;
    while (ncap < need) ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (!nb) return -1;
    *buf = nb;
    *cap = ncap;
    return 0;
}

static void hist_record(uint64_t *hist, int64_t us) {
    if (us < 1) us = 1;
    if (us > HIST_TOP) us = HIST_TOP;
    size_t idx;
    if (us < HIST_SUB) {
        idx = (size_t)us;
    } else {
        int shift = 64 - __builtin_clzll((uint64_t)us) - 11; /* >= 1 */
        idx = HIST_SUB + (size_t)(shift - 1) * 1024 + (size_t)((us >> shift) - 1024);
    }
    hist[idx]++;
}

static int64_t hist_value(size_t idx) {
    if (idx < HIST_SUB) return (int64_t)idx;
    size_t shift = (idx - HIST_SUB) / 1024 + 1;
    return (int64_t)(1024 + (idx - HIST_SUB) % 1024) << shift;
}

/* ---- engine life ---------------------------------------------------------- */

engine *eng_new(int dialect, int size, int n, const int *fds, const int *is_sender,
                const int *room_of, const int *sender_ids, const int64_t *next_seq,
                const int64_t *counters, int nrooms, const char *const *rooms) {
    engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->dialect = dialect;
    e->size = size;
    e->n = n;
    e->nrooms = nrooms;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->conns = calloc((size_t)(n ? n : 1), sizeof *e->conns);
    e->senders = calloc((size_t)(n ? n : 1), sizeof *e->senders);
    e->rooms = calloc((size_t)nrooms, sizeof *e->rooms);
    e->room_len = calloc((size_t)nrooms, sizeof *e->room_len);
    e->sent_per_room = calloc((size_t)nrooms, sizeof *e->sent_per_room);
    e->expect = calloc((size_t)nrooms, sizeof *e->expect);
    e->rcap = RECV_SIZE;
    e->rbuf = malloc(e->rcap);
    e->late_threshold = 1000000;
    if (e->epfd < 0 || !e->conns || !e->senders || !e->rooms || !e->room_len ||
        !e->sent_per_room || !e->expect || !e->rbuf)
        return NULL; /* the caller falls back to Python; a leak here is once per run */
    for (int r = 0; r < nrooms; r++) {
        e->rooms[r] = strdup(rooms[r]);
        e->room_len[r] = (int)strlen(rooms[r]);
    }
    for (int i = 0; i < n; i++) {
        conn *c = &e->conns[i];
        c->fd = fds[i];
        c->sender = is_sender[i];
        c->room = room_of[i];
        c->sender_id = sender_ids[i];
        c->alive = fds[i] >= 0;
        c->chk.next = next_seq[i];
        c->counter = counters[i];
        if (c->sender && c->alive) e->senders[e->nsenders++] = i;
    }
    for (int i = 0; i < n; i++) {
        conn *c = &e->conns[i];
        if (!c->alive) continue;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, c->fd, &ev);
    }
    return e;
}

void eng_free(engine *e) {
    if (!e) return;
    for (int i = 0; i < e->n; i++) {
        conn *c = &e->conns[i];
        free(c->pend);
        free(c->out);
        free(c->chk.missing.keys);
        free(c->chk.missing.state);
        for (int s = 0; s < c->nstreams; s++) {
            free(c->streams[s].missing.keys);
            free(c->streams[s].missing.state);
        }
        free(c->streams);
    }
    for (int r = 0; r < e->nrooms; r++) free(e->rooms[r]);
    if (e->epfd >= 0) close(e->epfd); /* the sockets stay Python's */
    free(e->conns);
    free(e->senders);
    free(e->rooms);
    free(e->room_len);
    free(e->sent_per_room);
    free(e->expect);
    free(e->rbuf);
    free(e->mbuf);
    free(e);
}

void eng_schedule(engine *e, int64_t t0, double rate, int64_t count, int64_t measure_from,
                  int64_t window_from, int64_t window_to) {
    e->t0 = t0;
    e->rate = rate;
    e->count = count;
    e->next_index = 0;
    e->measure_from = measure_from;
    e->window_from = window_from;
    e->window_to = window_to;
}

void eng_expect(engine *e, const int64_t *per_room) {
    memcpy(e->expect, per_room, sizeof(int64_t) * (size_t)e->nrooms);
    e->has_expect = 1;
}

/* ---- connection end ------------------------------------------------------- */

static void lost(engine *e, conn *c, const char *why) {
    if (!c->err[0]) snprintf(c->err, sizeof c->err, "%s", why);
    if (c->alive) {
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        c->alive = 0;
    }
}

static void want_out(engine *e, conn *c, int on) {
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)(c - e->conns)};
    epoll_ctl(e->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void write_conn(engine *e, conn *c, const char *data, size_t len) {
    if (!c->alive || !len) return;
    if (c->olen) {
        if (grow(&c->out, &c->ocap, c->olen + len) == 0) {
            memcpy(c->out + c->olen, data, len);
            c->olen += len;
        }
        return;
    }
    ssize_t k = send(c->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (k < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            char why[80];
            snprintf(why, sizeof why, "send: %s", strerror(errno));
            lost(e, c, why);
            return;
        }
        k = 0;
    }
    if ((size_t)k < len) {
        if (grow(&c->out, &c->ocap, len - (size_t)k) == 0) {
            memcpy(c->out, data + k, len - (size_t)k);
            c->olen = len - (size_t)k;
            want_out(e, c, 1);
        }
    }
}

static void flush_conn(engine *e, conn *c) {
    if (!c->olen || !c->alive) return;
    ssize_t k = send(c->fd, c->out, c->olen, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (k < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        char why[80];
        snprintf(why, sizeof why, "send: %s", strerror(errno));
        lost(e, c, why);
        return;
    }
    memmove(c->out, c->out + k, c->olen - (size_t)k);
    c->olen -= (size_t)k;
    if (!c->olen) want_out(e, c, 0);
}

/* ---- msgpack, just enough to walk a map ------------------------------------ */

typedef struct {
    const uint8_t *p, *end;
} mp;

static int need(mp *m, size_t n) { return (size_t)(m->end - m->p) >= n; }

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Reads one value's header. kind: 's' str, 'i' int, 'm' map, 'a' array, 'b' bin,
 * 'x' ext, 'n' nil/bool/float (skipped whole). For s/b/x, *len is the byte
 * length; for m/a, the element count; for i, *ival the value. -1 if malformed. */
static int mp_head(mp *m, char *kind, uint64_t *len, int64_t *ival) {
    if (!need(m, 1)) return -1;
    uint8_t b = *m->p++;
    if (b <= 0x7f) { *kind = 'i'; *ival = b; return 0; }
    if (b >= 0xe0) { *kind = 'i'; *ival = (int8_t)b; return 0; }
    if ((b & 0xf0) == 0x80) { *kind = 'm'; *len = b & 0x0f; return 0; }
    if ((b & 0xf0) == 0x90) { *kind = 'a'; *len = b & 0x0f; return 0; }
    if ((b & 0xe0) == 0xa0) { *kind = 's'; *len = b & 0x1f; return 0; }
    int n;
    switch (b) {
    case 0xc0: case 0xc2: case 0xc3: *kind = 'n'; return 0;
    case 0xca: *kind = 'n'; return need(m, 4) ? (m->p += 4, 0) : -1;
    case 0xcb: *kind = 'n'; return need(m, 8) ? (m->p += 8, 0) : -1;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        n = 1 << (b - 0xcc);
        if (!need(m, (size_t)n)) return -1;
        *kind = 'i';
        *ival = (int64_t)be(m->p, n); /* a uint64 over INT64_MAX never matches a seq */
        m->p += n;
        return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        n = 1 << (b - 0xd0);
        if (!need(m, (size_t)n)) return -1;
        uint64_t u = be(m->p, n);
        int bits = 8 * n;
        *ival = bits == 64 ? (int64_t)u : (int64_t)(u ^ (1ull << (bits - 1))) - (int64_t)(1ull << (bits - 1));
        *kind = 'i';
        m->p += n;
        return 0;
    }
    case 0xd9: case 0xda: case 0xdb: n = 1 << (b - 0xd9); *kind = 's'; break;
    case 0xc4: case 0xc5: case 0xc6: n = 1 << (b - 0xc4); *kind = 'b'; break;
    case 0xdc: case 0xdd: n = b == 0xdc ? 2 : 4; *kind = 'a'; break;
    case 0xde: case 0xdf: n = b == 0xde ? 2 : 4; *kind = 'm'; break;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        *kind = 'x';
        *len = (uint64_t)1 << (b - 0xd4);
        if (!need(m, 1)) return -1;
        m->p++; /* type byte */
        return 0;
    case 0xc7: case 0xc8: case 0xc9:
        n = 1 << (b - 0xc7);
        if (!need(m, (size_t)n + 1)) return -1;
        *kind = 'x';
        *len = be(m->p, n);
        m->p += n + 1;
        return 0;
    default: return -1; /* 0xc1 is never used */
    }
    if (!need(m, (size_t)n)) return -1;
    *len = be(m->p, n);
    m->p += n;
    return 0;
}

static int mp_skip(mp *m, int depth) {
    char kind;
    uint64_t len = 0;
    int64_t iv;
    if (depth > 64 || mp_head(m, &kind, &len, &iv) < 0) return -1;
    if (kind == 's' || kind == 'b' || kind == 'x') {
        if (!need(m, len)) return -1;
        m->p += len;
    } else if (kind == 'a' || kind == 'm') {
        uint64_t items = kind == 'm' ? len * 2 : len;
        for (uint64_t i = 0; i < items; i++)
            if (mp_skip(m, depth + 1) < 0) return -1;
    }
    return 0;
}

static int key_is(const uint8_t *k, uint64_t klen, const char *name) {
    size_t n = strlen(name);
    return klen == n && memcmp(k, name, n) == 0;
}

/* The fields a receiver looks at; a missing one has ptr NULL / has 0. */
typedef struct {
    const uint8_t *t, *room, *text, *code;
    uint64_t tlen, roomlen, textlen, codelen;
    int has_seq, seq_is_int;
    int64_t seq;
} body_fields;

/* 0 if `b` is one msgpack map with string keys and nothing after it. */
static int parse_body(const uint8_t *b, size_t len, body_fields *f) {
    mp m = {b, b + len};
    char kind;
    uint64_t n = 0;
    int64_t iv;
    memset(f, 0, sizeof *f);
    if (mp_head(&m, &kind, &n, &iv) < 0 || kind != 'm') return -1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t klen = 0;
        if (mp_head(&m, &kind, &klen, &iv) < 0 || (kind != 's' && kind != 'b') || !need(&m, klen))
            return -1;
        const uint8_t *k = m.p;
        m.p += klen;
        const uint8_t *vstart = m.p;
        uint64_t vlen = 0;
        char vkind;
        if (mp_head(&m, &vkind, &vlen, &iv) < 0) return -1;
        if (vkind == 's') {
            if (!need(&m, vlen)) return -1;
            if (key_is(k, klen, "t")) { f->t = m.p; f->tlen = vlen; }
            else if (key_is(k, klen, "room")) { f->room = m.p; f->roomlen = vlen; }
            else if (key_is(k, klen, "text")) { f->text = m.p; f->textlen = vlen; }
            else if (key_is(k, klen, "code")) { f->code = m.p; f->codelen = vlen; }
            m.p += vlen;
        } else if (key_is(k, klen, "seq")) {
            f->has_seq = 1;
            f->seq_is_int = vkind == 'i';
            f->seq = iv;
            m.p = vstart;
            if (mp_skip(&m, 0) < 0) return -1;
        } else {
            m.p = vstart;
            if (mp_skip(&m, 0) < 0) return -1;
        }
    }
    return m.p == m.end ? 0 : -1;
}

/* Digits only, 1..19 of them; -1 otherwise. */
static int64_t parse_uint(const uint8_t *p, size_t n) {
    if (n == 0 || n > 19) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* The send time at the head of a payload (payload.ts_of); -1 if it is not one. */
static int64_t ts_of(const uint8_t *text, size_t len) {
    if (len < 3) return -1;
    size_t n = len - 2 < TS_DIGITS ? len - 2 : TS_DIGITS;
    /* 20 digits may exceed int64; send times in ns fit in 19 significant ones */
    size_t skip = 0;
    while (skip + 19 < n && text[2 + skip] == '0') skip++;
    if (n - skip > 19) return -1;
    return parse_uint(text + 2 + skip, n - skip);
}

static void record_latency(engine *e, int64_t ts, int64_t now) {
    if (ts >= e->measure_from) hist_record(e->hist, (now - ts) / 1000);
}

/* ---- receive: native ------------------------------------------------------ */

static size_t scan_native(engine *e, conn *c, const uint8_t *data, size_t end, int64_t now) {
    size_t pos = 0;
    const char *room = e->rooms[c->room];
    size_t rlen = (size_t)e->room_len[c->room];
    while (end - pos >= 4) {
        uint32_t length = (uint32_t)be(data + pos, 4);
        if (length > MAX_FRAME) {
            c->dead = 1;
            snprintf(c->err, sizeof c->err, "frame_too_large");
            c->corrupt++;
            break;
        }
        size_t stop = pos + 4 + length;
        if (stop > end) break;
        body_fields f;
        int bad = parse_body(data + pos + 4, length, &f);
        pos = stop;
        if (bad) {
            c->corrupt++;
            continue;
        }
        if (f.t && f.tlen == 3 && memcmp(f.t, "msg", 3) == 0) {
            if (!f.room || f.roomlen != rlen || memcmp(f.room, room, rlen) != 0) continue;
            if (f.has_seq && f.seq_is_int) {
                check_see(&c->chk, f.seq);
            } else {
                c->corrupt++;
                continue;
            }
            c->delivered++;
            if (now >= e->window_from && now <= e->window_to) e->window_deliveries++;
            int64_t ts = f.text ? ts_of(f.text, f.textlen) : -1;
            if (ts < 0) {
                c->corrupt++;
                continue;
            }
            record_latency(e, ts, now);
        } else if (f.t && f.tlen == 6 && memcmp(f.t, "joined", 6) == 0 && f.room &&
                   f.roomlen == rlen && memcmp(f.room, room, rlen) == 0) {
            c->chk.next = (f.has_seq && f.seq_is_int ? f.seq : 0) + 1;
        } else if (f.t && f.tlen == 5 && memcmp(f.t, "error", 5) == 0) {
            if (f.code)
                snprintf(c->err, sizeof c->err, "%.*s", (int)f.codelen, (const char *)f.code);
            else
                snprintf(c->err, sizeof c->err, "error");
        }
    }
    return pos;
}

/* ---- receive: text and IRC lines ------------------------------------------- */

static checker *stream_of(conn *c, int64_t sid) {
    if (sid >= c->nstreams) {
        int n = c->nstreams ? c->nstreams : 8;
        while (n <= sid) n *= 2;
        checker *s = realloc(c->streams, sizeof *s * (size_t)n);
        if (!s) return NULL;
        memset(s + c->nstreams, 0, sizeof *s * (size_t)(n - c->nstreams));
        c->streams = s;
        c->nstreams = n;
    }
    checker *s = &c->streams[sid];
    if (!s->used) {
        s->used = 1;
        s->next = 1;
    }
    return s;
}

static const uint8_t *find2(const uint8_t *p, size_t n, char a, char b) {
    while (n >= 2) {
        const uint8_t *q = memchr(p, a, n - 1);
        if (!q) return NULL;
        if (q[1] == (uint8_t)b) return q;
        n -= (size_t)(q - p) + 1;
        p = q + 1;
    }
    return NULL;
}

/* payload.parse_span: (ts, sender id, counter) of the payload at line[i:end]. */
static int parse_payload(const uint8_t *line, size_t i, size_t end, int size, int64_t *ts,
                         int64_t *sid, int64_t *counter) {
    if (end < i + HEADER_MIN) return -1;
    const uint8_t *p = line + i + HEADER_MIN, *stop = line + end;
    const uint8_t *sp1 = memchr(p, ' ', (size_t)(stop - p));
    if (!sp1) return -1;
    const uint8_t *sp2 = memchr(sp1 + 1, ' ', (size_t)(stop - sp1 - 1));
    if (!sp2) return -1;
    size_t slen = (size_t)(sp1 - p), clen = (size_t)(sp2 - sp1 - 1);
    size_t head = HEADER_MIN + slen + clen + 2;
    size_t want = (size_t)size > head ? (size_t)size : head;
    if (end - i != want) return -1;
    *sid = parse_uint(p, slen);
    *counter = parse_uint(sp1 + 1, clen);
    *ts = ts_of(line + i, TS_DIGITS + 2);
    if (*sid < 0 || *sid > MAX_SENDER_ID || *counter < 0 || *ts < 0) return -1;
    return 0;
}

static void control_line(engine *e, conn *c, const uint8_t *line, size_t len) {
    while (len && line[len - 1] == '\r') len--;
    if (e->dialect == D_TEXT) {
        /* TextLoadPeer.control once ready: anything but a "* " notice is corrupt */
        if (len && !(len >= 2 && line[0] == '*' && line[1] == ' ')) c->corrupt++;
        return;
    }
    if (len >= 4 && memcmp(line, "PING", 4) == 0) {
        char reply[600];
        size_t rest = len - 4 < 500 ? len - 4 : 500;
        memcpy(reply, "PONG", 4);
        memcpy(reply + 4, line + 4, rest);
        memcpy(reply + 4 + rest, "\r\n", 2);
        write_conn(e, c, reply, rest + 6);
        return;
    }
    if (len >= 5 && memcmp(line, "ERROR", 5) == 0) {
        snprintf(c->err, sizeof c->err, "%.*s", (int)len, (const char *)line);
        return;
    }
    const uint8_t *sp = memchr(line, ' ', len);
    if (sp && (size_t)(line + len - sp) >= 4) {
        const uint8_t *code = sp + 1;
        static const char *errs[] = {"432", "433", "471", "473", "474", "ERROR"};
        for (size_t k = 0; k < sizeof errs / sizeof *errs; k++) {
            size_t cl = strlen(errs[k]);
            if ((size_t)(line + len - code) >= cl && memcmp(code, errs[k], cl) == 0 &&
                (code + cl == line + len || code[cl] == ' ')) {
                snprintf(c->err, sizeof c->err, "%.*s", (int)len,
                         (const char *)line);
                return;
            }
        }
    }
}

static size_t scan_lines(engine *e, conn *c, const uint8_t *data, size_t end, int64_t now) {
    size_t pos = 0;
    while (pos < end) {
        const uint8_t *nl = memchr(data + pos, '\n', end - pos);
        if (!nl) break;
        const uint8_t *line = data + pos;
        size_t len = (size_t)(nl - line);
        pos += len + 1;
        const uint8_t *mark = find2(line, len, '~', '=');
        if (!mark) {
            control_line(e, c, line, len);
            continue;
        }
        size_t lend = len && line[len - 1] == '\r' ? len - 1 : len;
        int64_t ts, sid, counter;
        if (parse_payload(line, (size_t)(mark - line), lend, e->size, &ts, &sid, &counter) < 0) {
            c->corrupt++;
            continue;
        }
        checker *s = stream_of(c, sid);
        if (!s) {
            c->corrupt++;
            continue;
        }
        check_see(s, counter);
        c->delivered++;
        if (now >= e->window_from && now <= e->window_to) e->window_deliveries++;
        record_latency(e, ts, now);
    }
    return pos;
}

/* ---- senders: only look for an error ------------------------------------- */

/* As dialects.sniff_error: a sender discards what it reads, but notes the first
 * error it receives whole in one read (a rate-limiting relay drops most of what
 * it says, and the report must say why). Native: the msgpack pair "t": "error",
 * then its "code"; text: "* error: " lines; chat-relay's IRC: " :error CODE:",
 * else any IRC server's "ERROR :reason" line. */
static const uint8_t *irc_error_line(const uint8_t *data, size_t n) {
    static const char line[] = "ERROR :";
    size_t len = sizeof line - 1;
    if (n >= len && memcmp(data, line, len) == 0) return data + len;
    const uint8_t *at = memmem(data, n, "\nERROR :", len + 1);
    return at ? at + 1 + len : NULL;
}

static void sniff_error(engine *e, conn *c, const uint8_t *data, size_t n) {
    static const char *marks[] = {"\xa1t\xa5" "error", "* error: ", " :error "};
    const char *mark = marks[e->dialect];
    size_t mlen = strlen(mark);
    const uint8_t *at = memmem(data, n, mark, mlen);
    const uint8_t *p, *end = data + n;
    int code_only = e->dialect == D_IRC; /* chat-relay's NOTICE: "CODE: text" */
    if (at) {
        p = at + mlen;
    } else if (e->dialect == D_IRC && (p = irc_error_line(data, n)) != NULL) {
        code_only = 0; /* another server's ERROR reason: the whole line */
    } else {
        return;
    }
    if (e->dialect == D_NATIVE) {
        size_t span = (size_t)(end - p) < 256 ? (size_t)(end - p) : 256;
        const uint8_t *key = memmem(p, span, "\xa4" "code", 5);
        p = key ? key + 5 : end;
        size_t len = p < end && (*p & 0xe0) == 0xa0 ? (size_t)(*p & 0x1f) : 0;
        if (!len || p + 1 + len > end) {
            snprintf(c->err, sizeof c->err, "error");
            return;
        }
        snprintf(c->err, sizeof c->err, "%.*s", (int)len, (const char *)p + 1);
        return;
    }
    const uint8_t *stop = p;
    while (stop < end && *stop != '\n' && *stop != '\r' && !(code_only && *stop == ':'))
        stop++;
    snprintf(c->err, sizeof c->err, "%.*s", (int)(stop - p), (const char *)p);
}

/* ---- receive: one ready socket -------------------------------------------- */

/* Latency is taken when recv() returns, not when epoll did: a process
 * preempted in the middle of a batch would otherwise date what arrived
 * meanwhile too early (some came out below zero, counted as 1 us). */
static void read_conn(engine *e, conn *c) {
    size_t off = c->plen;
    if (e->rcap < off + RECV_SIZE) {
        if (grow(&e->rbuf, &e->rcap, off + RECV_SIZE) < 0) return;
    }
    if (off) memcpy(e->rbuf, c->pend, off);
    ssize_t n = recv(c->fd, e->rbuf + off, e->rcap - off, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        char why[80];
        snprintf(why, sizeof why, "recv: %s", strerror(errno));
        lost(e, c, why);
        return;
    }
    if (n == 0) {
        lost(e, c, "closed by relay");
        return;
    }
    int64_t now = now_ns();
    if (c->sender) { /* read so the relay never sees it slow; only an error matters */
        if (!c->err[0]) sniff_error(e, c, (const uint8_t *)e->rbuf + off, (size_t)n);
        return;
    }
    if (c->dead) return;
    size_t total = off + (size_t)n;
    const uint8_t *data = (const uint8_t *)e->rbuf;
    size_t used = e->dialect == D_NATIVE ? scan_native(e, c, data, total, now)
                                         : scan_lines(e, c, data, total, now);
    size_t rest = total - used;
    if (c->dead) rest = 0;
    if (e->dialect != D_NATIVE && rest > MAX_LINE) {
        c->corrupt++;
        rest = 0;
    }
    if (rest && grow(&c->pend, &c->pcap, rest) < 0) rest = 0;
    if (rest) memmove(c->pend, e->rbuf + used, rest);
    c->plen = rest;
}

/* ---- send: the schedule ---------------------------------------------------- */

static int64_t due_ns(engine *e, int64_t i) {
    return e->t0 + (int64_t)((double)i * 1e9 / e->rate + 0.5); /* round(), as pacing.py */
}

static size_t put_str_head(char *p, size_t len) {
    if (len < 32) { p[0] = (char)(0xa0 | len); return 1; }
    if (len < 256) { p[0] = (char)0xd9; p[1] = (char)len; return 2; }
    if (len < 65536) { p[0] = (char)0xda; p[1] = (char)(len >> 8); p[2] = (char)len; return 3; }
    p[0] = (char)0xdb;
    for (int k = 0; k < 4; k++) p[1 + k] = (char)(len >> (24 - 8 * k));
    return 5;
}

/* Appends the bytes that make sender `c` say payload.make(ts, id, counter, size). */
static size_t build_say(engine *e, conn *c, int64_t ts, size_t at) {
    char head[96];
    int hl = snprintf(head, sizeof head, "~=%020lld %d %lld ", (long long)ts, c->sender_id,
                      (long long)c->counter);
    size_t plen = (size_t)hl < (size_t)e->size ? (size_t)e->size : (size_t)hl;
    const char *room = e->rooms[c->room];
    size_t rlen = (size_t)e->room_len[c->room];
    if (grow(&e->mbuf, &e->mcap, at + plen + rlen + 64) < 0) return at;
    char *p = e->mbuf + at, *start = p;
    if (e->dialect == D_NATIVE) {
        p += 4; /* length, below */
        memcpy(p, "\x83\xa1t\xa3say\xa4room", 12);
        p += 12;
        p += put_str_head(p, rlen);
        memcpy(p, room, rlen);
        p += rlen;
        memcpy(p, "\xa4text", 5);
        p += 5;
        p += put_str_head(p, plen);
    } else if (e->dialect == D_IRC) {
        memcpy(p, "PRIVMSG #", 9);
        p += 9;
        memcpy(p, room, rlen);
        p += rlen;
        memcpy(p, " :", 2);
        p += 2;
    }
    memcpy(p, head, (size_t)hl);
    memset(p + hl, 'x', plen - (size_t)hl);
    p += plen;
    if (e->dialect == D_TEXT) *p++ = '\n';
    if (e->dialect == D_IRC) { memcpy(p, "\r\n", 2); p += 2; }
    if (e->dialect == D_NATIVE) {
        uint32_t body = (uint32_t)(p - start - 4);
        for (int k = 0; k < 4; k++) start[k] = (char)(body >> (24 - 8 * k));
    }
    return at + (size_t)(p - start);
}

static void send_due(engine *e, int64_t now) {
    int ns = e->nsenders;
    if (!ns || e->next_index >= e->count) return;
    int64_t first = e->next_index, n = 0;
    while (e->next_index < e->count) {
        int64_t due = due_ns(e, e->next_index);
        if (due > now) break;
        int64_t lag = now - due;
        if (lag > e->max_lag) e->max_lag = lag;
        if (lag > e->late_threshold) e->late++;
        if (due >= e->measure_from) hist_record(e->lag_hist, lag / 1000);
        e->next_index++;
        n++;
    }
    if (!n) return;
    /* one write per sender: its messages of this batch, in schedule order */
    int rounds = n < ns ? (int)n : ns;
    for (int k = 0; k < rounds; k++) {
        size_t len = 0;
        conn *c = NULL;
        for (int64_t i = first + k; i < first + n; i += ns) {
            c = &e->conns[e->senders[i % ns]];
            c->counter++;
            len = build_say(e, c, due_ns(e, i), len);
            e->sent_per_room[c->room]++;
        }
        if (c) write_conn(e, c, e->mbuf, len);
    }
}

/* ---- the loop ---------------------------------------------------------------- */

static int complete(engine *e) {
    for (int i = 0; i < e->n; i++) {
        conn *c = &e->conns[i];
        if (c->sender || !c->alive) continue;
        int64_t unique = c->chk.unique;
        for (int s = 0; s < c->nstreams; s++) unique += c->streams[s].unique;
        if (unique < e->expect[c->room]) return 0;
    }
    return 1;
}

/* Runs until `until` (monotonic ns). Returns 1 once every live receiver has
 * what eng_expect() said was sent, else 0. */
int eng_run(engine *e, int64_t until) {
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int64_t now = now_ns();
        if (e->has_expect && complete(e)) return 1;
        if (now >= until) return 0;
        send_due(e, now);
        int64_t wait = until - now;
        if (e->nsenders && e->next_index < e->count) {
            int64_t due = due_ns(e, e->next_index) - now;
            if (due < wait) wait = due < 0 ? 0 : due;
        }
        int got;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
        struct timespec ts = {.tv_sec = wait / 1000000000LL, .tv_nsec = wait % 1000000000LL};
        got = epoll_pwait2(e->epfd, evs, MAX_EVENTS, &ts, NULL);
        if (got < 0 && errno == ENOSYS)
            got = epoll_wait(e->epfd, evs, MAX_EVENTS, (int)((wait + 999999) / 1000000));
#else
        got = epoll_wait(e->epfd, evs, MAX_EVENTS, (int)((wait + 999999) / 1000000));
#endif
        if (got <= 0) continue;
        for (int k = 0; k < got; k++) {
            if (k && k % TICK_EVENTS == 0) send_due(e, now_ns()); /* keep the senders on time */
            conn *c = &e->conns[evs[k].data.u32];
            if (!c->alive) continue;
            if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_conn(e, c);
            if (c->alive && (evs[k].events & EPOLLOUT)) flush_conn(e, c);
        }
    }
}

/* ---- reading results back ----------------------------------------------------- */

/* delivered, corrupt, unique, duplicates, reorders, gaps, alive, next, counter, overflow,
 * queued (bytes written but not yet taken by the socket: the server's push-back) */
void eng_conn_stats(const engine *e, int i, int64_t *out) {
    const conn *c = &e->conns[i];
    checker sum = c->chk;
    int overflow = c->chk.overflow;
    for (int s = 0; s < c->nstreams; s++) {
        sum.unique += c->streams[s].unique;
        sum.duplicates += c->streams[s].duplicates;
        sum.reorders += c->streams[s].reorders;
        sum.gaps += c->streams[s].gaps;
        overflow |= c->streams[s].overflow;
    }
    out[0] = c->delivered;
    out[1] = c->corrupt;
    out[2] = sum.unique;
    out[3] = sum.duplicates;
    out[4] = sum.reorders;
    out[5] = sum.gaps;
    out[6] = c->alive;
    out[7] = c->chk.next;
    out[8] = c->counter;
    out[9] = overflow;
    out[10] = (int64_t)c->olen;
}

const char *eng_conn_error(const engine *e, int i) { return e->conns[i].err; }

/* next_index, late, max_lag_ns, window_deliveries; then sent per room */
void eng_totals(const engine *e, int64_t *out) {
    out[0] = e->next_index;
    out[1] = e->late;
    out[2] = e->max_lag;
    out[3] = e->window_deliveries;
    for (int r = 0; r < e->nrooms; r++) out[4 + r] = e->sent_per_room[r];
}

static int drain(uint64_t *hist, int64_t *values, int64_t *counts, int max) {
    int got = 0;
    for (size_t i = 0; i < HIST_BUCKETS && got < max; i++) {
        if (!hist[i]) continue;
        values[got] = hist_value(i);
        counts[got] = (int64_t)hist[i];
        hist[i] = 0;
        got++;
    }
    return got;
}

/* Moves up to `max` (µs, count) pairs out of the latency histogram; returns how
 * many. Call again while it returns `max`. */
int eng_drain_hist(engine *e, int64_t *values, int64_t *counts, int max) {
    return drain(e->hist, values, counts, max);
}

/* The same for the send-lag histogram. */
int eng_drain_lag(engine *e, int64_t *values, int64_t *counts, int max) {
    return drain(e->lag_hist, values, counts, max);
}

int eng_abi(void) { return 4; }

/* Bytes a peer received before the engine took over: an incomplete frame or line. */
int eng_set_pending(engine *e, int i, const char *data, size_t len) {
    conn *c = &e->conns[i];
    if (grow(&c->pend, &c->pcap, len) < 0) return -1;
    memcpy(c->pend, data, len);
    c->plen = len;
    return 0;
}
