/* bench/calls.py --caller-client c: the simulated Twilio calls of bench/calls.py (see its docstring) in C.
 *
 * The same call script and the same wire messages as the Python callers (SimCaller/LeanCaller), in one
 * thread that wakes every `poll_ms`: it reads what arrived (epoll, no wait), then sends every frame that
 * came due. Written so that the load generator costs a small fraction of the server it measures on the
 * same cores: what remains is mostly the kernel's cost of the loopback sends.
 *
 * A bot frame's arrival is the kernel's receive timestamp (SO_TIMESTAMPNS: when the data reached this
 * socket), not when this loop got round to reading it: the bot's lateness is the server's, whatever this
 * process's own scheduling (it may run niced, --caller-nice). A read that takes in several packets carries
 * the newest one's stamp, so lateness errs high, never low.
 *
 * Input file (written by bench/calls.py):
 *   port poll_ms go_at duration_s turns pause_s lead_ms reply_timeout_s greeting
 *   n_line n_silence            then n_line + n_silence base64 payload lines
 *   n_calls                     then "index offset_s" per call
 * Output: one JSON line on stdout, the shape of _callers_main's result.
 * Build: cc -O2 -o callers callers.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_S 0.020
#define HIST_MIN_MS (-1000.0)
#define HIST_BUCKETS 200000 /* 0.1 ms buckets from -1 s to +19 s; values outside are clamped */
#define MAX_MARKS 64
#define NAME_LEN 96
#define RBUF 262144
#define MAX_SPIKES 200

enum { CONNECTING, OPEN, CLOSING, CLOSED };
enum { WAIT_BOT, SPEAKING, DONE };

typedef struct {
    int *counts;
    long n;
    double max;
} Hist;

static void hist_init(Hist *h) {
    h->counts = calloc(HIST_BUCKETS, sizeof(int));
    h->n = 0;
    h->max = -INFINITY;
}

static void hist_add(Hist *h, double ms) {
    long b = (long)floor((ms - HIST_MIN_MS) / 0.1);
    if (b < 0) b = 0;
    if (b >= HIST_BUCKETS) b = HIST_BUCKETS - 1;
    h->counts[b]++;
    h->n++;
    if (ms > h->max) h->max = ms;
}

static void hist_print(const char *key, Hist *h) {
    /* bench.calls.Histogram.to_json: bucket = floor(ms / 0.1) */
    long offset = (long)llround(HIST_MIN_MS / 0.1);
    printf("\"%s\": {\"counts\": {", key);
    int first = 1;
    for (long b = 0; b < HIST_BUCKETS; b++) {
        if (!h->counts[b]) continue;
        printf("%s\"%ld\": %d", first ? "" : ", ", b + offset, h->counts[b]);
        first = 0;
    }
    if (h->n) printf("}, \"n\": %ld, \"max\": %.3f}", h->n, h->max);
    else printf("}, \"n\": 0, \"max\": null}");
}

typedef struct {
    int index, fd, state, phase;
    double start_at, t0, phase_since, connected_at, closed_at, close_deadline;
    long seq, frame;
    int line_pos, lines_spoken;
    double line_end, last_turn_s, turn_started, play_end;
    double mark_at[MAX_MARKS];
    char mark_name[MAX_MARKS][NAME_LEN];
    int mark_head, mark_count;
    int have_spurt;
    double spurt_start;
    long spurt_frames, bot_frames_in_phase;
    long bot_frames, marks_echoed, clears, gaps, unanswered, answered;
    double max_gap_ms;
    int hung_up, close_received, close_sent;
    char error[160];
    char sid[40];
    unsigned char *rbuf;
    size_t rlen;
    unsigned char *obuf;
    size_t olen, ocap;
} Call;

static int port, greeting, turns;
static double poll_s, go_at, duration_s, pause_s, lead_s, reply_timeout_s;
static char **line_frames, **silence_frames;
static int n_line, n_silence;
static Hist send_late, bot_late, lag;
static double *responses;
static long n_responses, cap_responses;
static double spikes[MAX_SPIKES][2];
static int n_spikes;
static uint64_t rng = 88172645463325252ull;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double realtime_minus_mono; /* kernel receive stamps are CLOCK_REALTIME */

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double received_at(struct msghdr *mh, double now) {
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            double at = ts.tv_sec + ts.tv_nsec / 1e9 - realtime_minus_mono;
            return at < now ? at : now;
        }
    }
    return now;
}

static uint32_t rand32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void fail(Call *c, const char *what) {
    if (!c->error[0]) snprintf(c->error, sizeof c->error, "%s", what);
    c->phase = DONE;
    c->state = CLOSED;
}

static void flush_out(Call *c) {
    while (c->olen) {
        ssize_t k = send(c->fd, c->obuf, c->olen, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            fail(c, "ConnectionError: send failed");
            return;
        }
        memmove(c->obuf, c->obuf + k, c->olen - k);
        c->olen -= k;
    }
}

static void send_raw(Call *c, const void *data, size_t n) {
    if (c->olen + n > c->ocap) {
        c->ocap = (c->olen + n) * 2;
        c->obuf = realloc(c->obuf, c->ocap);
    }
    memcpy(c->obuf + c->olen, data, n);
    c->olen += n;
    flush_out(c);
}

static void send_frame(Call *c, int opcode, const char *payload, size_t n) {
    if (c->state == CLOSED || c->close_sent) return;
    if (n > 65535) { /* the call's own messages are < 1 KB; a huge pong payload is not worth 64-bit lengths */
        fail(c, "ValueError: a message over 64 KiB to send");
        return;
    }
    unsigned char buf[16 + 4096];
    unsigned char *out = n + 16 <= sizeof buf ? buf : malloc(n + 16);
    size_t h = 0;
    out[h++] = 0x80 | opcode;
    if (n < 126) {
        out[h++] = 0x80 | n;
    } else {
        out[h++] = 0x80 | 126;
        out[h++] = (n >> 8) & 0xff;
        out[h++] = n & 0xff;
    }
    uint32_t key = rand32();
    unsigned char mask[4] = {key >> 24, key >> 16, key >> 8, key};
    memcpy(out + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) out[h + i] = payload[i] ^ mask[i & 3];
    send_raw(c, out, h + n);
    if (out != buf) free(out);
    if (opcode == 0x8) c->close_sent = 1;
}

static void send_text(Call *c, const char *text) { send_frame(c, 0x1, text, strlen(text)); }

static void echo_mark(Call *c, const char *name) {
    char msg[256];
    c->marks_echoed++;
    snprintf(msg, sizeof msg,
             "{\"event\": \"mark\", \"sequenceNumber\": \"%ld\", \"streamSid\": \"%s\", \"mark\": {\"name\": \"%s\"}}",
             ++c->seq, c->sid, name);
    send_text(c, msg);
}

static void enter(Call *c, int phase, double now) {
    c->phase = phase;
    c->phase_since = now;
    if (phase == WAIT_BOT) {
        c->have_spurt = 0;
        c->spurt_frames = 0;
        c->bot_frames_in_phase = 0;
    } else if (phase == SPEAKING) {
        c->line_pos = 0;
        c->lines_spoken++;
    }
}

static const char *next_payload(Call *c) {
    if (c->phase == SPEAKING) {
        const char *p = line_frames[c->line_pos++];
        if (c->line_pos == n_line) {
            c->line_end = c->t0 + (c->frame + 1) * FRAME_S;
            enter(c, WAIT_BOT, c->line_end);
        }
        return p;
    }
    return silence_frames[c->frame % n_silence];
}

static void script(Call *c, double now) {
    if (c->phase != WAIT_BOT) return;
    if (c->lines_spoken || greeting) {
        if (c->bot_frames_in_phase) {
            if (c->mark_count || now < c->play_end + pause_s) return;
        } else if (now - c->phase_since < reply_timeout_s) {
            return;
        } else {
            c->unanswered += c->lines_spoken > 0;
        }
    }
    if (c->lines_spoken) c->last_turn_s = now - c->turn_started;
    int finished = turns >= 0 ? c->lines_spoken >= turns : now - c->t0 + c->last_turn_s > duration_s;
    if (finished) {
        enter(c, DONE, now);
    } else {
        c->turn_started = now;
        enter(c, SPEAKING, now);
    }
}

static void on_bot_frame(Call *c, double now) {
    c->bot_frames++;
    c->bot_frames_in_phase++;
    if (!c->have_spurt) {
        c->have_spurt = 1;
        c->spurt_start = now;
        c->spurt_frames = 0;
        if (c->phase == WAIT_BOT && c->lines_spoken) {
            c->answered++;
            if (n_responses == cap_responses) {
                cap_responses = cap_responses ? cap_responses * 2 : 1024;
                responses = realloc(responses, cap_responses * sizeof(double));
            }
            responses[n_responses++] = (now - c->line_end) * 1000;
        }
    } else {
        c->spurt_frames++;
        double due = c->spurt_start + fmax(0.0, c->spurt_frames * FRAME_S - lead_s);
        hist_add(&bot_late, (now - due) * 1000);
        if (now > c->play_end) {
            c->gaps++;
            c->max_gap_ms = fmax(c->max_gap_ms, (now - c->play_end) * 1000);
        }
    }
    c->play_end = fmax(c->play_end, now) + FRAME_S;
}

static int field(const char *msg, size_t n, const char *key, char *out, size_t cap) {
    /* the string value of `key` in the server's json.dumps output ("key": "value"); names need no unescaping */
    const char *p = memmem(msg, n, key, strlen(key));
    if (!p) return 0;
    p += strlen(key);
    const char *end = memchr(p, '"', msg + n - p);
    if (!end || (size_t)(end - p) >= cap) return 0;
    memcpy(out, p, end - p);
    out[end - p] = 0;
    return 1;
}

static int media_frames(const char *msg, size_t n) {
    /* the 20 ms frames in a media message: its base64 payload's length (the server sends up to three) */
    static const char key[] = "\"payload\": \"";
    const char *p = memmem(msg, n, key, sizeof key - 1);
    if (!p) return 1;
    long chars = (long)n - (long)(p - msg) - (long)(sizeof key - 1) - 3;  /* "}} after the payload */
    long frames = (chars * 3 + 320) / 640;
    return frames < 1 ? 1 : (int)frames;
}

static void on_text(Call *c, const char *msg, size_t n, double now) {
    static const char media[] = "{\"event\": \"media\"";
    if (n >= sizeof media - 1 && !memcmp(msg, media, sizeof media - 1)) {
        for (int k = media_frames(msg, n); k > 0; k--) on_bot_frame(c, now);
        return;
    }
    char event[32], name[NAME_LEN];
    if (!field(msg, n, "\"event\": \"", event, sizeof event)) return;
    if (!strcmp(event, "media")) {
        for (int k = media_frames(msg, n); k > 0; k--) on_bot_frame(c, now);
    } else if (!strcmp(event, "mark") && field(msg, n, "\"name\": \"", name, sizeof name)) {
        if (c->play_end <= now) {
            echo_mark(c, name);
        } else if (c->mark_count < MAX_MARKS) {
            int slot = (c->mark_head + c->mark_count++) % MAX_MARKS;
            c->mark_at[slot] = c->play_end;
            strcpy(c->mark_name[slot], name);
        }
    } else if (!strcmp(event, "clear")) {
        c->clears++;
        c->play_end = now;
        while (c->mark_count) {
            echo_mark(c, c->mark_name[c->mark_head]);
            c->mark_head = (c->mark_head + 1) % MAX_MARKS;
            c->mark_count--;
        }
    }
}

static void parse_frames(Call *c, double now) {
    size_t pos = 0;
    while (c->rlen - pos >= 2) {
        unsigned char *b = c->rbuf + pos;
        int op = b[0] & 0x0f;
        size_t n = b[1] & 0x7f, h = 2;
        if (n == 126) {
            if (c->rlen - pos < 4) break;
            n = (b[2] << 8) | b[3];
            h = 4;
        } else if (n == 127) {
            if (c->rlen - pos < 10) break;
            n = 0;
            for (int i = 0; i < 8; i++) n = (n << 8) | b[2 + i];
            h = 10;
        }
        if (n + h > RBUF) {
            fail(c, "ValueError: a server message larger than the read buffer");
            return;
        }
        if (c->rlen - pos < h + n) break;
        char *payload = (char *)b + h;
        if (op == 0x1) {
            on_text(c, payload, n, now);
        } else if (op == 0x9) {
            send_frame(c, 0xA, payload, n);
        } else if (op == 0x8) {
            c->close_received = 1;
            if (!c->close_sent) send_frame(c, 0x8, payload, n < 2 ? n : 2);
        }
        pos += h + n;
    }
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
}

static void handshake_messages(Call *c) {
    char msg[1024];
    send_text(c, "{\"event\": \"connected\", \"protocol\": \"Call\", \"version\": \"1.0.0\"}");
    snprintf(msg, sizeof msg,
             "{\"event\": \"start\", \"sequenceNumber\": \"%ld\", \"streamSid\": \"%s\", \"start\": {\"streamSid\": "
             "\"%s\", \"accountSid\": \"AC%08x%08x%08x%08x\", \"callSid\": \"CA%08x%08x%08x%08x\", \"tracks\": "
             "[\"inbound\"], \"customParameters\": {\"from\": \"+15550001111\", \"to\": \"+15550002222\"}, "
             "\"mediaFormat\": {\"encoding\": \"audio/x-mulaw\", \"sampleRate\": 8000, \"channels\": 1}}}",
             ++c->seq, c->sid, c->sid, rand32(), rand32(), rand32(), rand32(), rand32(), rand32(), rand32(),
             rand32());
    send_text(c, msg);
}

static void on_readable(Call *c, double now) {
    for (;;) {
        struct iovec iov = {c->rbuf + c->rlen, RBUF - c->rlen};
        union {
            char buf[CMSG_SPACE(sizeof(struct timespec)) + 64];
            struct cmsghdr align;
        } control;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                            .msg_controllen = sizeof control.buf};
        ssize_t k = recvmsg(c->fd, &mh, 0);
        if (k == 0) {
            if (c->state == OPEN && c->phase != DONE) c->hung_up = 1; /* the server went away mid-call */
            c->state = CLOSED;
            c->closed_at = now;
            return;
        }
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == ECONNRESET && c->phase == DONE) {
                /* the server closed the finished call while frames this (niced, late) caller sent after
                   its stop were still unread: the kernel answers them with a reset. Nothing of the call is
                   lost, as when it closes cleanly. */
                c->state = CLOSED;
                c->closed_at = now;
                return;
            }
            char what[96];
            snprintf(what, sizeof what, "ConnectionError: recv failed (%s, %s)", strerror(errno),
                     c->phase == DONE ? "after the call's last line" : "mid-call");
            fail(c, what);
            c->closed_at = now;
            return;
        }
        c->rlen += k;
        if (c->state == CONNECTING) {
            unsigned char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
            if (!end) continue;
            if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.1 101", 12)) {
                fail(c, "HandshakeError: the server did not answer the upgrade with 101");
                c->closed_at = now;
                return;
            }
            size_t used = end + 4 - c->rbuf;
            memmove(c->rbuf, c->rbuf + used, c->rlen - used);
            c->rlen -= used;
            c->state = OPEN;
            c->connected_at = now;
            handshake_messages(c);
            c->t0 = c->phase_since = mono();
        }
        parse_frames(c, received_at(&mh, now));
        if (c->state == CLOSED) return;
    }
}

static void open_call(Call *c, int ep) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fail(c, "ConnectionRefusedError: connect failed");
        c->closed_at = mono();
        return;
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    char req[512], key[25];
    snprintf(key, sizeof key, "%08x%08x%06x==", rand32(), rand32(), rand32() & 0xffffff);
    snprintf(req, sizeof req,
             "GET /media-stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
             port, key);
    c->rbuf = malloc(RBUF);
    send_raw(c, req, strlen(req));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void tick(Call *c, double now) {
    if (c->close_received) {
        c->hung_up = 1;
        c->phase = DONE;
        return;
    }
    hist_add(&send_late, (now - (c->t0 + c->frame * FRAME_S)) * 1000);
    char msg[512];
    while (c->t0 + c->frame * FRAME_S <= now && c->phase != DONE && c->state == OPEN) {
        long k = c->frame;
        const char *payload = next_payload(c);
        int n = snprintf(msg, sizeof msg,
                         "{\"event\":\"media\",\"sequenceNumber\":\"%ld\",\"streamSid\":\"%s\",\"media\":{\"track\":"
                         "\"inbound\",\"chunk\":\"%ld\",\"timestamp\":\"%ld\",\"payload\":\"%s\"}}",
                         ++c->seq, c->sid, k + 1, k * 20, payload);
        send_frame(c, 0x1, msg, n);
        c->frame++;
    }
    while (c->mark_count && c->mark_at[c->mark_head] <= now) {
        echo_mark(c, c->mark_name[c->mark_head]);
        c->mark_head = (c->mark_head + 1) % MAX_MARKS;
        c->mark_count--;
    }
    script(c, now);
}

static void finish(Call *c, double now) {
    /* the script is done (or the server hung up): say stop, close, wait up to 5 s for the server's close */
    if (!c->hung_up && !c->error[0]) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "{\"event\": \"stop\", \"sequenceNumber\": \"%ld\", \"streamSid\": \"%s\", \"stop\": {}}",
                 ++c->seq, c->sid);
        send_text(c, msg);
    }
    send_frame(c, 0x8, "\x03\xe8", 2);
    c->state = CLOSING;
    c->close_deadline = now + 5.0;
}

static char *read_line(FILE *f) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    if (n > 0 && line[n - 1] == '\n') line[n - 1] = 0;
    return line;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: callers INPUT\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    double lead_ms;
    if (fscanf(f, "%d %lf %lf %lf %d %lf %lf %lf %d\n", &port, &poll_s, &go_at, &duration_s, &turns, &pause_s,
               &lead_ms, &reply_timeout_s, &greeting) != 9 || fscanf(f, "%d %d\n", &n_line, &n_silence) != 2) {
        fprintf(stderr, "callers: bad input header\n");
        return 2;
    }
    poll_s /= 1000;
    lead_s = lead_ms / 1000;
    line_frames = malloc(n_line * sizeof(char *));
    silence_frames = malloc(n_silence * sizeof(char *));
    for (int i = 0; i < n_line; i++) line_frames[i] = read_line(f);
    for (int i = 0; i < n_silence; i++) silence_frames[i] = read_line(f);
    int n_calls;
    if (fscanf(f, "%d\n", &n_calls) != 1) return 2;
    Call *calls = calloc(n_calls, sizeof(Call));
    for (int i = 0; i < n_calls; i++) {
        double offset;
        if (fscanf(f, "%d %lf\n", &calls[i].index, &offset) != 2) return 2;
        calls[i].start_at = go_at + offset;
        calls[i].fd = -1;
        calls[i].state = -1; /* not started */
        snprintf(calls[i].sid, sizeof calls[i].sid, "MZ%08x%08x%08x%08x", rand32(), rand32(), rand32(), rand32());
    }
    fclose(f);
    rng ^= (uint64_t)getpid() << 32 | (uint64_t)(mono() * 1e6);
    hist_init(&send_late);
    hist_init(&bot_late);
    hist_init(&lag);

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int ep = epoll_create1(0);
    struct epoll_event events[256];
    int remaining = n_calls;
    double next_at = mono();
    while (remaining) {
        next_at += poll_s;
        double now = mono();
        if (next_at > now) {
            struct timespec ts = {(time_t)next_at, (long)((next_at - (time_t)next_at) * 1e9)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            now = mono();
        }
        realtime_minus_mono = wall() - now; /* each tick: a wall-clock step shifts no stamp for long */
        double late_ms = (now - next_at) * 1000;
        hist_add(&lag, late_ms);
        if (late_ms > 10 && n_spikes < MAX_SPIKES) {
            spikes[n_spikes][0] = now;
            spikes[n_spikes++][1] = round(late_ms * 10) / 10;
        }
        if (next_at < now - poll_s) next_at = now;
        for (int i = 0; i < n_calls; i++)
            if (calls[i].state == -1 && calls[i].start_at <= now) {
                calls[i].state = CONNECTING;
                calls[i].phase = WAIT_BOT;
                open_call(&calls[i], ep);
            }
        for (;;) {
            int k = epoll_wait(ep, events, 256, 0);
            for (int i = 0; i < k; i++) on_readable(events[i].data.ptr, now);
            if (k < 256) break;
        }
        for (int i = 0; i < n_calls; i++) {
            Call *c = &calls[i];
            if (c->state == OPEN) {
                if (c->olen) flush_out(c);
                if (c->state == OPEN) tick(c, now);
                if (c->phase == DONE && c->state == OPEN) finish(c, now);
            }
            if (c->state == CLOSING && c->close_received && !c->olen) c->state = CLOSED;
            if (c->state == CLOSING && now > c->close_deadline) c->state = CLOSED;
            if (c->state == CLOSED && c->fd >= 0) {
                if (!c->closed_at) c->closed_at = now;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                remaining--;
            }
        }
    }
    getrusage(RUSAGE_SELF, &ru1);
    double user = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
    double sys = (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;

    printf("{\"cpu_s\": %.6f, \"system_s\": %.6f, ", user + sys, sys);
    hist_print("lag", &lag);
    printf(", \"lag_spikes\": [");
    for (int i = 0; i < n_spikes; i++) printf("%s[%.6f, %.1f]", i ? ", " : "", spikes[i][0], spikes[i][1]);
    printf("], ");
    hist_print("send_late", &send_late);
    printf(", ");
    hist_print("bot_late", &bot_late);
    printf(", \"response_ms\": [");
    for (long i = 0; i < n_responses; i++) printf("%s%.3f", i ? ", " : "", responses[i]);
    printf("], \"calls\": [");
    for (int i = 0; i < n_calls; i++) {
        Call *c = &calls[i];
        double seconds = c->connected_at ? c->closed_at - c->connected_at : 0.0;
        printf("%s{\"index\": %d, \"seconds\": %.6f, \"lines\": %d, \"answered\": %ld, \"unanswered\": %ld, "
               "\"frames_sent\": %ld, \"bot_frames\": %ld, \"marks_echoed\": %ld, \"clears\": %ld, \"gaps\": %ld, "
               "\"max_gap_ms\": %.3f, \"hung_up\": %s, \"error\": ",
               i ? ", " : "", c->index, seconds, c->lines_spoken, c->answered, c->unanswered, c->frame, c->bot_frames,
               c->marks_echoed, c->clears, c->gaps, c->max_gap_ms, c->hung_up ? "true" : "false");
        if (c->error[0]) printf("\"%s\"}", c->error);
        else printf("null}");
    }
    printf("]}\n");
    return 0;
}
