/*
 * loadgen: a load generator for echo servers, in C over epoll, with no
 * dependencies. One thread; every connection non-blocking.
 *
 *   loadgen echo HOST PORT [-c CONNS] [-s SIZE] [-p DEPTH] [-d SECONDS]
 *                          [-w WARMUP] [-n ROUNDTRIPS] [-t LIMIT]
 *       CONNS connections each keep DEPTH messages of SIZE bytes in flight
 *       and check every echoed byte. Runs WARMUP seconds unmeasured, then
 *       SECONDS measured (or exactly ROUNDTRIPS round trips with -n).
 *   loadgen connect HOST PORT [-c CONCURRENCY] [-d SECONDS] [-s SIZE]
 *       Connect, one echo of SIZE bytes, close; CONCURRENCY at a time.
 *   loadgen idle HOST PORT [-n COUNT] [-h HOLD] [-t LIMIT]
 *       Opens COUNT connections, spread over source addresses 127.0.0.2
 *       and up (20,000 each) so more than one address's ports fit, holds
 *       them HOLD seconds (any of them closed or written to by the server
 *       meanwhile is a failure), then checks that each still answers.
 *
 * LIMIT bounds the whole run in seconds, so a server that stops answering
 * makes loadgen fail instead of waiting for ever. It must cover the run's
 * own length (-w plus -d, or -h); the default is that length plus 300.
 *
 * Prints a readable summary and then one line of key=value figures (for
 * bench/run): mode=echo ... bytes=B (every byte received, all checked),
 * mode=connect ... done=N bytes=B, mode=idle open=N answered=N held=S.
 * Exit status 0 when every byte came back right, no connection failed and
 * the run completed something: at least one round trip (echo), one
 * connection (connect), every connection answering after the hold (idle).
 * Otherwise 1, with a message on stderr that says what went wrong (at the
 * first failure); 2 for bad arguments. Traffic goes to HOST only, which
 * must be a loopback address.
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
#include <time.h>
#include <unistd.h>

#define HIST_US 1000000 /* latency histogram: 1 us buckets up to 1 s */

typedef struct conn {
  int fd;
  uint64_t sent, rcvd; /* bytes */
  uint64_t msgs_done;  /* messages fully echoed */
  uint64_t msgs_sent;
  double *t_sent;      /* ring of DEPTH send times */
  int id;
} conn;

static struct {
  const char *mode, *host;
  int port, conns, size, depth;
  double duration, warmup, hold, limit;
  long long count;
} opt = {.conns = 50, .size = 64, .depth = 1, .duration = 5.0, .warmup = 1.0,
         .hold = 3};

static uint32_t *hist;
static uint64_t hist_n, roundtrips, errors, bytes, total_rt;
static double deadline; /* the run fails when it has not finished by then */

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
          "usage: loadgen echo|connect|idle HOST PORT [-c N] [-s SIZE] "
          "[-p DEPTH] [-d SECONDS] [-w SECONDS] [-n COUNT] [-h SECONDS] "
          "[-t LIMIT]\n");
  exit(2);
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
  return (unsigned char)((off * 2654435761u + (uint64_t)c * 40503u) >> 7);
}

static int open_to(struct sockaddr_in *dst, struct sockaddr_in *src) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  if (fd < 0) return -1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  if (src) {
    /* pick the port at connect, not at bind: a bind to port 0 searches the
     * whole port space, slowly when thousands are in TIME_WAIT */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
    if (bind(fd, (struct sockaddr *)src, sizeof *src) < 0) {
      close(fd);
      return -1;
    }
  }
  if (connect(fd, (struct sockaddr *)dst, sizeof *dst) < 0 &&
      errno != EINPROGRESS) {
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

/* --- echo ------------------------------------------------------------ */

static uint64_t begun; /* messages whose first byte went out, all connections */

/* Keeps DEPTH messages in flight on c; with -n, begins no message past the
 * count over all connections, so exactly COUNT round trips are made.
 * Returns 0, or -1 when the socket failed. */
static int send_more(conn *c, char *buf) {
  while (c->msgs_sent - c->msgs_done < (uint64_t)opt.depth) {
    uint64_t off = c->msgs_sent * (uint64_t)opt.size;
    int starting = c->sent == off;
    if (starting && opt.count && begun >= (uint64_t)opt.count) break;
    size_t left = (size_t)opt.size - (size_t)(c->sent - off);
    for (size_t i = 0; i < left; i++) buf[i] = (char)pat(c->id, c->sent + i);
    ssize_t n = send(c->fd, buf, left, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if (starting) {
      c->t_sent[c->msgs_sent % (uint64_t)opt.depth] = now();
      begun++;
    }
    c->sent += (uint64_t)n;
    if ((size_t)n < left) return 0;
    c->msgs_sent++;
  }
  return 0;
}

static int run_echo(void) {
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
  if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1) usage();
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
    cs[i].fd = open_to(&dst, NULL);
    if (cs[i].fd < 0) die("connect");
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
      for (;;) { /* read all */
        ssize_t r = recv(c->fd, buf, 65536, 0);
        if (r < 0) {
          if (errno == EAGAIN) break;
          fail("connection %d: receive failed: %s", c->id, strerror(errno));
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
        fail("connection %d: send failed: %s", c->id, strerror(errno));
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
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
  if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1) usage();
  int ep = epoll_create1(EPOLL_CLOEXEC);
  cslot *ss = calloc((size_t)opt.conns, sizeof *ss);
  char buf[65536], msg[65536];
  uint64_t done = 0, checked = 0;
  if (ep < 0 || !ss) die("setup");
  for (int i = 0; i < opt.size && i < (int)sizeof msg; i++) msg[i] = (char)('a' + i % 26);
  double start = now(), end = start + opt.duration;
  for (int i = 0; i < opt.conns; i++) {
    ss[i].fd = open_to(&dst, NULL);
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
          s->fd = open_to(&dst, NULL);
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

/* --- idle ------------------------------------------------------------- */

static int run_idle(void) {
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
  if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1) usage();
  int n = (int)(opt.count ? opt.count : 1000);
  int *fds = calloc((size_t)n, sizeof *fds);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (!fds || ep < 0) die("setup");
  double start = now();
  deadline = start + opt.limit;
  for (int i = 0; i < n; i++) {
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i / 20000)); /* 127.0.0.2.. */
    fds[i] = open_to(&dst, &src);
    if (fds[i] < 0) die("connect");
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
  }
  /* wait until all are connected */
  int connected = 0;
  struct epoll_event evs[512];
  while (connected < n) {
    if (now() >= deadline)
      fail("time limit of %g s reached: %d of %d connections open", opt.limit,
           connected, n);
    int k = epoll_wait(ep, evs, 512, 100);
    for (int j = 0; j < k; j++) {
      uint32_t i = evs[j].data.u32;
      if (evs[j].events & (EPOLLERR | EPOLLHUP))
        fail("idle connection %u failed to open: %s", i, sock_error(fds[i]));
      epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
      connected++;
    }
  }
  printf("idle: %d connections open after %.2f s; holding %g s\n", connected,
         now() - start, opt.hold);
  fflush(stdout);
  /* Hold them for real: a server that closes a connection, resets it or
   * writes to it unprompted during the hold fails the run. */
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
      ssize_t r = recv(fds[i], rb, sizeof rb, MSG_DONTWAIT);
      if (r == 0)
        fail("server closed idle connection %u %.2f s into the %g s hold", i,
             now() - hold_start, opt.hold);
      if (r > 0)
        fail("server sent %zd bytes unprompted on idle connection %u", r, i);
      if (errno != EAGAIN)
        fail("idle connection %u failed %.2f s into the %g s hold: %s", i,
             now() - hold_start, opt.hold, strerror(errno));
    }
  }
  double held = now() - hold_start;
  /* each must still answer */
  int ok = 0, closed = 0, wrong = 0, waiting = 0;
  char b = 'x';
  for (int i = 0; i < n; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, fds[i], &ev);
    if (send(fds[i], &b, 1, MSG_NOSIGNAL) != 1) {
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
      ssize_t r = recv(fds[i], rb, sizeof rb, MSG_DONTWAIT);
      if (r < 0 && errno == EAGAIN) continue;
      if (r == 1 && rb[0] == b) ok++;
      else if (r <= 0) closed++;
      else wrong++;
      waiting--;
      epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
    }
  }
  for (int i = 0; i < n; i++) close(fds[i]);
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
  close(ep);
  return errors ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 4) usage();
  opt.mode = argv[1];
  opt.host = argv[2];
  opt.port = atoi(argv[3]);
  for (int i = 4; i < argc; i++) {
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
  if (opt.conns < 1 || opt.size < 1 || opt.depth < 1 || opt.port < 1 ||
      opt.hold < 0 || opt.limit < 0 || opt.count < 0)
    usage();
  if (strncmp(opt.host, "127.", 4) != 0) {
    fprintf(stderr, "loadgen: only loopback addresses (127.x.x.x)\n");
    return 2;
  }
  /* The run's own length, which the time limit must cover. */
  double length;
  if (strcmp(opt.mode, "echo") == 0) length = opt.count ? 0 : opt.warmup + opt.duration;
  else if (strcmp(opt.mode, "connect") == 0) length = opt.duration;
  else if (strcmp(opt.mode, "idle") == 0) length = opt.hold;
  else usage();
  if (opt.limit == 0) opt.limit = length + 300;
  if (opt.limit < length) {
    fprintf(stderr, "loadgen: a time limit of %g s is shorter than the run (%g s)\n",
            opt.limit, length);
    return 2;
  }
  raise_nofile();
  if (strcmp(opt.mode, "echo") == 0) return run_echo();
  if (strcmp(opt.mode, "connect") == 0) return run_connect();
  return run_idle();
}
