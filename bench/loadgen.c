/*
 * loadgen: a load generator for echo servers, in C over epoll; plain TCP
 * needs nothing else, TLS is OpenSSL's (loadgen_tls.c). One thread; every
 * connection non-blocking.
 *
 *   loadgen echo HOST PORT [--tls] [--line] [-c CONNS] [-s SIZE] [-p DEPTH]
 *                          [-d SECONDS] [-w WARMUP] [-n ROUNDTRIPS] [-t LIMIT]
 *       CONNS connections each keep DEPTH messages of SIZE bytes in flight
 *       and check every echoed byte. Runs WARMUP seconds unmeasured, then
 *       SECONDS measured (or exactly ROUNDTRIPS round trips with -n). With
 *       --tls each connection makes its handshake first (in the warm-up,
 *       or inside the count with -n). With --line each message is a line
 *       of SIZE bytes: SIZE - 1 letters and '\n' (for a line echo).
 *   loadgen connect HOST PORT [-c CONCURRENCY] [-d SECONDS] [-s SIZE]
 *       Connect, one echo of SIZE bytes, close; CONCURRENCY at a time.
 *   loadgen handshake HOST PORT [--resume] [-c CONCURRENCY] [-d SECONDS]
 *                               [-n COUNT] [-s SIZE] [-t LIMIT]
 *       The same over TLS: connect, a full TLS handshake, one echo of SIZE
 *       bytes (which also brings TLS 1.3's session tickets in), close_notify,
 *       close. With --resume each of the CONCURRENCY slots keeps the session
 *       of its first connection and offers it on every later one, so all
 *       but the first handshake of each slot are resumed; every one the
 *       server did not resume is counted, and any makes the run fail. With
 *       -n, it runs until COUNT connections completed (at most LIMIT
 *       seconds) instead of for -d seconds.
 *   loadgen idle HOST PORT [--tls] [-n COUNT] [-h HOLD] [-t LIMIT]
 *       Opens COUNT connections, spread over source addresses 127.0.0.2
 *       and up (20,000 each) so more than one address's ports fit, holds
 *       them HOLD seconds (any of them closed or written to by the server
 *       meanwhile is a failure), then checks that each still answers. With
 *       --tls every handshake is done before the hold, 64 at a time; a
 *       session ticket arriving during the hold is not a write of the
 *       server's.
 *
 * HOST is a loopback address (127.x.x.x), or unix:PATH for a Unix socket
 * (PORT is then ignored; echo, connect and handshake only). No
 * certificate is verified: the server is our own, with a throwaway one.
 *
 * LIMIT bounds the whole run in seconds, so a server that stops answering
 * makes loadgen fail instead of waiting for ever. It must cover the run's
 * own length (-w plus -d, or -h); the default is that length plus 300.
 *
 * Prints a readable summary and then one line of key=value figures (for
 * bench/run): mode=echo ... bytes=B (every byte received, all checked),
 * mode=connect ... done=N bytes=B, mode=handshake hps=R done=N offered=N
 * resumed=N bytes=B, mode=idle open=N answered=N held=S.
 * Exit status 0 when every byte came back right, no connection failed and
 * the run completed something: at least one round trip (echo), one
 * connection (connect, handshake; with --resume every session offered
 * resumed), every connection answering after the hold (idle).
 * Otherwise 1, with a message on stderr that says what went wrong (at the
 * first failure); 2 for bad arguments. Traffic goes to HOST only, which
 * must be a loopback address or a Unix socket.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "loadgen_tls.h"

#define HIST_US 1000000 /* latency histogram: 1 us buckets up to 1 s */
#define IDLE_TLS_OPENING 64 /* idle --tls: handshakes under way at once */
#define TLS_RECORD 16384    /* the most plaintext a TLS record carries */

typedef struct conn {
  int fd;
  SSL *ssl;            /* with --tls; NULL over plain TCP */
  int ready;           /* --tls: handshake done */
  int retry;           /* --tls: a write must be repeated as it was */
  uint64_t sent, rcvd; /* bytes */
  uint64_t msgs_done;  /* messages fully echoed */
  uint64_t msgs_sent;
  double *t_sent;      /* ring of DEPTH send times */
  int id;
} conn;

static struct {
  const char *mode, *host;
  int port, conns, size, depth, tls, resume, line;
  double duration, warmup, hold, limit;
  long long count;
} opt = {.conns = 50, .size = 64, .depth = 1, .duration = 5.0, .warmup = 1.0,
         .hold = 3};

static uint32_t *hist;
static uint64_t hist_n, roundtrips, errors, bytes, total_rt;
static double deadline; /* the run fails when it has not finished by then */
/* Where every connection goes: HOST and PORT, or unix:PATH. */
static struct sockaddr_storage dst;
static socklen_t dstlen;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *msg) {
  fprintf(stderr, "loadgen: %s: %s\n", msg, strerror(errno));
  exit(1);
}

/* Reports why the run failed, prefixed with the mode, and exits 1. */
__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "loadgen: %s: ", opt.mode);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

/* The pending error of a socket, as text. */
static const char *sock_error(int fd) {
  int e = 0;
  socklen_t len = sizeof e;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0) e = errno;
  return e ? strerror(e) : "closed by the peer";
}

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen echo|connect|handshake|idle HOST|unix:PATH PORT "
          "[--tls] [--resume] [--line] [-c N] [-s SIZE] [-p DEPTH] [-d SECONDS] "
          "[-w SECONDS] [-n COUNT] [-h SECONDS] [-t LIMIT]\n");
  exit(2);
}

/* Sets dst from HOST and PORT: a 127.x.x.x address, or unix:PATH. Returns
 * 0, or -1 when HOST is neither (after saying why on stderr). */
static int set_target(void) {
  if (strncmp(opt.host, "unix:", 5) == 0) {
    struct sockaddr_un *u = (struct sockaddr_un *)&dst;
    size_t n = strlen(opt.host + 5);
    if (n == 0 || n >= sizeof u->sun_path) {
      fprintf(stderr, "loadgen: a Unix socket's path is 1 to %zu bytes\n",
              sizeof u->sun_path - 1);
      return -1;
    }
    u->sun_family = AF_UNIX;
    memcpy(u->sun_path, opt.host + 5, n + 1);
    dstlen = sizeof *u;
    return 0;
  }
  struct sockaddr_in *in = (struct sockaddr_in *)&dst;
  if (strncmp(opt.host, "127.", 4) != 0 || inet_pton(AF_INET, opt.host, &in->sin_addr) != 1) {
    fprintf(stderr, "loadgen: only loopback addresses (127.x.x.x) or unix:PATH\n");
    return -1;
  }
  in->sin_family = AF_INET;
  in->sin_port = htons((uint16_t)opt.port);
  dstlen = sizeof *in;
  return 0;
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* The byte at offset off of connection c's stream: every echoed byte can be
 * checked without keeping what was sent. */
static inline unsigned char pat(int c, uint64_t off) {
  unsigned char b = (unsigned char)((off * 2654435761u + (uint64_t)c * 40503u) >> 7);
  if (!opt.line) return b;
  /* --line: letters, and each message's last byte ends its line */
  return off % (uint64_t)opt.size == (uint64_t)opt.size - 1 ? '\n' : (unsigned char)('a' + b % 26);
}

/* A non-blocking socket connecting (or connected) to dst, from src when
 * not NULL (TCP only), or -1 with errno. */
static int open_to(struct sockaddr_in *src) {
  int fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  if (fd < 0) return -1;
  if (dst.ss_family == AF_INET) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  if (src) {
    /* pick the port at connect, not at bind: a bind to port 0 searches the
     * whole port space, slowly when thousands are in TIME_WAIT */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
    if (bind(fd, (struct sockaddr *)src, sizeof *src) < 0) {
      close(fd);
      return -1;
    }
  }
  if (connect(fd, (struct sockaddr *)&dst, dstlen) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

static void record(double seconds) {
  uint64_t us = (uint64_t)(seconds * 1e6);
  hist[us < HIST_US ? us : HIST_US - 1]++;
  hist_n++;
}

static double percentile(double p) {
  uint64_t want = (uint64_t)((double)hist_n * p), seen = 0;
  for (int i = 0; i < HIST_US; i++) {
    seen += hist[i];
    if (seen > want) return i;
  }
  return HIST_US;
}

/* c's socket calls, plain or TLS: as recv(2) and send(2). */
static ssize_t conn_recv(conn *c, void *buf, size_t len) {
  return c->ssl ? lg_tls_read(c->ssl, buf, len) : recv(c->fd, buf, len, 0);
}
static ssize_t conn_send(conn *c, const void *buf, size_t len) {
  return c->ssl ? lg_tls_write(c->ssl, buf, len) : send(c->fd, buf, len, MSG_NOSIGNAL);
}
/* Why c's last socket call failed. */
static const char *conn_error(conn *c) {
  return c->ssl ? lg_tls_error() : strerror(errno);
}

/* Makes c's TLS connection over its socket, or dies. */
static void tls_attach(conn *c) {
  c->ssl = lg_tls_new(c->fd, NULL);
  if (!c->ssl) die("TLS setup");
}

/* --- echo ------------------------------------------------------------ */

static uint64_t begun; /* messages whose first byte went out, all connections */

/* Keeps DEPTH messages in flight on c; with -n, begins no message past the
 * count over all connections, so exactly COUNT round trips are made.
 * Returns 0, or -1 when the socket failed. */
static int send_more(conn *c, char *buf) {
  while (c->msgs_sent - c->msgs_done < (uint64_t)opt.depth) {
    uint64_t off = c->msgs_sent * (uint64_t)opt.size;
    int starting = c->sent == off;
    /* a TLS write that had to wait is repeated even past the count: OpenSSL
     * may hold part of its record */
    if (starting && opt.count && begun >= (uint64_t)opt.count && !c->retry) break;
    size_t left = (size_t)opt.size - (size_t)(c->sent - off);
    /* TLS: a record's worth per write, so a write that must be repeated is
     * repeated with the same length, and a long message is not made again
     * whole for each record */
    if (c->ssl && left > TLS_RECORD) left = TLS_RECORD;
    for (size_t i = 0; i < left; i++) buf[i] = (char)pat(c->id, c->sent + i);
    ssize_t n = conn_send(c, buf, left);
    c->retry = n < 0 && errno == EAGAIN && c->ssl;
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if (starting) {
      c->t_sent[c->msgs_sent % (uint64_t)opt.depth] = now();
      begun++;
    }
    c->sent += (uint64_t)n;
    if (c->sent < off + (uint64_t)opt.size) {
      /* plain: the kernel took less than all, so it is full; TLS: a write
       * takes a record at a time, and only EAGAIN says it is full */
      if (!c->ssl) return 0;
      continue;
    }
    c->msgs_sent++;
  }
  return 0;
}

static int run_echo(void) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  conn *cs = calloc((size_t)opt.conns, sizeof *cs);
  char *buf = malloc((size_t)opt.size > 65536 ? (size_t)opt.size : 65536);
  hist = calloc(HIST_US, sizeof *hist);
  if (ep < 0 || !cs || !buf || !hist) die("setup");
  double start = now(), mstart = start + opt.warmup, end = mstart + opt.duration;
  deadline = start + opt.limit;
  for (int i = 0; i < opt.conns; i++) {
    cs[i].id = i;
    cs[i].t_sent = calloc((size_t)opt.depth, sizeof(double));
    cs[i].fd = open_to(NULL);
    if (cs[i].fd < 0) die("connect");
    if (opt.tls) tls_attach(&cs[i]);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  struct epoll_event evs[256];
  int measuring = opt.warmup <= 0 || opt.count;
  if (measuring) mstart = start;
  uint64_t base_bytes = 0;
  for (;;) {
    double t = now();
    if (!opt.count && t >= end) break;
    if (opt.count && roundtrips >= (uint64_t)opt.count) break;
    if (t >= deadline)
      fail("time limit of %g s reached: %llu of %lld round trips completed",
           opt.limit, (unsigned long long)roundtrips, opt.count);
    if (!measuring && t >= mstart) {
      measuring = 1;
      roundtrips = 0;
      hist_n = 0;
      memset(hist, 0, HIST_US * sizeof *hist);
      base_bytes = bytes;
    }
    int n = epoll_wait(ep, evs, 256, 100);
    for (int k = 0; k < n; k++) {
      conn *c = evs[k].data.ptr;
      if (evs[k].events & (EPOLLERR | EPOLLHUP))
        fail("connection %d failed: %s", c->id, sock_error(c->fd));
      if (c->ssl && !c->ready) {
        int h = lg_tls_handshake(c->ssl);
        if (h < 0) fail("connection %d: TLS handshake failed: %s", c->id, lg_tls_error());
        if (h == 0) continue;
        c->ready = 1;
      }
      for (;;) { /* read all */
        ssize_t r = conn_recv(c, buf, 65536);
        if (r < 0) {
          if (errno == EAGAIN) break;
          fail("connection %d: receive failed: %s", c->id, conn_error(c));
        }
        if (r == 0)
          fail("server closed connection %d after %llu of %llu bytes echoed",
               c->id, (unsigned long long)c->rcvd, (unsigned long long)c->sent);
        if (c->rcvd + (uint64_t)r > c->sent)
          fail("connection %d: received %llu bytes, more than the %llu sent",
               c->id, (unsigned long long)(c->rcvd + (uint64_t)r),
               (unsigned long long)c->sent);
        for (ssize_t i = 0; i < r; i++)
          if ((unsigned char)buf[i] != pat(c->id, c->rcvd + (uint64_t)i))
            fail("wrong byte on connection %d at %llu", c->id,
                 (unsigned long long)(c->rcvd + (uint64_t)i));
        c->rcvd += (uint64_t)r;
        bytes += (uint64_t)r;
        uint64_t done = c->rcvd / (uint64_t)opt.size;
        double tn = now();
        while (c->msgs_done < done) {
          if (measuring) record(tn - c->t_sent[c->msgs_done % (uint64_t)opt.depth]);
          c->msgs_done++;
          roundtrips++;
          total_rt++;
        }
      }
      if (send_more(c, buf) < 0)
        fail("connection %d: send failed: %s", c->id, conn_error(c));
    }
  }
  /* A run that completed nothing measured nothing: the server accepted and
   * never answered, or stopped answering after the warm-up. */
  if (roundtrips == 0) errors++;
  if (opt.count && bytes != (uint64_t)opt.count * (uint64_t)opt.size) errors++;
  double secs = opt.count ? now() - start : opt.duration;
  double rps = (double)roundtrips / secs;
  double mbps = (double)(bytes - base_bytes) / secs / 1e6;
  printf("echo: %d conns x %d B, depth %d: %.0f round trips/s, %.2f MB/s, "
         "p50 %.0f us, p99 %.0f us, p999 %.0f us, %llu errors\n",
         opt.conns, opt.size, opt.depth, rps, mbps, percentile(0.5),
         percentile(0.99), percentile(0.999), (unsigned long long)errors);
  printf("mode=echo rps=%.1f mbps=%.3f p50=%.0f p99=%.0f p999=%.0f "
         "roundtrips=%llu total=%llu bytes=%llu errors=%llu\n",
         rps, mbps, percentile(0.5), percentile(0.99), percentile(0.999),
         (unsigned long long)roundtrips, (unsigned long long)total_rt,
         (unsigned long long)bytes, (unsigned long long)errors);
  fflush(stdout);
  if (roundtrips == 0)
    fprintf(stderr, "loadgen: echo: no round trip completed in the %g s measured\n",
            opt.count ? secs : opt.duration);
  else if (errors)
    fprintf(stderr, "loadgen: echo: %llu bytes echoed, not the %llu sent\n",
            (unsigned long long)bytes,
            (unsigned long long)opt.count * (unsigned long long)opt.size);
  for (int i = 0; i < opt.conns; i++) {
    if (cs[i].ssl) lg_tls_close(cs[i].ssl);
    close(cs[i].fd);
    free(cs[i].t_sent);
  }
  free(cs);
  free(buf);
  free(hist);
  close(ep);
  return errors ? 1 : 0;
}

/* --- connect --------------------------------------------------------- */

typedef struct cslot {
  int fd;
  int state; /* 0 connecting/sending, 1 reading */
  int got, sentn;
} cslot;

static int run_connect(void) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  cslot *ss = calloc((size_t)opt.conns, sizeof *ss);
  char buf[65536], msg[65536];
  uint64_t done = 0, checked = 0;
  if (ep < 0 || !ss) die("setup");
  for (int i = 0; i < opt.size && i < (int)sizeof msg; i++) msg[i] = (char)('a' + i % 26);
  double start = now(), end = start + opt.duration;
  for (int i = 0; i < opt.conns; i++) {
    ss[i].fd = open_to(NULL);
    if (ss[i].fd < 0) die("connect");
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, ss[i].fd, &ev);
  }
  struct epoll_event evs[256];
  while (now() < end) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int k = 0; k < n; k++) {
      cslot *s = &ss[evs[k].data.u32];
      if (evs[k].events & (EPOLLERR | EPOLLHUP) && s->state == 0)
        fail("connection failed: %s", sock_error(s->fd));
      if (s->state == 0 && (evs[k].events & EPOLLOUT)) {
        ssize_t w = send(s->fd, msg + s->sentn, (size_t)(opt.size - s->sentn), MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) fail("send failed: %s", strerror(errno));
        if (w > 0) s->sentn += (int)w;
        if (s->sentn == opt.size) {
          s->state = 1;
          struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
          epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
        }
      }
      if (s->state == 1 && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
        ssize_t r = recv(s->fd, buf, sizeof buf, 0);
        if (r < 0 && errno != EAGAIN) fail("echo failed: %s", strerror(errno));
        if (r == 0)
          fail("server closed a connection after echoing %d of %d bytes", s->got,
               opt.size);
        if (r > 0) {
          if (s->got + r > opt.size)
            fail("server sent %d bytes back for a %d-byte message",
                 s->got + (int)r, opt.size);
          if (memcmp(buf, msg + s->got, (size_t)r) != 0)
            fail("wrong bytes echoed (at %d to %d of a %d-byte message)", s->got,
                 s->got + (int)r, opt.size);
          s->got += (int)r;
        }
        if (s->got == opt.size) {
          close(s->fd);
          done++;
          checked += (uint64_t)opt.size;
          memset(s, 0, sizeof *s);
          s->fd = open_to(NULL);
          if (s->fd < 0) die("connect");
          struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = evs[k].data.u32};
          epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
        }
      }
    }
  }
  if (done == 0) errors++; /* accepted, perhaps, but never answered */
  double cps = (double)done / (now() - start);
  printf("connect: %d at a time: %.0f connections/s (connect, %d B echo, "
         "close), %llu errors\n",
         opt.conns, cps, opt.size, (unsigned long long)errors);
  printf("mode=connect cps=%.1f done=%llu bytes=%llu errors=%llu\n", cps,
         (unsigned long long)done, (unsigned long long)checked,
         (unsigned long long)errors);
  fflush(stdout);
  if (done == 0)
    fprintf(stderr, "loadgen: connect: no connection completed its echo in %g s\n",
            opt.duration);
  for (int i = 0; i < opt.conns; i++) close(ss[i].fd);
  free(ss);
  close(ep);
  return errors ? 1 : 0;
}

/* --- handshake -------------------------------------------------------- */

typedef struct hslot {
  int fd;
  SSL *ssl;
  int state;             /* 0 handshake, 1 sending, 2 reading the echo */
  int got, sentn;
  int offered;           /* this connection offered a session */
  SSL_SESSION *session;  /* --resume: the session of the slot's first connection */
} hslot;

/* Opens slot s's next connection, offering its session if it has one, and
 * watches it on ep under index i; dies if it cannot. */
static void hs_open(int ep, hslot *s, uint32_t i) {
  s->fd = open_to(NULL);
  if (s->fd < 0) die("connect");
  s->ssl = lg_tls_new(s->fd, s->session);
  if (!s->ssl) die("TLS setup");
  s->offered = s->session != NULL;
  s->state = s->got = s->sentn = 0;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = i};
  epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
}

/* Takes slot s as far as its socket allows: returns 1 once its echo has
 * come back whole and checked, 0 when it must wait; fails the run on any
 * error. buf is scratch, msg the message. */
static int hs_step(hslot *s, char *buf, size_t buflen, const char *msg) {
  if (s->state == 0) {
    int h = lg_tls_handshake(s->ssl);
    if (h < 0) fail("TLS handshake failed: %s", lg_tls_error());
    if (h == 0) return 0;
    s->state = 1;
  }
  while (s->state == 1) {
    ssize_t w = lg_tls_write(s->ssl, msg + s->sentn, (size_t)(opt.size - s->sentn));
    if (w < 0) {
      if (errno == EAGAIN) return 0;
      fail("send failed: %s", lg_tls_error());
    }
    s->sentn += (int)w;
    if (s->sentn == opt.size) s->state = 2;
  }
  for (;;) {
    ssize_t r = lg_tls_read(s->ssl, buf, buflen);
    if (r < 0) {
      if (errno == EAGAIN) return 0;
      fail("echo failed: %s", lg_tls_error());
    }
    if (r == 0)
      fail("server closed a connection after echoing %d of %d bytes", s->got, opt.size);
    if (s->got + r > opt.size)
      fail("server sent %d bytes back for a %d-byte message", s->got + (int)r, opt.size);
    if (memcmp(buf, msg + s->got, (size_t)r) != 0)
      fail("wrong bytes echoed (at %d to %d of a %d-byte message)", s->got,
           s->got + (int)r, opt.size);
    s->got += (int)r;
    if (s->got == opt.size) return 1;
  }
}

static int run_handshake(void) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  hslot *ss = calloc((size_t)opt.conns, sizeof *ss);
  char *buf = malloc(65536), *msg = malloc((size_t)opt.size);
  uint64_t done = 0, checked = 0, offered = 0, resumed = 0;
  if (ep < 0 || !ss || !buf || !msg) die("setup");
  for (int i = 0; i < opt.size; i++) msg[i] = (char)('a' + i % 26);
  /* -n COUNT: until COUNT connections completed (within -t LIMIT), so a
   * check does not depend on the machine's speed; else for -d seconds */
  double start = now(), end = start + (opt.count ? opt.limit : opt.duration);
  for (int i = 0; i < opt.conns; i++) hs_open(ep, &ss[i], (uint32_t)i);
  struct epoll_event evs[256];
  while (opt.count ? done < (uint64_t)opt.count : now() < end) {
    if (opt.count && now() > end)
      fail("handshake: %llu of %lld connections completed in %g s",
           (unsigned long long)done, opt.count, opt.limit);
    int n = epoll_wait(ep, evs, 256, 100);
    for (int k = 0; k < n; k++) {
      uint32_t i = evs[k].data.u32;
      hslot *s = &ss[i];
      if (evs[k].events & EPOLLERR) fail("connection failed: %s", sock_error(s->fd));
      if (!hs_step(s, buf, 65536, msg)) continue;
      done++;
      checked += (uint64_t)opt.size;
      offered += (uint64_t)s->offered;
      resumed += (uint64_t)lg_tls_resumed(s->ssl);
      /* the echo came after TLS 1.3's tickets, so the session is complete */
      if (opt.resume && !s->session && !(s->session = lg_tls_session(s->ssl)))
        fail("the server gave no session to resume (no ticket, no session id)");
      lg_tls_close(s->ssl);
      close(s->fd);
      hs_open(ep, s, i);
    }
  }
  if (done == 0) errors++; /* accepted, perhaps, but never answered */
  double hps = (double)done / (now() - start);
  printf("handshake: %d at a time, %s: %.0f handshakes/s (connect, TLS handshake, "
         "%d B echo, close), %llu of %llu offered sessions resumed, %llu errors\n",
         opt.conns, opt.resume ? "resuming" : "full", hps, opt.size,
         (unsigned long long)resumed, (unsigned long long)offered,
         (unsigned long long)errors);
  printf("mode=handshake hps=%.1f done=%llu offered=%llu resumed=%llu bytes=%llu "
         "errors=%llu\n",
         hps, (unsigned long long)done, (unsigned long long)offered,
         (unsigned long long)resumed, (unsigned long long)checked,
         (unsigned long long)errors);
  fflush(stdout);
  int status = errors ? 1 : 0;
  if (done == 0) {
    int in[3] = {0, 0, 0};
    for (int i = 0; i < opt.conns; i++) in[ss[i].state]++;
    fprintf(stderr, "loadgen: handshake: no connection completed its echo in %g s "
            "(at the end %d were in the handshake, %d sending, %d awaiting the echo)\n",
            opt.duration, in[0], in[1], in[2]);
  } else if (resumed < offered) {
    fprintf(stderr, "loadgen: handshake: the server resumed %llu of the %llu sessions "
            "offered\n", (unsigned long long)resumed, (unsigned long long)offered);
    status = 1;
  }
  for (int i = 0; i < opt.conns; i++) {
    lg_tls_close(ss[i].ssl);
    close(ss[i].fd);
    if (ss[i].session) lg_tls_session_free(ss[i].session);
  }
  free(ss);
  free(buf);
  free(msg);
  close(ep);
  return status;
}

/* --- idle ------------------------------------------------------------- */

/* The idle connections' socket calls, plain or TLS (ssls NULL): as
 * recv(2) with MSG_DONTWAIT and send(2). */
static ssize_t idle_recv(int fd, SSL *ssl, void *buf, size_t len) {
  return ssl ? lg_tls_read(ssl, buf, len) : recv(fd, buf, len, MSG_DONTWAIT);
}
static ssize_t idle_send(int fd, SSL *ssl, const void *buf, size_t len) {
  return ssl ? lg_tls_write(ssl, buf, len) : send(fd, buf, len, MSG_NOSIGNAL);
}

static int run_idle(void) {
  int n = (int)(opt.count ? opt.count : 1000);
  int *fds = calloc((size_t)n, sizeof *fds);
  SSL **ssls = opt.tls ? calloc((size_t)n, sizeof *ssls) : NULL;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (!fds || (opt.tls && !ssls) || ep < 0) die("setup");
#define SSL_OF(i) (ssls ? ssls[i] : NULL)
  double start = now();
  deadline = start + opt.limit;
  /* Plain, every connect goes out at once. Over TLS at most IDLE_TLS_OPENING
   * handshakes are under way at a time, as clients arriving over time make
   * them: each holds its record buffers until it is done, and with
   * thousands at once a server's heap would keep their peak, so its memory
   * would tell the peak and not what an idle connection holds. */
  int cap = ssls ? IDLE_TLS_OPENING : n, opened = 0, connected = 0;
  struct epoll_event evs[512];
  for (;;) {
    for (; opened < n && opened - connected < cap; opened++) {
      int i = opened;
      struct sockaddr_in src = {.sin_family = AF_INET};
      src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i / 20000)); /* 127.0.0.2.. */
      fds[i] = open_to(&src);
      if (fds[i] < 0) die("connect");
      /* TLS: edge-triggered both ways, since the handshake wants either */
      struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
      if (ssls) {
        if (!(ssls[i] = lg_tls_new(fds[i], NULL))) die("TLS setup");
        ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
      }
      epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    /* wait until all are connected (and, with --tls, through the handshake) */
    if (connected == n) break;
    if (now() >= deadline)
      fail("time limit of %g s reached: %d of %d connections open", opt.limit,
           connected, n);
    int k = epoll_wait(ep, evs, 512, 100);
    for (int j = 0; j < k; j++) {
      uint32_t i = evs[j].data.u32;
      if (evs[j].events & (EPOLLERR | EPOLLHUP))
        fail("idle connection %u failed to open: %s", i, sock_error(fds[i]));
      if (ssls) {
        int h = lg_tls_handshake(ssls[i]);
        if (h < 0) fail("idle connection %u: TLS handshake failed: %s", i, lg_tls_error());
        if (h == 0) continue;
      }
      epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
      connected++;
    }
  }
  printf("idle: %d connections open after %.2f s; holding %g s\n", connected,
         now() - start, opt.hold);
  fflush(stdout);
  /* Hold them for real: a server that closes a connection, resets it or
   * writes to it unprompted during the hold fails the run. Over TLS the
   * session tickets a server sends after the handshake are read here, and
   * are no data. */
  char rb[64];
  for (int i = 0; i < n; i++) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
  }
  double hold_start = now(), hold_end = hold_start + opt.hold, t;
  while ((t = now()) < hold_end) {
    int ms = (int)((hold_end - t) * 1000) + 1;
    int k = epoll_wait(ep, evs, 512, ms < 100 ? ms : 100);
    for (int j = 0; j < k; j++) {
      uint32_t i = evs[j].data.u32;
      ssize_t r = idle_recv(fds[i], SSL_OF(i), rb, sizeof rb);
      if (r == 0)
        fail("server closed idle connection %u %.2f s into the %g s hold", i,
             now() - hold_start, opt.hold);
      if (r > 0)
        fail("server sent %zd bytes unprompted on idle connection %u", r, i);
      if (errno != EAGAIN)
        fail("idle connection %u failed %.2f s into the %g s hold: %s", i,
             now() - hold_start, opt.hold, ssls ? lg_tls_error() : strerror(errno));
    }
  }
  double held = now() - hold_start;
  /* each must still answer */
  int ok = 0, closed = 0, wrong = 0, waiting = 0;
  char b = 'x';
  for (int i = 0; i < n; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, fds[i], &ev);
    if (idle_send(fds[i], SSL_OF(i), &b, 1) != 1) {
      closed++;
      epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
    } else {
      waiting++;
    }
  }
  while (waiting > 0 && now() < deadline) {
    int k = epoll_wait(ep, evs, 512, 100);
    for (int j = 0; j < k; j++) {
      int i = (int)evs[j].data.u32;
      ssize_t r = idle_recv(fds[i], SSL_OF(i), rb, sizeof rb);
      if (r < 0 && errno == EAGAIN) continue;
      if (r == 1 && rb[0] == b) ok++;
      else if (r <= 0) closed++;
      else wrong++;
      waiting--;
      epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
    }
  }
  for (int i = 0; i < n; i++) {
    if (ssls) lg_tls_close(ssls[i]);
    close(fds[i]);
  }
#undef SSL_OF
  errors += (uint64_t)(n - ok);
  printf("idle: %d of %d answered\n", ok, n);
  printf("mode=idle open=%d answered=%d held=%.2f errors=%llu\n", connected, ok,
         held, (unsigned long long)errors);
  fflush(stdout);
  if (ok < n)
    fprintf(stderr,
            "loadgen: idle: %d of %d connections did not answer after the %g s "
            "hold: %d closed, %d answered wrong bytes, %d silent at the %g s "
            "time limit\n",
            n - ok, n, opt.hold, closed, wrong, waiting, opt.limit);
  free(fds);
  free(ssls);
  close(ep);
  return errors ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 4) usage();
  opt.mode = argv[1];
  opt.host = argv[2];
  opt.port = atoi(argv[3]);
  for (int i = 4; i < argc; i++) {
    if (strcmp(argv[i], "--tls") == 0) { opt.tls = 1; continue; }
    if (strcmp(argv[i], "--resume") == 0) { opt.resume = 1; continue; }
    if (strcmp(argv[i], "--line") == 0) { opt.line = 1; continue; }
    if (argv[i][0] != '-' || !argv[i][1] || argv[i][2] || i + 1 >= argc) usage();
    const char *v = argv[++i];
    switch (argv[i - 1][1]) {
      case 'c': opt.conns = atoi(v); break;
      case 's': opt.size = atoi(v); break;
      case 'p': opt.depth = atoi(v); break;
      case 'd': opt.duration = atof(v); break;
      case 'w': opt.warmup = atof(v); break;
      case 'n': opt.count = atoll(v); break;
      case 'h': opt.hold = atof(v); break;
      case 't': opt.limit = atof(v); break;
      default: usage();
    }
  }
  int unix_socket = strncmp(opt.host, "unix:", 5) == 0;
  if (opt.conns < 1 || opt.size < 1 || opt.depth < 1 || (opt.port < 1 && !unix_socket) ||
      opt.hold < 0 || opt.limit < 0 || opt.count < 0)
    usage();
  if (set_target() < 0) return 2;
  /* The run's own length, which the time limit must cover. */
  double length;
  int handshake = strcmp(opt.mode, "handshake") == 0;
  if (strcmp(opt.mode, "echo") == 0) length = opt.count ? 0 : opt.warmup + opt.duration;
  else if (strcmp(opt.mode, "connect") == 0 || handshake) length = opt.duration;
  else if (strcmp(opt.mode, "idle") == 0) length = opt.hold;
  else usage();
  if (handshake) opt.tls = 1;
  if ((opt.tls && strcmp(opt.mode, "connect") == 0) || (opt.resume && !handshake)) {
    fprintf(stderr, "loadgen: --tls is for echo, idle and handshake (connect over TLS "
            "is handshake); --resume for handshake\n");
    return 2;
  }
  if (unix_socket && strcmp(opt.mode, "idle") == 0) {
    fprintf(stderr, "loadgen: idle spreads its connections over source addresses: "
            "TCP only\n");
    return 2;
  }
  if (opt.limit == 0) opt.limit = length + 300;
  if (opt.limit < length) {
    fprintf(stderr, "loadgen: a time limit of %g s is shorter than the run (%g s)\n",
            opt.limit, length);
    return 2;
  }
  raise_nofile();
  if (opt.tls && lg_tls_init() < 0) {
    fprintf(stderr, "loadgen: TLS: %s\n", lg_tls_error());
    return 1;
  }
  if (strcmp(opt.mode, "echo") == 0) return run_echo();
  if (strcmp(opt.mode, "connect") == 0) return run_connect();
  if (handshake) return run_handshake();
  return run_idle();
}
