/*
 * loadgen: a load generator for echo servers, in C over epoll, with no
 * dependencies. One thread; every connection non-blocking.
 *
 *   loadgen echo HOST PORT [-c CONNS] [-s SIZE] [-p DEPTH] [-d SECONDS]
 *                          [-w WARMUP] [-n ROUNDTRIPS]
 *       CONNS connections each keep DEPTH messages of SIZE bytes in flight
 *       and check every echoed byte. Runs WARMUP seconds unmeasured, then
 *       SECONDS measured (or exactly ROUNDTRIPS round trips with -n).
 *   loadgen connect HOST PORT [-c CONCURRENCY] [-d SECONDS] [-s SIZE]
 *       Connect, one echo of SIZE bytes, close; CONCURRENCY at a time.
 *   loadgen idle HOST PORT [-n COUNT] [-h HOLD]
 *       Opens COUNT connections, spread over source addresses 127.0.0.2
 *       and up (20,000 each) so more than one address's ports fit, holds
 *       them HOLD seconds, then checks that each still answers.
 *
 * Prints one line of key=value figures (for bench/run) after a readable
 * summary. Exit status 0 when every byte came back right and no
 * connection failed; 1 otherwise (at the first failure); 2 for bad
 * arguments. Traffic goes to
 * HOST only, which must be a loopback address.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
  int port, conns, size, depth, hold;
  double duration, warmup;
  long long count;
} opt = {NULL, NULL, 0, 50, 64, 1, 3, 5.0, 1.0, 0};

static uint32_t *hist;
static uint64_t hist_n, roundtrips, errors, bytes, total_rt;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *msg) {
  fprintf(stderr, "loadgen: %s: %s\n", msg, strerror(errno));
  exit(1);
}

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen echo|connect|idle HOST PORT [-c N] [-s SIZE] "
          "[-p DEPTH] [-d SECONDS] [-w SECONDS] [-n COUNT] [-h SECONDS]\n");
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

static int send_more(conn *c, char *buf, int measuring) {
  /* keep DEPTH messages in flight */
  while (c->msgs_sent - c->msgs_done < (uint64_t)opt.depth) {
    if (opt.count && roundtrips + (c->msgs_sent - c->msgs_done) >= (uint64_t)opt.count)
      break;
    uint64_t off = c->msgs_sent * (uint64_t)opt.size;
    size_t left = (size_t)opt.size - (size_t)(c->sent - off);
    for (size_t i = 0; i < left; i++) buf[i] = (char)pat(c->id, c->sent + i);
    ssize_t n = send(c->fd, buf, left, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if (c->sent == off) c->t_sent[c->msgs_sent % (uint64_t)opt.depth] = now();
    c->sent += (uint64_t)n;
    if ((size_t)n < left) return 0;
    c->msgs_sent++;
  }
  (void)measuring;
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
  for (int i = 0; i < opt.conns; i++) {
    cs[i].id = i;
    cs[i].t_sent = calloc((size_t)opt.depth, sizeof(double));
    cs[i].fd = open_to(&dst, NULL);
    if (cs[i].fd < 0) die("connect");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  struct epoll_event evs[256];
  double start = now(), mstart = start + opt.warmup, end = mstart + opt.duration;
  int measuring = opt.warmup <= 0 || opt.count;
  if (measuring) mstart = start;
  uint64_t base_bytes = 0;
  for (;;) {
    double t = now();
    if (!opt.count && t >= end) break;
    if (opt.count && roundtrips >= (uint64_t)opt.count) break;
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
      if (evs[k].events & (EPOLLERR | EPOLLHUP)) {
        errors++;
        fprintf(stderr, "loadgen: connection %d failed\n", c->id);
        exit(1);
      }
      for (;;) { /* read all */
        ssize_t r = recv(c->fd, buf, 65536, 0);
        if (r < 0) {
          if (errno == EAGAIN) break;
          errors++;
          exit(1);
        }
        if (r == 0) {
          errors++;
          fprintf(stderr, "loadgen: server closed connection %d\n", c->id);
          exit(1);
        }
        for (ssize_t i = 0; i < r; i++)
          if ((unsigned char)buf[i] != pat(c->id, c->rcvd + (uint64_t)i)) {
            errors++;
            fprintf(stderr, "loadgen: wrong byte on connection %d at %llu\n",
                    c->id, (unsigned long long)(c->rcvd + (uint64_t)i));
            exit(1);
          }
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
      if (send_more(c, buf, measuring) < 0) {
        errors++;
        exit(1);
      }
    }
  }
  double secs = opt.count ? now() - start : opt.duration;
  double rps = (double)roundtrips / secs;
  double mbps = (double)(bytes - base_bytes) / secs / 1e6;
  printf("echo: %d conns x %d B, depth %d: %.0f round trips/s, %.2f MB/s, "
         "p50 %.0f us, p99 %.0f us, p999 %.0f us, %llu errors\n",
         opt.conns, opt.size, opt.depth, rps, mbps, percentile(0.5),
         percentile(0.99), percentile(0.999), (unsigned long long)errors);
  printf("mode=echo rps=%.1f mbps=%.3f p50=%.0f p99=%.0f p999=%.0f "
         "roundtrips=%llu total=%llu errors=%llu\n",
         rps, mbps, percentile(0.5), percentile(0.99), percentile(0.999),
         (unsigned long long)roundtrips, (unsigned long long)total_rt,
         (unsigned long long)errors);
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
  uint64_t done = 0;
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
      if (evs[k].events & (EPOLLERR | EPOLLHUP) && s->state == 0) {
        errors++;
        fprintf(stderr, "loadgen: connect failed\n");
        exit(1);
      }
      if (s->state == 0 && (evs[k].events & EPOLLOUT)) {
        ssize_t w = send(s->fd, msg + s->sentn, (size_t)(opt.size - s->sentn), MSG_NOSIGNAL);
        if (w > 0) s->sentn += (int)w;
        if (s->sentn == opt.size) {
          s->state = 1;
          struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
          epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
        }
      }
      if (s->state == 1 && (evs[k].events & EPOLLIN)) {
        ssize_t r = recv(s->fd, buf, sizeof buf, 0);
        if (r <= 0 && !(r < 0 && errno == EAGAIN)) {
          errors++;
          fprintf(stderr, "loadgen: echo failed\n");
          exit(1);
        }
        if (r > 0) {
          if (memcmp(buf, msg + s->got, (size_t)r) != 0) {
            errors++;
            exit(1);
          }
          s->got += (int)r;
        }
        if (s->got == opt.size) {
          close(s->fd);
          done++;
          memset(s, 0, sizeof *s);
          s->fd = open_to(&dst, NULL);
          if (s->fd < 0) die("connect");
          struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = evs[k].data.u32};
          epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
        }
      }
    }
  }
  double cps = (double)done / (now() - start);
  printf("connect: %d at a time: %.0f connections/s (connect, %d B echo, "
         "close), %llu errors\n",
         opt.conns, cps, opt.size, (unsigned long long)errors);
  printf("mode=connect cps=%.1f done=%llu errors=%llu\n", cps,
         (unsigned long long)done, (unsigned long long)errors);
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
  while (connected < n && now() - start < 60) {
    int k = epoll_wait(ep, evs, 512, 100);
    for (int j = 0; j < k; j++) {
      if (evs[j].events & (EPOLLERR | EPOLLHUP)) {
        errors++;
        fprintf(stderr, "loadgen: idle connection %u failed\n", evs[j].data.u32);
        exit(1);
      }
      epoll_ctl(ep, EPOLL_CTL_DEL, fds[evs[j].data.u32], NULL);
      connected++;
    }
  }
  printf("idle: %d connections open after %.2f s; holding %d s\n", connected,
         now() - start, opt.hold);
  fflush(stdout);
  if (opt.hold > 0) sleep((unsigned)opt.hold);
  /* each must still answer */
  int ok = 0;
  char b = 'x', r;
  for (int i = 0; i < n; i++) {
    if (send(fds[i], &b, 1, MSG_NOSIGNAL) != 1) continue;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
  }
  double t0 = now();
  while (ok < n && now() - t0 < 60) {
    int k = epoll_wait(ep, evs, 512, 100);
    for (int j = 0; j < k; j++) {
      int i = (int)evs[j].data.u32;
      if (recv(fds[i], &r, 1, 0) == 1 && r == b) ok++;
      epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
    }
  }
  for (int i = 0; i < n; i++) close(fds[i]);
  errors += (uint64_t)(n - ok);
  printf("idle: %d of %d answered\n", ok, n);
  printf("mode=idle open=%d answered=%d errors=%llu\n", connected, ok,
         (unsigned long long)errors);
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
      case 'h': opt.hold = atoi(v); break;
      default: usage();
    }
  }
  if (opt.conns < 1 || opt.size < 1 || opt.depth < 1 || opt.port < 1) usage();
  if (strncmp(opt.host, "127.", 4) != 0) {
    fprintf(stderr, "loadgen: only loopback addresses (127.x.x.x)\n");
    return 2;
  }
  raise_nofile();
  if (strcmp(opt.mode, "echo") == 0) return run_echo();
  if (strcmp(opt.mode, "connect") == 0) return run_connect();
  if (strcmp(opt.mode, "idle") == 0) return run_idle();
  usage();
  return 2;
}
