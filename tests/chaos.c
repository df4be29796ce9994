/*
 * chaos.c: the chaos run. Starts a real glisten-lua serving tests/chaos.lua
 * and throws bursts of peers at it that misbehave in every way a network
 * allows: resets (SO_LINGER 0, then close), half-closes that still read the
 * answer, peers that connect and vanish at once or in the middle of a
 * message, floods both ways, peers that never read while the server writes
 * to them, and posts from one connection to another (with_message). Each
 * burst ends with every peer gone; then the server is stopped with SIGTERM
 * while some peers are still connected. It checks:
 *
 *   - every connection the run made ran with_init and with_close, each
 *     exactly once (the script logs both with the connection id);
 *   - after every burst, the server's descriptors are back to the count it
 *     had before the first connection (waited for with a bounded poll);
 *   - its resident memory stays flat from burst to burst (see rss_limit);
 *   - every post reached its target exactly once, and every answer is right;
 *   - on SIGTERM it ends the connections left with "shutdown" and exits 0,
 *     and its stderr holds no sanitizer report and no script error but the
 *     ones the run asked for.
 *
 *   chaos GLISTEN_LUA SCRIPT [-w WORKERS] [-b BURSTS] [-s SEED] [-k]
 *
 * -k keeps the folder with the server's stderr and logs. Every choice comes
 * from a generator seeded with SEED (fixed unless given), and every count
 * is fixed, so a run repeats itself but for the kernel's and the
 * scheduler's timing, which no assertion depends on. Every wait has a
 * deadline that only bounds a hang, and the whole run has one more
 * (RUN_LIMIT). Only 127.0.0.1 is used. Exits 0 when every check passes.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define RUN_LIMIT 280     /* seconds: the whole run, a bound against a hang */
#define IO_LIMIT 30       /* seconds: one send or receive of a peer */
#define SETTLE_LIMIT 60.0 /* seconds: the server settling after a burst */
#define START_LIMIT 60.0  /* seconds: the server's "listening on" line */
#define EXIT_LIMIT 60.0   /* seconds: the exit after SIGTERM */
#define GRACE "1"         /* --shutdown-timeout of the server, seconds */
#define RESIDENTS 6       /* peers open through a burst, the posts' targets */
#define STALL_BYTES (64L << 20) /* a flood nobody reads: more than it can queue */
#define MAX_PEERS 128
#define MAX_POSTS 64

/* ---- what the run knows, for reports and cleanup ---- */

static char dir[] = "/tmp/glisten-chaos.XXXXXX";
static pid_t server = -1;
static int keep_dir;

static void remove_dir(void) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char path[PATH_MAX];
  if (!d) return;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

/* The whole of a file, NUL-terminated (malloc'ed; NULL when unreadable). */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *s = NULL;
  size_t n = 0, cap = 0;
  if (!f) return NULL;
  for (;;) {
    if (cap - n < 4096) {
      char *p = realloc(s, cap = cap * 2 + 4096);
      if (!p) break;
      s = p;
    }
    size_t k = fread(s + n, 1, cap - n - 1, f);
    if (k == 0) break;
    n += k;
  }
  fclose(f);
  if (s) s[n] = '\0';
  if (len) *len = n;
  return s;
}

static void server_path(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", dir, name);
}

/* Prints why the run failed and the server's stderr, ends the server, and
 * exits 1. */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...) {
  va_list ap;
  char path[PATH_MAX];
  fprintf(stderr, "chaos: FAILED: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  if (server > 0) kill(server, SIGKILL);
  server_path(path, sizeof path, "stderr");
  size_t n = 0;
  char *err = read_file(path, &n);
  if (err) {
    const char *from = n > 8192 ? err + n - 8192 : err;
    fprintf(stderr, "---- the server's stderr%s ----\n%s---- end ----\n",
            from != err ? " (its end)" : "", from);
    free(err);
  }
  if (keep_dir)
    fprintf(stderr, "chaos: logs kept in %s\n", dir);
  else
    remove_dir();
  exit(1);
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "chaos: FAILED: the run passed its time limit\n";
  if (server > 0) kill(server, SIGKILL);
  if (write(2, msg, sizeof msg - 1) < 0) _exit(1);
  _exit(1);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void nap(void) {
  struct timespec t = {0, 20 * 1000 * 1000};
  nanosleep(&t, NULL);
}

/* ---- a fixed-seed generator (xorshift64*) ---- */

static uint64_t rng_state;

static uint64_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ULL;
}

/* A number from lo to hi, both included. */
static long between(long lo, long hi) {
  return lo + (long)(rnd() % (uint64_t)(hi - lo + 1));
}

/* ---- the server process ---- */

static int port;

/* Starts glisten-lua; returns once it prints its "listening on" line. */
static void start_server(const char *bin, const char *script, const char *workers) {
  char errpath[PATH_MAX], logprefix[PATH_MAX];
  server_path(errpath, sizeof errpath, "stderr");
  server_path(logprefix, sizeof logprefix, "log");
  pid_t parent = getpid();
  server = fork();
  if (server < 0) fail("fork: %s", strerror(errno));
  if (server == 0) {
    /* should the run die without stopping it, the server dies too */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int err = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int null = open("/dev/null", O_RDWR);
    if (err < 0 || null < 0) _exit(127);
    dup2(null, 0);
    dup2(null, 1);
    dup2(err, 2);
    close(err);
    close(null);
    setenv("CHAOS_LOG", logprefix, 1);
    /* AddressSanitizer keeps freed memory in a quarantine of 256 MiB to
     * find uses after free; filling it would look like a leak, so it is
     * capped at 16 MiB, which still holds every block freed in the last
     * several loop turns (a connection's close and what follows it). A
     * build without the sanitizer ignores the variable. */
    const char *given = getenv("ASAN_OPTIONS");
    char asan[1024];
    snprintf(asan, sizeof asan, "%s%squarantine_size_mb=16", given ? given : "",
             given && *given ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    execl(bin, bin, "-w", workers, "--shutdown-timeout", GRACE, script, "0",
          (char *)NULL);
    fprintf(stderr, "chaos: cannot run %s: %s\n", bin, strerror(errno));
    _exit(127);
  }
  double deadline = now() + START_LIMIT;
  while (now() < deadline) {
    char *err = read_file(errpath, NULL);
    const char *at = err ? strstr(err, "listening on 127.0.0.1:") : NULL;
    if (at && strchr(at, '\n')) port = atoi(at + strlen("listening on 127.0.0.1:"));
    free(err);
    if (port > 0) return;
    int status;
    if (waitpid(server, &status, WNOHANG) == server) {
      server = -1;
      fail("glisten-lua exited before listening (status %d)", status);
    }
    nap();
  }
  fail("glisten-lua printed no \"listening on\" line within %.0f s", START_LIMIT);
}

/* The number of descriptors the server holds now. */
static int server_fds(void) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)server);
  DIR *d = opendir(path);
  if (!d) fail("cannot read %s: %s", path, strerror(errno));
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* Prints what each of the server's descriptors is, for a report. */
static void print_server_fds(void) {
  char path[64], link[PATH_MAX], target[PATH_MAX];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)server);
  DIR *d = opendir(path);
  struct dirent *e;
  if (!d) return;
  fprintf(stderr, "chaos: the server's descriptors:\n");
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(link, sizeof link, "%s/%s", path, e->d_name);
    ssize_t n = readlink(link, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    fprintf(stderr, "  %s -> %s\n", e->d_name, target);
  }
  closedir(d);
}

/* The server's resident memory (VmRSS), in bytes. */
static long server_rss(void) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)server);
  char *s = read_file(path, NULL);
  const char *at = s ? strstr(s, "VmRSS:") : NULL;
  if (!at) fail("no VmRSS in %s", path);
  long kb = strtol(at + strlen("VmRSS:"), NULL, 10);
  free(s);
  return kb * 1024;
}

/* ---- the log the script writes: "init ID" and "close ID REASON" ---- */

typedef struct entry {
  long long id;
  int close;       /* 0: init, 1: close */
  char reason[16]; /* for a close */
} entry;

typedef struct census {
  int inits, closes; /* connections that opened, and that ended */
} census;

static int by_id(const void *a, const void *b) {
  const entry *x = a, *y = b;
  if (x->id != y->id) return x->id < y->id ? -1 : 1;
  return x->close - y->close;
}

static entry *entries;
static size_t nentries;

/* Reads every worker's log (whole lines only) into entries, sorted by id,
 * init before close. Fails on a line it cannot read. */
static void read_log(int workers) {
  size_t cap = 0;
  nentries = 0;
  for (int w = 1; w <= workers; w++) {
    char path[PATH_MAX], name[32];
    snprintf(name, sizeof name, "log.%d", w);
    server_path(path, sizeof path, name);
    char *s = read_file(path, NULL);
    if (!s) continue;
    char *line = s, *nl;
    while ((nl = strchr(line, '\n'))) {
      *nl = '\0';
      entry e = {0};
      if (sscanf(line, "init %lld", &e.id) == 1 && strncmp(line, "init ", 5) == 0) {
        e.close = 0;
      } else if (sscanf(line, "close %lld %15s", &e.id, e.reason) == 2) {
        e.close = 1;
      } else {
        fail("log.%d: cannot read the line \"%s\"", w, line);
      }
      if (nentries == cap) {
        entry *p = realloc(entries, (cap = cap * 2 + 256) * sizeof *p);
        if (!p) fail("out of memory");
        entries = p;
      }
      entries[nentries++] = e;
      line = nl + 1;
    }
    free(s);
  }
  qsort(entries, nentries, sizeof *entries, by_id);
}

/* Counts the log's connections; fails on an id that has two inits, two
 * closes, or a close without an init. */
static census count_log(int workers) {
  census c = {0, 0};
  read_log(workers);
  for (size_t i = 0; i < nentries;) {
    size_t j = i;
    int inits = 0, closes = 0;
    while (j < nentries && entries[j].id == entries[i].id) {
      if (entries[j].close) closes++; else inits++;
      j++;
    }
    if (inits > 1) fail("connection %lld ran with_init %d times", entries[i].id, inits);
    if (closes > 1) fail("connection %lld ran with_close %d times", entries[i].id, closes);
    if (closes && !inits) fail("connection %lld ran with_close without with_init", entries[i].id);
    c.inits += inits;
    c.closes += closes;
    i = j;
  }
  return c;
}

/* The reason connection id ended with, or NULL (after count_log). */
static const char *reason_of(long long id) {
  entry key = {.id = id, .close = 1};
  entry *e = bsearch(&key, entries, nentries, sizeof *entries, by_id);
  return e ? e->reason : NULL;
}

/* ---- peers ---- */

static int connects; /* connections made so far: the server must see each */

typedef struct peer {
  int fd;
  long long id; /* the server's id for it; -1 until read */
  int worker;   /* the worker serving it, once its id is read */
  size_t len;   /* bytes waiting in buf */
  char buf[4096];
} peer;

/* A new TCP connection to the server, blocking, with IO_LIMIT on every
 * send and receive. rcvbuf > 0 sets a small receive buffer first. */
static int dial(int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("socket: %s", strerror(errno));
  struct timeval tv = {IO_LIMIT, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
    fail("connect to 127.0.0.1:%d: %s", port, strerror(errno));
  connects++;
  return fd;
}

/* Closes fd with a reset: SO_LINGER 0, then close. */
static void reset_fd(int fd) {
  struct linger l = {1, 0};
  if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0)
    fail("SO_LINGER: %s", strerror(errno));
  close(fd);
}

static void send_all(peer *p, const void *data, size_t n, const char *what) {
  const char *s = data;
  while (n > 0) {
    ssize_t k = send(p->fd, s, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) fail("peer %lld, %s: send: %s", p->id, what, strerror(errno));
    s += k;
    n -= (size_t)k;
  }
}

static void send_str(peer *p, const char *s) { send_all(p, s, strlen(s), s); }

/* Sends n bytes of a pattern. */
static void send_bytes(peer *p, long n, const char *what) {
  static char block[65536];
  if (!block[0]) memset(block, 'x', sizeof block);
  while (n > 0) {
    size_t k = n < (long)sizeof block ? (size_t)n : sizeof block;
    send_all(p, block, k, what);
    n -= (long)k;
  }
}

/* Receives more into p->buf. Returns the bytes read, 0 at the end of the
 * stream; fails on a timeout; -1 on a reset when reset_ok. */
static ssize_t fill(peer *p, const char *what, int reset_ok) {
  for (;;) {
    ssize_t k = recv(p->fd, p->buf + p->len, sizeof p->buf - p->len, 0);
    if (k >= 0) {
      p->len += (size_t)k;
      return k;
    }
    if (errno == EINTR) continue;
    if (errno == ECONNRESET && reset_ok) return -1;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      fail("peer %lld: no answer to %s within %d s", p->id, what, IO_LIMIT);
    fail("peer %lld, %s: recv: %s", p->id, what, strerror(errno));
  }
}

/* The next line, without its "\n", into out. Returns 1, or 0 at the end of
 * the stream (or a reset, when reset_ok). */
static int get_line(peer *p, char *out, size_t cap, const char *what, int reset_ok) {
  for (;;) {
    char *nl = memchr(p->buf, '\n', p->len);
    if (nl) {
      size_t n = (size_t)(nl - p->buf);
      if (n >= cap) fail("peer %lld, %s: a line too long", p->id, what);
      memcpy(out, p->buf, n);
      out[n] = '\0';
      p->len -= n + 1;
      memmove(p->buf, nl + 1, p->len);
      return 1;
    }
    if (p->len == sizeof p->buf) fail("peer %lld, %s: a line too long", p->id, what);
    if (fill(p, what, reset_ok) <= 0) {
      if (p->len) fail("peer %lld, %s: the stream ended inside a line", p->id, what);
      return 0;
    }
  }
}

/* Expects the next line to be `want`. */
static void expect_line(peer *p, const char *want, const char *what) {
  char line[256];
  if (!get_line(p, line, sizeof line, what, 0))
    fail("peer %lld, %s: the server closed instead of answering \"%s\"", p->id, what, want);
  if (strcmp(line, want) != 0)
    fail("peer %lld, %s: got \"%s\", expected \"%s\"", p->id, what, line, want);
}

/* Expects the end of the stream, with no more lines. */
static void expect_end(peer *p, const char *what) {
  char line[256];
  if (get_line(p, line, sizeof line, what, 0))
    fail("peer %lld, %s: got \"%s\", expected the end", p->id, what, line);
}

/* Expects n bytes of the server's flood ('f'). */
static void expect_flood(peer *p, long n) {
  long got = 0;
  while (got < n) {
    if (p->len == 0 && fill(p, "flood", 0) == 0)
      fail("peer %lld: the flood ended after %ld of %ld bytes", p->id, got, n);
    size_t k = p->len < (size_t)(n - got) ? p->len : (size_t)(n - got);
    for (size_t i = 0; i < k; i++)
      if (p->buf[i] != 'f') fail("peer %lld: byte %ld of the flood is wrong", p->id, got + (long)i);
    got += (long)k;
    p->len -= k;
    memmove(p->buf, p->buf + k, p->len);
  }
}

/* A new peer (rcvbuf as for dial); reads its id when read_id. */
static peer *open_peer(int read_id, int rcvbuf) {
  peer *p = calloc(1, sizeof *p);
  if (!p) fail("out of memory");
  p->fd = dial(rcvbuf);
  p->id = -1;
  if (read_id) {
    char line[64];
    if (!get_line(p, line, sizeof line, "the greeting", 0) ||
        sscanf(line, "id %lld %d", &p->id, &p->worker) != 2)
      fail("a new connection got no \"id ID WORKER\" greeting");
  }
  return p;
}

/* How a peer ends: a close (FIN) or a reset. */
static void close_peer(peer *p, int reset) {
  if (reset)
    reset_fd(p->fd);
  else
    close(p->fd);
  free(p);
}

/* ---- one burst ---- */

typedef enum kind {
  CONNECT_CLOSE, /* connects and closes at once */
  CONNECT_RESET, /* connects and resets at once */
  ECHO,          /* a request and its answer, then a close or a reset */
  HALF_CLOSE,    /* sends, shuts its writing side, reads the answer and bye */
  VANISH,        /* leaves in the middle of a message or of an answer */
  FLOOD_IN,      /* a large write, then the answer */
  FLOOD_OUT,     /* asks for a large answer and reads it all */
  STALL,         /* asks for a flood and never reads; leaves at the burst's end */
  POST,          /* posts to a resident; the resident must get it once */
  POST_GONE,     /* posts to a connection that has ended */
  BOOM,          /* makes its handler raise after a large answer */
  QUIT,          /* asks the server to close */
  NKIND
} kind;

/* Each burst runs this many peers of each kind, in a shuffled order: the
 * same mix each time, so that bursts are alike in what they cost. */
static const int MIX[NKIND] = {
  [CONNECT_CLOSE] = 12, [CONNECT_RESET] = 12, [ECHO] = 14, [HALF_CLOSE] = 8,
  [VANISH] = 16, [FLOOD_IN] = 2, [FLOOD_OUT] = 2, [STALL] = 3,
  [POST] = 16, [POST_GONE] = 4, [BOOM] = 2, [QUIT] = 6,
};

typedef struct burst {
  int n;                          /* its number, from 1 */
  peer *residents[RESIDENTS];
  char posted[RESIDENTS][MAX_POSTS][32]; /* what each resident must get */
  int nposted[RESIDENTS];
  peer *stalled[MAX_PEERS];
  int nstalled;
  long long gone;                 /* a connection that has ended */
  int gone_worker;                /* the worker that served it */
} burst;

static int booms;   /* script errors the run asked for */
static int dropped; /* posts to a connection gone on another worker */

static void run_peer(burst *b, kind k, int i) {
  char msg[128], want[128];
  peer *p;
  switch (k) {
  case CONNECT_CLOSE:
    close(dial(0));
    return;
  case CONNECT_RESET:
    reset_fd(dial(0));
    return;
  case ECHO:
    p = open_peer(1, 0);
    snprintf(msg, sizeof msg, "echo burst %d peer %d\n", b->n, i);
    send_str(p, msg);
    snprintf(want, sizeof want, "burst %d peer %d", b->n, i);
    expect_line(p, want, "echo");
    close_peer(p, (int)between(0, 1));
    return;
  case HALF_CLOSE: {
    p = open_peer(1, 0);
    long n = between(0, 256 << 10);
    snprintf(msg, sizeof msg, "sink %ld\n", n);
    send_str(p, msg);
    send_bytes(p, n, "sink");
    if (shutdown(p->fd, SHUT_WR) < 0) fail("shutdown: %s", strerror(errno));
    snprintf(want, sizeof want, "sunk %ld", n);
    expect_line(p, want, "sink, then a half-close");
    expect_line(p, "bye", "a half-close");
    expect_end(p, "a half-close");
    close_peer(p, 0);
    return;
  }
  case VANISH: {
    p = open_peer((int)between(0, 1), 0);
    switch (between(0, 3)) {
    case 0: send_str(p, "echo half a li"); break;             /* a line cut short */
    case 1: send_str(p, "sink 100000\n"); send_bytes(p, between(0, 99999), "sink"); break;
    case 2: send_str(p, "flood 1000000\n"); break;             /* leaves the answer */
    default: send_str(p, "echo one\necho two\necho three\n"); break;
    }
    close_peer(p, (int)between(0, 1));
    return;
  }
  case FLOOD_IN: {
    p = open_peer(1, 0);
    long n = between(1L << 20, 4L << 20);
    snprintf(msg, sizeof msg, "sink %ld\n", n);
    send_str(p, msg);
    send_bytes(p, n, "flood in");
    snprintf(want, sizeof want, "sunk %ld", n);
    expect_line(p, want, "a flood in");
    close_peer(p, (int)between(0, 1));
    return;
  }
  case FLOOD_OUT: {
    p = open_peer(1, 0);
    long n = between(256L << 10, 4L << 20);
    snprintf(msg, sizeof msg, "flood %ld\necho flooded\n", n);
    send_str(p, msg);
    expect_flood(p, n);
    expect_line(p, "flooded", "a flood out");
    close_peer(p, (int)between(0, 1));
    return;
  }
  case STALL:
    /* a small receive buffer: the server's queue fills sooner */
    p = open_peer(1, 4096);
    snprintf(msg, sizeof msg, "flood %ld\n", STALL_BYTES);
    send_str(p, msg);
    b->stalled[b->nstalled++] = p;
    return;
  case POST: {
    int r = (int)between(0, RESIDENTS - 1);
    if (b->nposted[r] == MAX_POSTS) fail("MIX holds more than MAX_POSTS posts");
    char *text = b->posted[r][b->nposted[r]++];
    snprintf(text, sizeof b->posted[r][0], "b%d.p%d", b->n, i);
    p = open_peer(1, 0);
    snprintf(msg, sizeof msg, "post %lld %s\n", b->residents[r]->id, text);
    send_str(p, msg);
    expect_line(p, "posted true nil", "a post to a resident");
    close_peer(p, (int)between(0, 1));
    return;
  }
  case POST_GONE:
    /* on the target's worker, the post fails at once; from another, it
     * is taken, then dropped and counted there */
    p = open_peer(1, 0);
    snprintf(msg, sizeof msg, "post %lld to nobody\n", b->gone);
    send_str(p, msg);
    if (p->worker == b->gone_worker) {
      expect_line(p, "posted nil no such connection", "a post to a connection gone");
    } else {
      expect_line(p, "posted true nil", "a post to a connection gone, across workers");
      dropped++;
    }
    close_peer(p, (int)between(0, 1));
    return;
  case BOOM: {
    /* a small receive buffer: the answer is still queued when it raises */
    p = open_peer(1, 4096);
    long n = between(64L << 10, 1L << 20);
    snprintf(msg, sizeof msg, "boom %ld\n", n);
    send_str(p, msg);
    booms++;
    expect_flood(p, n);
    expect_end(p, "boom");
    close_peer(p, (int)between(0, 1));
    return;
  }
  case QUIT:
    p = open_peer(1, 0);
    send_str(p, "quit\n");
    expect_line(p, "bye", "quit");
    expect_end(p, "quit");
    close_peer(p, (int)between(0, 1));
    return;
  case NKIND:
    break;
  }
}

/* Reads what each resident was posted, in any order, each exactly once. */
static void check_residents(burst *b) {
  for (int r = 0; r < RESIDENTS; r++) {
    peer *p = b->residents[r];
    int seen[MAX_POSTS] = {0};
    for (int left = b->nposted[r]; left > 0; left--) {
      char line[256];
      if (!get_line(p, line, sizeof line, "the posts", 0))
        fail("resident %lld: closed before its %d posts arrived", p->id, b->nposted[r]);
      int j = 0;
      while (j < b->nposted[r] &&
             !(strncmp(line, "msg ", 4) == 0 && strcmp(line + 4, b->posted[r][j]) == 0))
        j++;
      if (j == b->nposted[r]) fail("resident %lld: got \"%s\", not a post to it", p->id, line);
      if (seen[j]++) fail("resident %lld: got \"%s\" twice", p->id, line);
    }
  }
}

/* Runs burst b->n; b->gone is a connection that has ended. Returns
 * with every peer of the burst gone from the run's side. */
static void run_burst(burst *b) {
  kind order[MAX_PEERS];
  int n = 0;
  for (int k = 0; k < NKIND; k++)
    for (int j = 0; j < MIX[k]; j++) {
      if (n == MAX_PEERS) fail("MIX holds more than MAX_PEERS peers");
      order[n++] = (kind)k;
    }
  for (int i = n - 1; i > 0; i--) { /* Fisher-Yates */
    int j = (int)between(0, i);
    kind t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (int r = 0; r < RESIDENTS; r++) b->residents[r] = open_peer(1, 0);
  for (int i = 0; i < n; i++) run_peer(b, order[i], i);
  check_residents(b);
  /* the residents end all three ways: close, reset, half-close */
  for (int r = 0; r < RESIDENTS; r++) {
    peer *p = b->residents[r];
    if (r % 3 == 2) {
      if (shutdown(p->fd, SHUT_WR) < 0) fail("shutdown: %s", strerror(errno));
      expect_line(p, "bye", "a resident's half-close");
      expect_end(p, "a resident's half-close");
    }
    if (r == 0) b->gone = p->id, b->gone_worker = p->worker;
    close_peer(p, r % 3 == 1);
  }
  for (int i = 0; i < b->nstalled; i++) close_peer(b->stalled[i], i % 2 == 0);
}

/* Waits until the server has seen every connection made, each has ended,
 * and its descriptors are back to `baseline`; fails past SETTLE_LIMIT. */
static void settle(int workers, int baseline, const char *after) {
  double deadline = now() + SETTLE_LIMIT;
  census c;
  int fds;
  for (;;) {
    c = count_log(workers);
    fds = server_fds();
    if (c.inits == connects && c.closes == c.inits && fds == baseline) return;
    if (now() > deadline) break;
    nap();
  }
  if (c.inits != connects)
    fail("after %s: the server ran with_init for %d of the %d connections made",
         after, c.inits, connects);
  if (c.closes != c.inits)
    fail("after %s: with_close ran for %d of %d connections", after, c.closes, c.inits);
  print_server_fds();
  fail("after %s: the server holds %d descriptors, %d before the first connection",
       after, fds, baseline);
}

/*
 * Resident memory. The first quarter of the bursts is the warm-up: it makes
 * what the server keeps for good (each worker's malloc arena, its
 * size-class chunks, the Lua state's string table, the sanitizer's tables
 * and quarantine), which is no leak. Its highest RSS is the reference, and
 * the RSS after every later burst must stay within 20% or 2 MiB of it,
 * whichever is more. Bursts are the same mix of peers but for the random
 * sizes, so the RSS after each should stay near the reference: what moves it
 * is how much the allocators keep of the floods' buffers (up to max_output
 * per stalled peer, MiBs of input) and when Lua's collector last ran, and
 * the bound is generous so that this never fails the run on a busy machine.
 * A leak grows with every connection instead, and 40 bursts of about 100
 * connections make it show: a script keeping 1 KiB per connection fails the
 * plain build (about 4 MiB of RSS, so a 2 MiB bound) near burst 20, and the
 * sanitizer build (about 36 MiB with its quarantine capped as in
 * start_server, so a 7 MiB bound) near burst 35; one keeping each
 * connection's state table fails the plain build only.
 */
#define WARMUP(bursts) ((bursts) / 4)

static long rss_limit(long ref) {
  long slack = ref / 5 > (2L << 20) ? ref / 5 : (2L << 20);
  return ref + slack;
}

/* Waits until the server has counted as dropped each post the run made
 * to a connection gone on another worker (they are dropped there, later),
 * and no other. */
static void check_dropped(int workers, int baseline) {
  double deadline = now() + SETTLE_LIMIT;
  long got;
  for (;;) {
    char line[64];
    peer *p = open_peer(1, 0);
    send_str(p, "stats\n");
    if (!get_line(p, line, sizeof line, "stats", 0) || sscanf(line, "dropped %ld", &got) != 1)
      fail("peer %lld: no answer to stats", p->id);
    send_str(p, "quit\n");
    expect_line(p, "bye", "quit");
    expect_end(p, "quit");
    close_peer(p, 0);
    if (got > dropped)
      fail("the server dropped %ld posts; the run made %d that it had to drop", got, dropped);
    if (got == dropped) break;
    if (now() > deadline)
      fail("the server dropped %ld of the %d posts it had to drop", got, dropped);
    nap();
  }
  settle(workers, baseline, "the count of dropped posts");
}

/* ---- the end: SIGTERM with peers connected ---- */

static void stop_server(int workers) {
  enum { IDLE = 4 };
  peer *idle[IDLE];
  long long ids[IDLE + 2];
  int nids = 0;
  char msg[64];
  for (int i = 0; i < IDLE; i++) idle[i] = open_peer(1, 0), ids[nids++] = idle[i]->id;
  /* one in the middle of a sink, one stalled while the server writes */
  peer *mid = open_peer(1, 0);
  send_str(mid, "sink 1000000\n");
  send_bytes(mid, 1000, "sink");
  ids[nids++] = mid->id;
  peer *stalled = open_peer(1, 4096);
  snprintf(msg, sizeof msg, "flood %ld\n", STALL_BYTES);
  send_str(stalled, msg);
  ids[nids++] = stalled->id;
  /* each has run with_init before the signal */
  double deadline = now() + SETTLE_LIMIT;
  while (count_log(workers).inits < connects) {
    if (now() > deadline) fail("the server did not open the last connections");
    nap();
  }
  if (kill(server, SIGTERM) < 0) fail("kill: %s", strerror(errno));
  /* the idle ones get their bye, then the end */
  for (int i = 0; i < IDLE; i++) {
    expect_line(idle[i], "bye", "SIGTERM");
    expect_end(idle[i], "SIGTERM");
    close_peer(idle[i], i % 2);
  }
  /* the one inside a sink: a bye, unless its unread bytes made a reset */
  char line[64];
  if (get_line(mid, line, sizeof line, "SIGTERM", 1) && strcmp(line, "bye") != 0)
    fail("peer %lld, SIGTERM: got \"%s\", expected \"bye\"", mid->id, line);
  close_peer(mid, 0);
  /* the stalled one is never read: the server must exit all the same */
  int status = 0;
  deadline = now() + EXIT_LIMIT;
  for (;;) {
    pid_t w = waitpid(server, &status, WNOHANG);
    if (w == server) break;
    if (w < 0) fail("waitpid: %s", strerror(errno));
    if (now() > deadline) fail("glisten-lua did not exit within %.0f s of SIGTERM", EXIT_LIMIT);
    nap();
  }
  pid_t gone = server;
  server = -1;
  close_peer(stalled, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFSIGNALED(status))
      fail("glisten-lua (pid %d) ended by signal %d after SIGTERM", (int)gone, WTERMSIG(status));
    fail("glisten-lua exited with %d after SIGTERM, not 0", WEXITSTATUS(status));
  }
  census c = count_log(workers);
  if (c.inits != connects)
    fail("at exit: the server ran with_init for %d of the %d connections made", c.inits, connects);
  if (c.closes != c.inits)
    fail("at exit: with_close ran for %d of %d connections", c.closes, c.inits);
  for (int i = 0; i < nids; i++) {
    const char *r = reason_of(ids[i]);
    if (!r || strcmp(r, "shutdown") != 0)
      fail("connection %lld, open at SIGTERM, ended with \"%s\", not \"shutdown\"", ids[i],
           r ? r : "(nothing)");
  }
}

/* Fails when the server's stderr holds a sanitizer report, or script errors
 * other than the booms asked for. */
static void check_stderr(void) {
  static const char *const reports[] = {
    "AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
    "runtime error:", "ThreadSanitizer", "MemorySanitizer", "SUMMARY:",
  };
  char path[PATH_MAX];
  server_path(path, sizeof path, "stderr");
  char *err = read_file(path, NULL);
  if (!err) fail("cannot read the server's stderr");
  for (size_t i = 0; i < sizeof reports / sizeof *reports; i++)
    if (strstr(err, reports[i])) fail("the server's stderr holds a report (\"%s\")", reports[i]);
  int errors = 0, asked = 0;
  for (const char *s = err; (s = strstr(s, "script error")); s++) errors++;
  for (const char *s = err; (s = strstr(s, "boom, as asked by the peer")); s++) asked++;
  if (strstr(err, "error in ")) fail("the server logged an error in a callback other than handler");
  if (errors != booms)
    fail("the server logged %d script errors; the run asked for %d", errors, booms);
  if (asked < booms) fail("the server logged %d of the %d booms asked for", asked, booms);
  free(err);
}

static void usage(void) {
  fprintf(stderr, "usage: chaos GLISTEN_LUA SCRIPT [-w WORKERS] [-b BURSTS] [-s SEED] [-k]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *workers = "1";
  int bursts = 40;
  uint64_t seed = 20240611;
  if (argc < 3) usage();
  const char *bin = argv[1], *script = argv[2];
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "-w") == 0 && i + 1 < argc) workers = argv[++i];
    else if (strcmp(argv[i], "-b") == 0 && i + 1 < argc) bursts = atoi(argv[++i]);
    else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "-k") == 0) keep_dir = 1;
    else usage();
  }
  int nworkers = atoi(workers);
  /* fewer than 16 bursts would leave too short a warm-up (see WARMUP) */
  if (nworkers < 1 || bursts < 16 || bursts > 256) usage();
  rng_state = seed ? seed : 1;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  alarm(RUN_LIMIT);
  if (!mkdtemp(dir)) {
    fprintf(stderr, "chaos: mkdtemp: %s\n", strerror(errno));
    return 1;
  }

  double t0 = now();
  start_server(bin, script, workers);
  int baseline = server_fds();
  printf("chaos: glisten-lua -w %s on port %d (pid %d), seed %llu, %d bursts; "
         "%d descriptors at start\n", workers, port, (int)server,
         (unsigned long long)seed, bursts, baseline);

  long ref = 0, limit = 0; /* the RSS reference and bound, after the warm-up */
  burst *b = calloc(1, sizeof *b);
  if (!b) fail("out of memory");
  /* the first burst's posts to a connection gone go to this one */
  peer *first = open_peer(1, 0);
  b->gone = first->id;
  b->gone_worker = first->worker;
  send_str(first, "quit\n");
  expect_line(first, "bye", "quit");
  expect_end(first, "quit");
  close_peer(first, 0);
  settle(nworkers, baseline, "the first connection");
  for (int n = 1; n <= bursts; n++) {
    long long gone = b->gone;
    int gone_worker = b->gone_worker;
    memset(b, 0, sizeof *b);
    b->n = n;
    b->gone = gone;
    b->gone_worker = gone_worker;
    run_burst(b);
    char after[32];
    snprintf(after, sizeof after, "burst %d", n);
    settle(nworkers, baseline, after);
    long rss = server_rss();
    printf("chaos: burst %d: %d connections so far, all ended; %d descriptors; RSS %.1f MiB%s\n",
           n, connects, baseline, rss / 1048576.0, n <= WARMUP(bursts) ? " (warm-up)" : "");
    fflush(stdout);
    if (n <= WARMUP(bursts)) {
      if (rss > ref) ref = rss;
      limit = rss_limit(ref);
    } else if (rss > limit) {
      fail("the server's RSS grew: %.1f MiB after burst %d, at most %.1f MiB in the %d "
           "bursts of the warm-up (%.1f MiB allowed)", rss / 1048576.0, n, ref / 1048576.0,
           WARMUP(bursts), limit / 1048576.0);
    }
  }
  free(b);

  check_dropped(nworkers, baseline);
  stop_server(nworkers);
  check_stderr();
  printf("chaos: passed: %d connections, each with one with_init and one with_close; "
         "SIGTERM exit 0; %d script errors as asked; %.1f s\n", connects, booms, now() - t0);
  free(entries);
  if (!keep_dir) remove_dir();
  return 0;
}
