/*
 * test_conn.c: gl_conn over real TCP connections on 127.0.0.1.
 *
 * Each connection's far end (its peer) is a plain non-blocking descriptor
 * the test writes to directly and reads, when asked, with a watcher that
 * checks every byte against a pattern. Callbacks only record what they see
 * in a probe; the tests assert afterwards. Run under GLISTEN_SANITIZE=ON,
 * the close-from-callback tests prove a connection is not freed while its
 * own callback runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conn.h"
#include "gl.h"
#include "helpers.h"
#include "sock.h"

#define NCONN 6
#define KEEP_ALL ((size_t)-1) /* probe.keep: on_data consumes nothing */
#define BIG ((size_t)4 << 20) /* more than any socket buffer takes */
#define IDLE 0.05             /* idle timeout and short linger, seconds */

typedef struct fixture fixture;

/* What one connection's callbacks saw, and how they should behave. */
typedef struct probe {
  fixture *f;
  gl_conn *c;          /* NULL once on_close ran */
  size_t keep;         /* on_data leaves at most this many bytes unread */
  size_t left;         /* bytes unread after the previous on_data */
  size_t seen;         /* new bytes over all on_data calls */
  size_t want;         /* what seen_reaches waits for */
  char got[256];       /* consumed bytes, in order (the first 256) */
  size_t got_len;
  int data_calls, eof_calls, drain_calls, close_calls;
  int scratch_calls;   /* on_data calls with c->in in env.scratch */
  int own_calls;       /* on_data calls with c->in in storage of its own */
  int in_data;         /* on_data is on the stack */
  int in_drain;        /* on_drain is on the stack */
  int closed_inside;   /* on_close ran while on_data/on_drain was */
  int close_in_data;   /* on_data closes its connection */
  int close_all_in_data; /* on_data closes every connection */
  int close_in_drain;  /* on_drain closes its connection */
  unsigned flags_after_close; /* c->flags read after closing in a callback */
  int write_after_close;      /* gl_conn_write then */
  int write_in_close;         /* gl_conn_write inside on_close */
  int reason, err;
  int bad_seen;        /* c->in shrank between calls */
  int drain_want;      /* what drains_reach waits for */
  size_t drain_queued; /* gl_conn_queued at the first on_drain */
  size_t close_queued; /* gl_conn_queued in on_close */
  ev_tstamp last_data_at;  /* loop time of the last on_data */
  ev_tstamp idle_at_close; /* loop time minus last_active in on_close */
  ev_tstamp closed_at;     /* loop time of on_close */
} probe;

/* A connection's far end. */
typedef struct peer {
  int fd;
  ev_io io;
  size_t got;  /* bytes read */
  size_t want; /* what peer_got_reaches waits for */
  size_t piece; /* the most one read takes; 0: 64 KiB */
  int eof;
  int err;     /* errno of a failed read */
  int bad;     /* a byte broke the pattern */
} peer;

struct fixture {
  struct ev_loop *loop;
  gl_stats stats;
  gl_env env;
  probe probes[NCONN];
  peer peers[NCONN];
  ev_timer pinger;
  int pings;
  ev_tstamp last_ping_at, ping_gap; /* loop time of the last; longest gap */
};

/* The byte at stream position i. */
static char pat(size_t i) { return (char)(i % 251); }

static char *pattern(size_t n) {
  char *p = malloc(n);
  assert_non_null(p);
  for (size_t i = 0; i < n; i++) p[i] = pat(i);
  return p;
}

/* --- callbacks ----------------------------------------------------------- */

static void probe_data(gl_conn *c) {
  probe *p = c->data;
  p->in_data++;
  p->data_calls++;
  if (c->in.data == p->f->env.scratch)
    p->scratch_calls++;
  else
    p->own_calls++;
  if (c->in.len < p->left) p->bad_seen = 1;
  p->seen += c->in.len - p->left;
  if (c->flags & GL_CONN_EOF) p->eof_calls++;
  p->last_data_at = ev_now(p->f->loop);
  if (p->close_in_data) {
    gl_conn_close(c, GL_CLOSE_LOCAL, 0);
    /* c must still be valid memory here. */
    p->flags_after_close = c->flags;
    p->write_after_close = gl_conn_write(c, "x", 1);
    gl_conn_read(c, 1);
  } else if (p->close_all_in_data) {
    gl_env_close_all(&p->f->env);
    p->flags_after_close = c->flags;
  } else {
    size_t take = 0;
    if (p->keep != KEEP_ALL && c->in.len > p->keep) take = c->in.len - p->keep;
    for (size_t i = 0; i < take && p->got_len < sizeof p->got; i++)
      p->got[p->got_len++] = gl_buf_head(&c->in)[i];
    gl_conn_consume(c, take);
    p->left = c->in.len;
  }
  p->in_data--;
}

static void probe_drain(gl_conn *c) {
  probe *p = c->data;
  p->in_drain++;
  if (!p->drain_calls++) p->drain_queued = gl_conn_queued(c);
  if (p->close_in_drain) {
    gl_conn_close(c, GL_CLOSE_LOCAL, 0);
    p->flags_after_close = c->flags;
    p->write_after_close = gl_conn_write(c, "x", 1);
  }
  p->in_drain--;
}

static void probe_close(gl_conn *c) {
  probe *p = c->data;
  p->close_calls++;
  p->reason = c->reason;
  p->err = c->err;
  p->close_queued = gl_conn_queued(c);
  p->closed_inside = p->in_data || p->in_drain;
  p->idle_at_close = ev_now(p->f->loop) - c->last_active;
  p->closed_at = ev_now(p->f->loop);
  /* Using c from its own on_close is safe and does nothing. */
  p->write_in_close = gl_conn_write(c, "x", 1);
  gl_conn_close(c, GL_CLOSE_ERROR, 1.0);
  gl_conn_read(c, 1);
  p->c = NULL;
}

static const gl_conn_cbs probe_cbs = {probe_data, probe_drain, probe_close};

static void peer_read(struct ev_loop *loop, ev_io *w, int revents) {
  peer *q = w->data;
  char buf[65536];
  (void)revents;
  ssize_t n = read(q->fd, buf, q->piece ? q->piece : sizeof buf);
  if (n > 0) {
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != pat(q->got + (size_t)i)) q->bad = 1;
    q->got += (size_t)n;
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n == 0)
    q->eof = 1;
  else
    q->err = errno;
  ev_io_stop(loop, w);
}

/* --- fixture ------------------------------------------------------------- */

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->loop = ev_loop_new(EVFLAG_AUTO);
  f->env.loop = f->loop;
  f->env.stats = &f->stats;
  f->env.scratch = malloc(GL_READ_CHUNK);
  if (!f->loop || !f->env.scratch) return -1;
  for (int i = 0; i < NCONN; i++) f->peers[i].fd = -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  gl_env_close_all(&f->env);
  for (int i = 0; i < NCONN; i++) {
    ev_io_stop(f->loop, &f->peers[i].io);
    if (f->peers[i].fd >= 0) close(f->peers[i].fd);
  }
  ev_timer_stop(f->loop, &f->pinger);
  ev_loop_destroy(f->loop);
  free(f->env.scratch);
  free(f);
  return 0;
}

/* A reading connection on the accepted end of a fresh loopback pair, probe
 * i recording its callbacks and peer i holding the other end. */
static gl_conn *open_conn(fixture *f, int i) {
  int a, b;
  probe *p = &f->probes[i];
  tcp_pair(&a, &b);
  memset(p, 0, sizeof *p);
  p->f = f;
  f->peers[i].fd = b;
  ev_io_init(&f->peers[i].io, peer_read, b, EV_READ);
  f->peers[i].io.data = &f->peers[i];
  ev_now_update(f->loop); /* last_active starts from the real time */
  gl_conn *c = gl_conn_new(&f->env, a, 0, &probe_cbs, p);
  assert_non_null(c);
  p->c = c;
  gl_conn_read(c, 1);
  assert_true(ev_is_active(&c->rio));
  return c;
}

/* Small socket buffers both ways, so that the kernel takes little and the
 * rest of a large write is queued. */
static void shrink_buffers(gl_conn *c, peer *q) {
  int small = 16384;
  assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &small,
                              sizeof small), 0);
  assert_int_equal(setsockopt(q->fd, SOL_SOCKET, SO_RCVBUF, &small,
                              sizeof small), 0);
}

/* Reads exactly n bytes from a peer descriptor (bounded). */
static void peer_expect(peer *q, const char *want, size_t n) {
  char buf[256];
  size_t got = 0;
  assert_true(n <= sizeof buf);
  while (got < n) {
    assert_true(wait_fd(q->fd, POLLIN, WAIT_MS) & POLLIN);
    ssize_t r = read(q->fd, buf + got, n - got);
    if (r < 0 && errno == EAGAIN) continue;
    assert_true(r > 0);
    got += (size_t)r;
  }
  assert_memory_equal(buf, want, n);
}

/* The peer sees the connection's end of stream (bounded). */
static void peer_expect_eof(peer *q) {
  char buf[64];
  assert_true(wait_fd(q->fd, POLLIN, WAIT_MS) & (POLLIN | POLLHUP));
  assert_int_equal(read(q->fd, buf, sizeof buf), 0);
}

/* Resets the connection from the peer's side (SO_LINGER 0, then close). */
static void peer_reset(peer *q) {
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(q->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg),
                   0);
  close(q->fd);
  q->fd = -1;
}

static int closed(void *arg) { return ((probe *)arg)->close_calls > 0; }
static int seen_reaches(void *arg) {
  probe *p = arg;
  return p->seen >= p->want;
}
static int drained(void *arg) { return ((probe *)arg)->drain_calls > 0; }
static int queue_empty(void *arg) { return gl_conn_queued(arg) == 0; }
static int peer_done(void *arg) {
  peer *q = arg;
  return q->eof || q->err;
}

static int peer_got_reaches(void *arg) {
  peer *q = arg;
  return q->got >= q->want || q->err;
}

/* Runs the loop until peer q has read n bytes (bounded). */
static void wait_peer_got(fixture *f, peer *q, size_t n) {
  q->want = n;
  if (!run_until(f->loop, peer_got_reaches, q, 2 * WAIT_S))
    fail_msg("peer read %zu of %zu bytes", q->got, n);
  assert_int_equal(q->err, 0);
}

static void wait_seen(fixture *f, probe *p, size_t n) {
  p->want = n;
  if (!run_until(f->loop, seen_reaches, p, WAIT_S))
    fail_msg("saw %zu of %zu bytes", p->seen, n);
}

static void wait_closed(fixture *f, probe *p) {
  if (!run_until(f->loop, closed, p, WAIT_S)) fail_msg("not closed");
}

/* Every connection the test made has ended. */
static void assert_all_closed(fixture *f) {
  assert_null(f->env.conns);
  assert_int_equal(f->stats.connections, 0);
}

/* --- input --------------------------------------------------------------- */

/* Bytes are read into the shared scratch; what on_data leaves unread moves
 * to the connection's own storage and is still there, in order, at the next
 * call; a connection that consumes everything owns no input memory. */
static void test_data_scratch_and_kept(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  assert_null(c->in.data);

  p->keep = 3;
  write_all(q->fd, "hello", 5);
  wait_seen(f, p, 5);
  assert_true(p->scratch_calls >= 1); /* the first read used the scratch */
  assert_int_equal(c->in.len, 3);
  assert_memory_equal(gl_buf_head(&c->in), "llo", 3);
  assert_non_null(c->in.data);
  assert_ptr_not_equal(c->in.data, f->env.scratch);
  assert_int_equal(p->got_len, 2);
  assert_memory_equal(p->got, "he", 2);

  p->keep = 0;
  int own = p->own_calls;
  write_all(q->fd, "world", 5);
  wait_seen(f, p, 10);
  assert_true(p->own_calls > own); /* appended to the kept bytes */
  assert_int_equal(c->in.len, 0);
  assert_null(c->in.data);
  assert_int_equal(p->got_len, 10);
  assert_memory_equal(p->got, "helloworld", 10);

  int scratch = p->scratch_calls;
  write_all(q->fd, "again", 5);
  wait_seen(f, p, 15);
  assert_true(p->scratch_calls > scratch);
  assert_null(c->in.data);
  assert_memory_equal(p->got, "helloworldagain", 15);
  assert_false(p->bad_seen);
  assert_int_equal(p->eof_calls, 0);
  assert_int_equal(f->stats.bytes_in, 15);

  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_int_equal(p->close_calls, 1);
  assert_int_equal(p->reason, GL_CLOSE_LOCAL);
  assert_int_equal(p->err, 0);
  peer_expect_eof(q);
  assert_all_closed(f);
}

/* Reading stops once in.len reaches in_max and resumes after consume. */
static void test_in_max_pauses_reading(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  char *src = pattern(200);
  c->in_max = 100;
  p->keep = KEEP_ALL;

  write_all(q->fd, src, 50);
  wait_seen(f, p, 50);
  assert_int_equal(c->in.len, 50);
  assert_true(ev_is_active(&c->rio));

  write_all(q->fd, src + 50, 150);
  wait_seen(f, p, 100);
  assert_int_equal(c->in.len, 100);
  assert_false(ev_is_active(&c->rio));
  assert_memory_equal(gl_buf_head(&c->in), src, 100);

  /* Paused: the other 100 bytes stay in the kernel. */
  int calls = p->data_calls;
  run_for(f->loop, 0.05);
  assert_int_equal(p->data_calls, calls);
  assert_int_equal(p->seen, 100);
  assert_int_equal(c->in.len, 100);

  gl_conn_consume(c, 100);
  p->left = 0;
  assert_true(ev_is_active(&c->rio));
  assert_null(c->in.data); /* emptied own storage is released */
  wait_seen(f, p, 200);
  assert_int_equal(c->in.len, 100);
  assert_memory_equal(gl_buf_head(&c->in), src + 100, 100);
  assert_false(ev_is_active(&c->rio));

  gl_conn_consume(c, 60);
  p->left = 40;
  assert_true(ev_is_active(&c->rio));
  /* Not wanting input, or a lower in_max, stops reading; raising in_max
   * resumes. */
  gl_conn_read(c, 0);
  assert_false(ev_is_active(&c->rio));
  gl_conn_read(c, 1);
  c->in_max = 40;
  gl_conn_update(c);
  assert_false(ev_is_active(&c->rio));
  c->in_max = 1000;
  gl_conn_update(c);
  assert_true(ev_is_active(&c->rio));
  assert_int_equal(f->stats.bytes_in, 200);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_all_closed(f);
  free(src);
}

/* The peer's end of stream sets GL_CONN_EOF, reaches on_data and stops
 * reading; the connection stays open for writing. */
static void test_eof(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  p->keep = 0;
  write_all(q->fd, "bye", 3);
  assert_int_equal(shutdown(q->fd, SHUT_WR), 0);
  if (!run_until(f->loop, int_nonzero, &p->eof_calls, WAIT_S))
    fail_msg("no EOF");
  assert_int_equal(p->eof_calls, 1);
  assert_int_equal(p->seen, 3);
  assert_memory_equal(p->got, "bye", 3);
  assert_true(c->flags & GL_CONN_EOF);
  assert_false(ev_is_active(&c->rio));
  assert_int_equal(p->close_calls, 0);

  run_for(f->loop, 0.02);
  assert_int_equal(p->eof_calls, 1); /* reported once */
  assert_int_equal(gl_conn_write(c, "ok", 2), GL_OK);
  peer_expect(q, "ok", 2);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  peer_expect_eof(q);
  assert_all_closed(f);
}

/* --- output -------------------------------------------------------------- */

/* With nothing queued, a write goes straight to the socket. */
static void test_write_direct(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  peer *q = &f->peers[0];
  assert_int_equal(gl_conn_write(c, "ping", 4), GL_OK);
  assert_int_equal(gl_conn_queued(c), 0);
  assert_null(c->out.data);
  assert_false(ev_is_active(&c->wio));
  assert_int_equal(gl_conn_write(c, "", 0), GL_OK);
  assert_int_equal(f->stats.bytes_out, 4);
  peer_expect(q, "ping", 4);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_all_closed(f);
}

/* gl_conn_write_some takes what the kernel and the queue have room for,
 * never more than out_max queued; the writer goes on with the rest as the
 * peer reads, and every byte arrives once, in order. */
static void test_write_some_takes_what_fits(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  peer *q = &f->peers[0];
  char *src = pattern(BIG);
  size_t sent = 0;
  shrink_buffers(c, q);
  c->out_max = 100000;

  long r = gl_conn_write_some(c, src, BIG);
  assert_true(r > 0 && (size_t)r < BIG);
  assert_int_equal(gl_conn_queued(c), c->out_max); /* full, not past it */
  assert_int_equal(f->stats.bytes_out + gl_conn_queued(c), (size_t)r);
  sent = (size_t)r;
  /* a full queue takes nothing more, and says so without failing */
  assert_int_equal(gl_conn_write_some(c, src + sent, BIG - sent), 0);

  ev_io_start(f->loop, &q->io);
  while (sent < BIG) {
    size_t want = sent - gl_conn_queued(c) + 1; /* one more byte arrives */
    wait_peer_got(f, q, want < sent ? want : sent);
    r = gl_conn_write_some(c, src + sent, BIG - sent);
    assert_true(r >= 0);
    assert_true(gl_conn_queued(c) <= c->out_max);
    sent += (size_t)r;
  }
  wait_peer_got(f, q, BIG);
  assert_int_equal(q->got, BIG);
  assert_false(q->bad);
  assert_int_equal(gl_conn_queued(c), 0);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  free(src);
}

/* The pieces of all[0..n) from stream offset off on, in out; returns how
 * many there are. */
static int pieces_from(const struct iovec *all, int n, size_t off,
                       struct iovec *out) {
  int k = 0;
  for (int i = 0; i < n; i++) {
    if (off >= all[i].iov_len) {
      off -= all[i].iov_len;
      continue;
    }
    out[k].iov_base = (char *)all[i].iov_base + off;
    out[k++].iov_len = all[i].iov_len - off;
    off = 0;
  }
  return k;
}

/* gl_conn_writev_some with nothing queued: one write takes every piece, an
 * empty one included; the peer gets them in order. */
static void test_writev_direct(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  peer *q = &f->peers[0];
  struct iovec iov[4] = {{"ab", 2}, {"", 0}, {"cdef", 4}, {"g", 1}};
  assert_int_equal(gl_conn_writev_some(c, iov, 4), 7);
  assert_int_equal(gl_conn_queued(c), 0);
  assert_null(c->out.data);
  assert_int_equal(f->stats.bytes_out, 7);
  peer_expect(q, "abcdefg", 7);
  assert_int_equal(gl_conn_writev_some(c, iov + 2, 1), 4); /* one piece */
  assert_int_equal(gl_conn_writev_some(c, iov + 1, 1), 0); /* nothing */
  peer_expect(q, "cdef", 4);
  assert_int_equal(f->stats.bytes_out, 11);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_all_closed(f);
}

/* A socket that takes only part of the pieces: the rest of the piece it
 * stopped in and the pieces after it are queued up to out_max, and the
 * count says how much was taken; going on from there, every byte arrives
 * once, in order, whatever the pieces' sizes. */
static void test_writev_takes_what_fits(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  peer *q = &f->peers[0];
  char *src = pattern(BIG);
  size_t cut[] = {1, 1000, 0, BIG / 2, 3}, at = 0, sent;
  struct iovec all[6], iov[6];
  int n = 0;
  for (size_t i = 0; i < sizeof cut / sizeof *cut; i++, n++) {
    all[n].iov_base = src + at;
    all[n].iov_len = cut[i];
    at += cut[i];
  }
  all[n].iov_base = src + at;
  all[n++].iov_len = BIG - at;
  shrink_buffers(c, q);
  c->out_max = 100000;

  long r = gl_conn_writev_some(c, all, n);
  assert_true(r > 0 && (size_t)r < BIG);
  assert_int_equal(gl_conn_queued(c), c->out_max); /* full, not past it */
  assert_int_equal(f->stats.bytes_out + gl_conn_queued(c), (size_t)r);
  sent = (size_t)r;
  int k = pieces_from(all, n, sent, iov);
  assert_int_equal(gl_conn_writev_some(c, iov, k), 0);

  ev_io_start(f->loop, &q->io);
  while (sent < BIG) {
    size_t want = sent - gl_conn_queued(c) + 1; /* one more byte arrives */
    wait_peer_got(f, q, want < sent ? want : sent);
    k = pieces_from(all, n, sent, iov);
    r = gl_conn_writev_some(c, iov, k);
    assert_true(r >= 0);
    assert_true(gl_conn_queued(c) <= c->out_max);
    sent += (size_t)r;
  }
  wait_peer_got(f, q, BIG);
  assert_int_equal(q->got, BIG);
  assert_false(q->bad);
  assert_int_equal(gl_conn_queued(c), 0);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  if (!run_until(f->loop, peer_done, q, WAIT_S)) fail_msg("peer: no EOF");
  assert_int_equal(q->got, BIG);
  assert_all_closed(f);
  free(src);
}

/* A peer that does not read makes writes queue; the queue never passes
 * out_max (-ENOBUFS, nothing queued); once the peer reads, every accepted
 * byte arrives in order and writes go direct again. */
static void test_write_queues_and_refuses(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  peer *q = &f->peers[0];
  char *src = pattern(BIG + 2000);
  shrink_buffers(c, q);

  assert_int_equal(gl_conn_write(c, src, BIG), GL_OK);
  size_t queued = gl_conn_queued(c);
  assert_true(queued > 0);
  assert_true(ev_is_active(&c->wio));
  assert_int_equal(f->stats.bytes_out, BIG - queued);

  /* Queued writes are not tried directly: they go behind the queue. */
  c->out_max = queued + 1000;
  unsigned long long out = f->stats.bytes_out;
  assert_int_equal(gl_conn_write(c, src + BIG, 1001), -ENOBUFS);
  assert_int_equal(gl_conn_queued(c), queued);
  assert_int_equal(f->stats.bytes_out, out);
  assert_int_equal(gl_conn_write(c, src + BIG, 1000), GL_OK);
  assert_int_equal(gl_conn_queued(c), queued + 1000);
  assert_int_equal(gl_conn_write(c, src, 1), -ENOBUFS);
  assert_int_equal(gl_conn_queued(c), queued + 1000);

  ev_io_start(f->loop, &q->io);
  wait_peer_got(f, q, BIG + 1000);
  assert_int_equal(q->got, BIG + 1000);
  assert_false(q->bad);
  assert_int_equal(gl_conn_queued(c), 0);
  assert_false(ev_is_active(&c->wio));
  assert_null(c->out.data); /* an idle connection owns no output memory */

  assert_int_equal(gl_conn_write(c, src + BIG + 1000, 10), GL_OK);
  assert_int_equal(gl_conn_queued(c), 0);
  assert_int_equal(f->stats.bytes_out, BIG + 1010);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  if (!run_until(f->loop, peer_done, q, WAIT_S)) fail_msg("peer: no EOF");
  assert_true(q->eof);
  assert_int_equal(q->got, BIG + 1010);
  assert_false(q->bad);
  assert_all_closed(f);
  free(src);
}

/* on_drain fires once the peer reads and the queue falls to low_water, not
 * before. */
static void test_drain_at_low_water(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  char *src = pattern(BIG);
  shrink_buffers(c, q);
  c->low_water = 65536;

  assert_int_equal(gl_conn_write(c, src, BIG), GL_OK);
  assert_true(gl_conn_queued(c) > c->low_water);
  run_for(f->loop, 0.05);
  assert_int_equal(p->drain_calls, 0);
  assert_true(gl_conn_queued(c) > c->low_water);

  ev_io_start(f->loop, &q->io);
  if (!run_until(f->loop, drained, p, WAIT_S)) fail_msg("no drain");
  assert_true(p->drain_queued <= c->low_water);

  wait_peer_got(f, q, BIG);
  assert_int_equal(gl_conn_queued(c), 0);
  assert_false(ev_is_active(&c->wio));
  assert_null(c->out.data);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  if (!run_until(f->loop, peer_done, q, WAIT_S)) fail_msg("peer: no EOF");
  assert_int_equal(q->got, BIG);
  assert_false(q->bad);
  assert_int_equal(p->close_calls, 1);
  assert_all_closed(f);
  free(src);
}

/* --- closing ------------------------------------------------------------- */

/* A lingering close stops reading, refuses new output, writes out the
 * queue, then closes: the peer gets every byte, then end of stream. */
static void test_linger_flushes(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  char *src = pattern(BIG);
  shrink_buffers(c, q);
  assert_int_equal(gl_conn_write(c, src, BIG), GL_OK);
  assert_true(gl_conn_queued(c) > 0);

  /* A linger far past any wait below: the close must come from the
   * emptied queue, not from the deadline. */
  gl_conn_close(c, GL_CLOSE_LOCAL, 3600);
  assert_int_equal(p->close_calls, 0);
  assert_true(c->flags & GL_CONN_CLOSING);
  assert_false(ev_is_active(&c->rio));
  assert_int_equal(gl_conn_write(c, "x", 1), -EPIPE);
  gl_conn_close(c, GL_CLOSE_ERROR, 3600); /* already closing */
  assert_int_equal(p->close_calls, 0);

  ev_io_start(f->loop, &q->io);
  if (!run_until(f->loop, peer_done, q, 2 * WAIT_S)) fail_msg("no EOF");
  assert_true(q->eof);
  assert_int_equal(q->got, BIG);
  assert_false(q->bad);
  assert_int_equal(p->close_calls, 1);
  assert_int_equal(p->reason, GL_CLOSE_LOCAL); /* the first reason stays */
  assert_int_equal(p->err, 0);
  assert_int_equal(p->close_queued, 0);
  assert_int_equal(f->stats.bytes_out, BIG);
  assert_all_closed(f);
  free(src);
}

/* A peer that never reads: the close happens when linger runs out, with
 * output still queued, and only the bytes the kernel took arrive. */
static void test_linger_deadline(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  char *src = pattern(BIG);
  shrink_buffers(c, q);
  assert_int_equal(gl_conn_write(c, src, BIG), GL_OK);
  gl_conn_close(c, GL_CLOSE_LOCAL, IDLE);
  assert_int_equal(p->close_calls, 0);
  wait_closed(f, p);
  assert_int_equal(p->reason, GL_CLOSE_LOCAL);
  assert_true(p->close_queued > 0);

  ev_io_start(f->loop, &q->io);
  if (!run_until(f->loop, peer_done, q, WAIT_S)) fail_msg("no EOF");
  assert_true(q->eof);
  assert_false(q->bad);
  assert_true(q->got < BIG);
  assert_int_equal(q->got, f->stats.bytes_out);
  assert_all_closed(f);
  free(src);
}

/* No I/O for the idle time closes with GL_CLOSE_TIMEOUT. */
static void test_idle_timeout(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  gl_conn_set_idle(c, IDLE);
  wait_closed(f, p);
  assert_int_equal(p->reason, GL_CLOSE_TIMEOUT);
  assert_int_equal(p->err, 0);
  assert_true(p->idle_at_close >= IDLE - 1e-9);
  assert_int_equal(f->stats.closed, 1);
  assert_int_equal(f->stats.errors, 0);
  peer_expect_eof(&f->peers[0]);
  assert_all_closed(f);
}

#define PINGS 8
#define PING_IDLE 0.5 /* the idle timeout while pinging every PING_IDLE / 5 */

static void ping(struct ev_loop *loop, ev_timer *w, int revents) {
  fixture *f = w->data;
  ev_tstamp now = ev_now(loop);
  (void)revents;
  if (now - f->last_ping_at > f->ping_gap) f->ping_gap = now - f->last_ping_at;
  f->last_ping_at = now;
  write_all(f->peers[0].fd, "p", 1);
  if (++f->pings == PINGS) ev_timer_stop(loop, w);
}

/* Input postpones the idle timeout: pings for 1.6 times the idle time keep
 * the connection open; it times out once they stop. The connection may
 * never close while its last input is less than the idle time old, however
 * the process is scheduled. That the pings carried it past its first
 * deadline is checked only when no gap between them (a process that did not
 * run) reached half the idle time: a slower pace is no keep-alive. */
static void test_idle_postponed_by_activity(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  p->keep = 0;
  gl_conn_set_idle(c, PING_IDLE);
  ev_tstamp start = ev_now(f->loop);
  f->last_ping_at = start;
  ev_timer_init(&f->pinger, ping, PING_IDLE / 5, PING_IDLE / 5);
  f->pinger.data = f;
  ev_timer_start(f->loop, &f->pinger);
  wait_closed(f, p);
  ev_timer_stop(f->loop, &f->pinger);
  assert_int_equal(p->reason, GL_CLOSE_TIMEOUT);
  assert_true(p->idle_at_close >= PING_IDLE - 1e-9);
  /* its own last input, as the probe saw it, is as old */
  assert_true(p->closed_at - (p->seen ? p->last_data_at : start) >=
              PING_IDLE - 1e-9);
  if (f->ping_gap < PING_IDLE / 2) {
    assert_int_equal(f->pings, PINGS);
    assert_int_equal(p->seen, PINGS); /* all arrived while open */
    assert_true(p->last_data_at - start >= PING_IDLE); /* past the first */
  } else {
    print_message("(a gap of %.3f s between pings: pace not checked)\n",
                  f->ping_gap);
  }
  assert_all_closed(f);
}

/* Turning the idle timeout off keeps a silent connection. */
static void test_idle_off(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  gl_conn_set_idle(c, IDLE);
  gl_conn_set_idle(c, 0);
  assert_false(ev_is_active(&c->timer));
  run_for(f->loop, 2 * IDLE);
  assert_int_equal(p->close_calls, 0);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_all_closed(f);
}

/* A reset from the peer closes with GL_CLOSE_PEER. */
static void test_peer_reset(void **state) {
  fixture *f = *state;
  open_conn(f, 0);
  probe *p = &f->probes[0];
  peer_reset(&f->peers[0]);
  wait_closed(f, p);
  assert_int_equal(p->reason, GL_CLOSE_PEER);
  assert_int_equal(p->err, ECONNRESET);
  assert_int_equal(f->stats.errors, 0);
  assert_int_equal(f->stats.closed, 1);
  assert_all_closed(f);
}

/* A write to a reset peer fails, and the connection is closed (and freed)
 * before gl_conn_write returns. */
static int ended(void *arg) {
  probe *p = arg;
  return p->eof_calls > 0 || p->close_calls > 0;
}

/* After a failed write, reading reports the end (EOF or a reset); the owner
 * then closes, as the binding does. */
static void wait_ended(fixture *f, probe *p) {
  if (!run_until(f->loop, ended, p, WAIT_S)) fail_msg("no end reported");
  if (p->c) gl_conn_close(p->c, GL_CLOSE_LOCAL, 0);
  assert_int_equal(p->close_calls, 1);
  assert_null(p->c);
}

static void test_write_to_reset_peer(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  gl_conn_read(c, 0);
  int fd = c->fd;
  peer_reset(&f->peers[0]);
  assert_true(wait_fd(fd, POLLIN, WAIT_MS) & (POLLIN | POLLERR | POLLHUP));
  int rc = gl_conn_write(c, "x", 1);
  assert_true(rc == -ECONNRESET || rc == -EPIPE);
  /* only the writing side ends: nothing closes until a read reports it */
  assert_int_equal(p->close_calls, 0);
  assert_true(c->flags & GL_CONN_WDEAD);
  assert_int_equal(gl_conn_write(c, "y", 1), rc);
  assert_int_equal(gl_conn_queued(c), 0);
  gl_conn_read(c, 1);
  wait_ended(f, p);
  assert_all_closed(f);
}

/* What the peer sent before it reset stays readable after a write to it
 * failed: its last words are not lost. */
static void test_last_words_survive_a_failed_write(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  gl_conn_read(c, 0);
  int fd = c->fd;
  write_all(f->peers[0].fd, "last words\n", 11);
  peer_reset(&f->peers[0]);
  assert_true(wait_fd(fd, POLLIN, WAIT_MS) & (POLLIN | POLLERR | POLLHUP));
  int rc = gl_conn_write(c, "x", 1);
  assert_true(rc == -ECONNRESET || rc == -EPIPE);
  p->keep = 0;
  gl_conn_read(c, 1);
  wait_ended(f, p);
  assert_int_equal(p->got_len, 11);
  assert_memory_equal(p->got, "last words\n", 11);
  assert_all_closed(f);
}

/* Pieces to a socket that is shut or whose peer reset: refused, nothing
 * queued. */
static void test_writev_refused(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  struct iovec iov[2] = {{"ab", 2}, {"c", 1}};
  assert_int_equal(gl_conn_shutdown(c), GL_OK);
  assert_int_equal(gl_conn_writev_some(c, iov, 2), -EPIPE);
  assert_int_equal(gl_conn_queued(c), 0);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);

  c = open_conn(f, 1);
  p = &f->probes[1];
  gl_conn_read(c, 0);
  int fd = c->fd;
  peer_reset(&f->peers[1]);
  assert_true(wait_fd(fd, POLLIN, WAIT_MS) & (POLLIN | POLLERR | POLLHUP));
  long r = gl_conn_writev_some(c, iov, 2);
  assert_true(r == -ECONNRESET || r == -EPIPE);
  assert_true(c->flags & GL_CONN_WDEAD);
  assert_int_equal(gl_conn_writev_some(c, iov, 2), r);
  assert_int_equal(gl_conn_queued(c), 0);
  gl_conn_read(c, 1);
  wait_ended(f, p);
  assert_all_closed(f);
}

/* stats: open connections, closes, bytes both ways. */
static void test_stats_add_up(void **state) {
  fixture *f = *state;
  char buf[100];
  gl_conn *c0 = open_conn(f, 0);
  gl_conn *c1 = open_conn(f, 1);
  gl_conn *c2 = open_conn(f, 2);
  assert_int_equal(f->stats.connections, 3);
  memset(buf, 'a', sizeof buf);
  f->probes[0].keep = 0;
  f->probes[1].keep = 0;
  write_all(f->peers[0].fd, buf, 100);
  write_all(f->peers[1].fd, buf, 10);
  wait_seen(f, &f->probes[0], 100);
  wait_seen(f, &f->probes[1], 10);
  assert_int_equal(gl_conn_write(c0, buf, 50), GL_OK);
  assert_int_equal(gl_conn_write(c1, buf, 20), GL_OK);
  assert_int_equal(f->stats.bytes_in, 110);
  assert_int_equal(f->stats.bytes_out, 70);
  peer_expect(&f->peers[0], buf, 50);
  peer_expect(&f->peers[1], buf, 20);

  gl_conn_close(c0, GL_CLOSE_LOCAL, 0);
  assert_int_equal(f->stats.connections, 2);
  peer_reset(&f->peers[1]);
  gl_conn_set_idle(c2, IDLE);
  wait_closed(f, &f->probes[1]);
  wait_closed(f, &f->probes[2]);
  assert_int_equal(f->probes[1].reason, GL_CLOSE_PEER);
  assert_int_equal(f->probes[2].reason, GL_CLOSE_TIMEOUT);
  assert_int_equal(f->stats.closed, 3);
  assert_int_equal(f->stats.connections, 0);
  assert_int_equal(f->stats.errors, 0);
  assert_int_equal(f->stats.bytes_in, 110);
  assert_int_equal(f->stats.bytes_out, 70);
  assert_int_equal(f->stats.accepted, 0); /* the listener's counter */
  assert_all_closed(f);
}

/* gl_env_close_all closes every connection, lingering ones included, and
 * runs on_close for each. */
static void test_close_all(void **state) {
  fixture *f = *state;
  char *src = pattern(BIG);
  for (int i = 0; i < 5; i++) open_conn(f, i);
  gl_conn *c0 = f->probes[0].c;
  shrink_buffers(c0, &f->peers[0]);
  assert_int_equal(gl_conn_write(c0, src, BIG), GL_OK);
  gl_conn_close(c0, GL_CLOSE_LOCAL, 2 * WAIT_S);
  assert_true(c0->flags & GL_CONN_CLOSING);
  assert_int_equal(f->stats.connections, 5);

  gl_env_close_all(&f->env);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(f->probes[i].close_calls, 1);
    assert_int_equal(f->probes[i].reason, GL_CLOSE_LOCAL);
    assert_int_equal(f->probes[i].write_in_close, -EPIPE);
    assert_null(f->probes[i].c);
  }
  assert_true(f->probes[0].close_queued > 0);
  assert_int_equal(f->stats.closed, 5);
  assert_all_closed(f);
  for (int i = 1; i < 5; i++) peer_expect_eof(&f->peers[i]);
  gl_env_close_all(&f->env); /* nothing left: harmless */
  free(src);
}

/* --- closing from inside callbacks --------------------------------------- */

/* Closing from inside on_data runs on_close at once, but c stays valid
 * until on_data returns; the unread input (in the scratch, or in storage of
 * its own) is dropped without leaking. */
static void test_close_inside_on_data(void **state) {
  fixture *f = *state;
  open_conn(f, 0);
  open_conn(f, 1);
  probe *p0 = &f->probes[0], *p1 = &f->probes[1];

  p0->close_in_data = 1; /* input still in the scratch */
  write_all(f->peers[0].fd, "abc", 3);
  wait_closed(f, p0);
  assert_int_equal(p0->close_calls, 1);
  assert_int_equal(p0->data_calls, 1);
  assert_true(p0->closed_inside);
  assert_true(p0->flags_after_close & GL_CONN_CLOSED);
  assert_int_equal(p0->write_after_close, -EPIPE);
  assert_int_equal(p0->write_in_close, -EPIPE);
  assert_int_equal(p0->reason, GL_CLOSE_LOCAL);
  peer_expect_eof(&f->peers[0]);

  p1->keep = KEEP_ALL; /* input kept in storage of its own */
  write_all(f->peers[1].fd, "abc", 3);
  wait_seen(f, p1, 3);
  assert_int_equal(p1->own_calls, 0);
  p1->close_in_data = 1;
  write_all(f->peers[1].fd, "def", 3);
  wait_closed(f, p1);
  assert_true(p1->own_calls >= 1);
  assert_true(p1->closed_inside);
  assert_true(p1->flags_after_close & GL_CONN_CLOSED);
  assert_int_equal(p1->write_after_close, -EPIPE);
  peer_expect_eof(&f->peers[1]);
  assert_int_equal(f->stats.closed, 2);
  assert_all_closed(f);
}

/* gl_env_close_all from inside one connection's on_data closes the others
 * at once and this one after its callback. */
static void test_close_all_inside_on_data(void **state) {
  fixture *f = *state;
  for (int i = 0; i < 4; i++) open_conn(f, i);
  f->probes[2].close_all_in_data = 1;
  write_all(f->peers[2].fd, "go", 2);
  wait_closed(f, &f->probes[2]);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(f->probes[i].close_calls, 1);
    assert_int_equal(f->probes[i].reason, GL_CLOSE_LOCAL);
    assert_int_equal(f->probes[i].closed_inside, i == 2);
    peer_expect_eof(&f->peers[i]);
  }
  assert_true(f->probes[2].flags_after_close & GL_CONN_CLOSED);
  assert_int_equal(f->stats.closed, 4);
  assert_all_closed(f);
}

/* Closing from inside on_drain. */
static void test_close_inside_on_drain(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  char *src = pattern(BIG);
  shrink_buffers(c, q);
  assert_int_equal(gl_conn_write(c, src, BIG), GL_OK);
  p->close_in_drain = 1;
  ev_io_start(f->loop, &q->io);
  wait_closed(f, p);
  assert_int_equal(p->drain_calls, 1);
  assert_true(p->closed_inside);
  assert_true(p->flags_after_close & GL_CONN_CLOSED);
  assert_int_equal(p->write_after_close, -EPIPE);
  assert_int_equal(p->reason, GL_CLOSE_LOCAL);
  if (!run_until(f->loop, peer_done, q, WAIT_S)) fail_msg("no EOF");
  assert_int_equal(q->got, BIG);
  assert_false(q->bad);
  assert_all_closed(f);
  free(src);
}

/* --- outbound ------------------------------------------------------------ */

/* A connecting connection queues writes, reports the connect through
 * on_drain, then reads and writes. */
static void test_connect(void **state) {
  fixture *f = *state;
  char err[GL_ERRLEN];
  probe *p = &f->probes[0];
  int port;
  int l = listen_loopback(&port);
  int fd = gl_sock_connect("127.0.0.1", port, err, sizeof err);
  assert_true(fd >= 0);
  memset(p, 0, sizeof *p);
  p->f = f;
  p->keep = 0;
  gl_conn *c = gl_conn_new(&f->env, fd, 1, &probe_cbs, p);
  assert_non_null(c);
  p->c = c;
  assert_true(c->flags & GL_CONN_CONNECTING);
  gl_conn_read(c, 1);
  assert_false(ev_is_active(&c->rio)); /* not while connecting */
  assert_int_equal(gl_conn_write(c, "hi", 2), GL_OK);
  assert_int_equal(gl_conn_queued(c), 2);

  if (!run_until(f->loop, drained, p, WAIT_S)) fail_msg("no connect");
  assert_false(c->flags & GL_CONN_CONNECTING);
  assert_int_equal(c->err, 0);
  assert_true(ev_is_active(&c->rio));
  /* What was queued while connecting goes out on the next writability. */
  assert_true(run_until(f->loop, queue_empty, c, WAIT_S));
  assert_false(ev_is_active(&c->wio));
  assert_int_equal(f->stats.bytes_out, 2);
  assert_true(wait_fd(l, POLLIN, WAIT_MS) & POLLIN);
  f->peers[0].fd = accept(l, NULL, NULL);
  assert_true(f->peers[0].fd >= 0);
  close(l);
  peer_expect(&f->peers[0], "hi", 2);
  write_all(f->peers[0].fd, "yo", 2);
  wait_seen(f, p, 2);
  assert_memory_equal(p->got, "yo", 2);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  peer_expect_eof(&f->peers[0]);
  assert_all_closed(f);
}

/* A refused connect closes with GL_CLOSE_ERROR and ECONNREFUSED, and is
 * left for its owner to count (it may try another address). */
static void test_connect_refused(void **state) {
  fixture *f = *state;
  char err[GL_ERRLEN] = "";
  probe *p = &f->probes[0];
  int port;
  close(listen_loopback(&port));
  int fd = gl_sock_connect("127.0.0.1", port, err, sizeof err);
  if (fd < 0) { /* refused before connect(2) returned */
    assert_string_equal(err, strerror(ECONNREFUSED));
    return;
  }
  memset(p, 0, sizeof *p);
  p->f = f;
  p->c = gl_conn_new(&f->env, fd, 1, &probe_cbs, p);
  assert_non_null(p->c);
  assert_int_equal(gl_conn_write(p->c, "hi", 2), GL_OK);
  wait_closed(f, p);
  assert_int_equal(p->reason, GL_CLOSE_ERROR);
  assert_int_equal(p->err, ECONNREFUSED);
  assert_int_equal(p->close_queued, 2);
  assert_int_equal(f->stats.errors, 0);
  assert_int_equal(f->stats.closed, 1);
  assert_all_closed(f);
}

/* --- files ------------------------------------------------------------- */

/* A file of n bytes of the pattern (byte i is pat(i)), already unlinked:
 * only the descriptor names it. */
static int pattern_file(size_t n) {
  char path[] = "/tmp/glisten-test-conn-XXXXXX";
  char *src = pattern(GL_READ_CHUNK + 251);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(unlink(path), 0);
  for (size_t done = 0; done < n;) {
    size_t k = n - done < GL_READ_CHUNK ? n - done : GL_READ_CHUNK;
    write_all(fd, src + done % 251, k);
    done += k;
  }
  free(src);
  return fd;
}

static int drains_reach(void *arg) {
  probe *p = arg;
  return p->drain_calls >= p->drain_want || p->close_calls;
}

/* Runs the loop until on_drain comes after the drain_calls-th one
 * (bounded). */
static void wait_drain(fixture *f, probe *p) {
  p->drain_want = p->drain_calls + 1;
  if (!run_until(f->loop, drains_reach, p, 2 * WAIT_S))
    fail_msg("no on_drain after %d", p->drain_calls);
  assert_int_equal(p->close_calls, 0);
}

/* Sends the file from *off until `end` or its end, as a writer does: steps
 * while they take bytes, and waits for on_drain after one that takes none.
 * Every step keeps to the contract: at most `most` bytes (0: any), and
 * never a failure. Returns the last result (GL_FILE_END, or the last
 * count); *zeros counts the steps that took nothing. */
static long sendfile_all(fixture *f, probe *p, gl_conn *c, int fd, off_t *off,
                         off_t end, size_t most, int *zeros) {
  long r = 0;
  while (*off < end) {
    off_t was = *off;
    int ferr = -1;
    r = gl_conn_sendfile(c, fd, off, (size_t)(end - *off), &ferr);
    if (r == GL_FILE_END) {
      assert_int_equal(*off, was);
      return r;
    }
    if (r < 0) fail_msg("gl_conn_sendfile: %ld (file: %d)", r, ferr);
    assert_int_equal(*off, was + r);
    if (most) assert_true((size_t)r <= most);
    if (r == 0) {
      ++*zeros;
      wait_drain(f, p);
    }
  }
  return r;
}

/* On a plain connection with nothing queued, the file goes from the page
 * cache to the socket: nothing is ever queued. A peer that does not read
 * fills the socket (found, not assumed: the steps stop taking before the
 * end); a step then takes nothing and the connection waits for
 * writability; as the peer reads slowly, on_drain says when to go on, and
 * every byte arrives once, in order, counted in bytes_out. */
static void test_sendfile_zero_copy(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  size_t size = 2 * BIG;
  int fd = pattern_file(size), ferr = 0, zeros = 0;
  off_t off = 0;
  long r;
  shrink_buffers(c, q);
  c->last_active = ev_now(f->loop) - 100;

  while ((r = gl_conn_sendfile(c, fd, &off, size - (size_t)off, &ferr)) > 0) {
    assert_int_equal(gl_conn_queued(c), 0);
    assert_null(c->out.data);
    assert_true(c->last_active >= ev_now(f->loop));
  }
  assert_int_equal(r, 0); /* the socket is full: nothing taken */
  assert_true(off > 0 && (size_t)off < size);
  assert_int_equal(f->stats.bytes_out, (size_t)off);
  assert_int_equal(gl_conn_queued(c), 0);
  assert_true(c->flags & GL_CONN_WANT_DRAIN);
  assert_true(ev_is_active(&c->wio)); /* waits for writability */
  assert_int_equal(p->drain_calls, 0);

  q->piece = 4096; /* a slow reader: the socket fills again and again */
  ev_io_start(f->loop, &q->io);
  wait_drain(f, p);
  r = sendfile_all(f, p, c, fd, &off, (off_t)size, 0, &zeros);
  assert_true(r > 0);
  assert_true(zeros > 0);
  assert_int_equal(off, size);
  assert_int_equal(f->stats.bytes_out, size);
  assert_int_equal(gl_conn_queued(c), 0);
  wait_peer_got(f, q, size);
  assert_int_equal(q->got, size);
  assert_false(q->bad);
  /* once sent, it waits for nothing */
  assert_false(c->flags & GL_CONN_WANT_DRAIN);
  assert_false(ev_is_active(&c->wio));
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  if (!run_until(f->loop, peer_done, q, WAIT_S)) fail_msg("peer: no EOF");
  assert_int_equal(q->got, size);
  assert_int_equal(p->close_calls, 1);
  assert_all_closed(f);
  close(fd);
}

/* Behind queued output, the file goes through the queue, one chunk of at
 * most GL_READ_CHUNK bytes at a time and no more than out_max leaves room
 * for, after the queued bytes: the peer gets the stream in order. */
static void test_sendfile_behind_queue(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  size_t size = BIG, first = 1 << 20;
  char *src = pattern(first);
  int fd = pattern_file(size), ferr = 0, zeros = 0;
  off_t off = (off_t)first;
  shrink_buffers(c, q);

  assert_int_equal(gl_conn_write(c, src, first), GL_OK);
  size_t queued = gl_conn_queued(c);
  unsigned long long out = f->stats.bytes_out;
  assert_true(queued > 0);
  long r = gl_conn_sendfile(c, fd, &off, size - first, &ferr);
  assert_int_equal(r, GL_READ_CHUNK);
  assert_int_equal(off, first + GL_READ_CHUNK);
  assert_int_equal(gl_conn_queued(c), queued + GL_READ_CHUNK);
  assert_int_equal(f->stats.bytes_out, out); /* all of it queued */

  /* a full queue takes nothing, and reads nothing */
  c->out_max = gl_conn_queued(c) + 100;
  r = gl_conn_sendfile(c, fd, &off, size - (size_t)off, &ferr);
  assert_int_equal(r, 100);
  r = gl_conn_sendfile(c, fd, &off, size - (size_t)off, &ferr);
  assert_int_equal(r, 0);
  assert_int_equal(off, first + GL_READ_CHUNK + 100);
  assert_int_equal(gl_conn_queued(c), c->out_max);

  c->out_max = 4 * GL_READ_CHUNK;
  ev_io_start(f->loop, &q->io);
  r = sendfile_all(f, p, c, fd, &off, (off_t)size, 0, &zeros);
  assert_true(r > 0);
  assert_int_equal(off, size);
  wait_peer_got(f, q, size);
  assert_int_equal(q->got, size);
  assert_false(q->bad);
  assert_int_equal(f->stats.bytes_out, size);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_all_closed(f);
  close(fd);
  free(src);
}

/* A transport other than plain (TLS, say) must see every byte: the file
 * goes through its write, one chunk at a time, never sendfile(2). */
static size_t counted; /* bytes the counting transport wrote */

static long counting_read(gl_conn *c, char *p, size_t n) {
  ssize_t r = read(c->fd, p, n);
  if (r >= 0) return (long)r;
  return errno == EAGAIN ? GL_WANT_READ : -errno;
}

static long counting_write(gl_conn *c, const char *p, size_t n) {
  ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
  if (r >= 0) {
    counted += (size_t)r;
    return (long)r;
  }
  return errno == EAGAIN ? GL_WANT_WRITE : -errno;
}

static int counting_handshake(gl_conn *c) {
  (void)c;
  return 1;
}

static const gl_transport counting = {"counting", counting_read,
                                      counting_write, counting_handshake,
                                      NULL, NULL, NULL, NULL};

static void test_sendfile_other_transport(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  size_t size = BIG;
  int fd = pattern_file(size), ferr = 0, zeros = 0;
  off_t off = 0;
  counted = 0;
  gl_conn_set_transport(c, &counting, NULL, 0);
  shrink_buffers(c, q);
  c->out_max = 2 * GL_READ_CHUNK;
  ev_io_start(f->loop, &q->io);
  long r = sendfile_all(f, p, c, fd, &off, (off_t)size, GL_READ_CHUNK, &zeros);
  assert_true(r > 0);
  assert_true(zeros > 0); /* the queue filled, and drained */
  assert_int_equal(off, size);
  /* past the end: the file ends, nothing is sent */
  assert_int_equal(gl_conn_sendfile(c, fd, &off, 1, &ferr), GL_FILE_END);
  assert_int_equal(off, size);
  wait_peer_got(f, q, size);
  assert_false(q->bad);
  assert_int_equal(counted, size);
  assert_int_equal(f->stats.bytes_out, size);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_all_closed(f);
  close(fd);
}

/* A file shorter than asked ends the send with GL_FILE_END, never a wait:
 * asking past its end, starting past its end, and a file cut short while
 * the send waits for a full socket. */
static void test_sendfile_file_ends(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  size_t size = BIG;
  int fd = pattern_file(size), ferr = 0, zeros = 0;
  off_t off = (off_t)size + 10;
  long r;
  assert_int_equal(gl_conn_sendfile(c, fd, &off, 100, &ferr), GL_FILE_END);
  assert_int_equal(off, size + 10);
  assert_int_equal(f->stats.bytes_out, 0);

  shrink_buffers(c, q);
  off = 0;
  while ((r = gl_conn_sendfile(c, fd, &off, size - (size_t)off, &ferr)) > 0) {
  }
  assert_int_equal(r, 0);
  assert_true(off > 0 && (size_t)off < size);
  size_t cut = (size_t)off + 100000;
  assert_true(cut < size);
  assert_int_equal(ftruncate(fd, (off_t)cut), 0);
  ev_io_start(f->loop, &q->io);
  r = sendfile_all(f, p, c, fd, &off, (off_t)(2 * size), 0, &zeros);
  assert_int_equal(r, GL_FILE_END);
  assert_int_equal(off, cut);
  wait_peer_got(f, q, cut);
  assert_int_equal(q->got, cut);
  assert_false(q->bad);
  assert_int_equal(f->stats.bytes_out, cut);
  assert_false(c->flags & GL_CONN_WANT_DRAIN);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  if (!run_until(f->loop, peer_done, q, WAIT_S)) fail_msg("peer: no EOF");
  assert_int_equal(q->got, cut);
  assert_all_closed(f);
  close(fd);
}

/* A file that cannot be read (a folder; a pipe, which has no offsets)
 * gives GL_FILE_ERROR with its errno, and leaves the connection as it was:
 * open, nothing queued, nothing sent. */
static void test_sendfile_file_error(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  int dir = open("/tmp", O_RDONLY | O_DIRECTORY), fds[2], ferr = 0;
  off_t off = 0;
  assert_true(dir >= 0);
  assert_int_equal(pipe(fds), 0);
  write_all(fds[1], "abc", 3);

  assert_int_equal(gl_conn_sendfile(c, dir, &off, 100, &ferr), GL_FILE_ERROR);
  assert_int_equal(ferr, EISDIR);
  ferr = 0;
  assert_int_equal(gl_conn_sendfile(c, fds[0], &off, 100, &ferr),
                   GL_FILE_ERROR);
  assert_int_equal(ferr, ESPIPE);
  assert_int_equal(off, 0);
  assert_int_equal(p->close_calls, 0);
  assert_false(c->flags & (GL_CONN_WDEAD | GL_CONN_WANT_DRAIN));
  assert_int_equal(gl_conn_queued(c), 0);
  assert_int_equal(f->stats.bytes_out, 0);
  assert_int_equal(gl_conn_write(c, "ok", 2), GL_OK);
  peer_expect(&f->peers[0], "ok", 2);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_all_closed(f);
  close(dir);
  close(fds[0]);
  close(fds[1]);
}

static volatile sig_atomic_t sigpipes;
static void count_sigpipe(int sig) {
  (void)sig;
  sigpipes++;
}

/* A peer that resets while a send waits for a full socket: the wait ends
 * (on_drain), and the next step fails as a write does (-EPIPE, only the
 * writing side ended), without SIGPIPE: sendfile(2) raises it where a
 * write with MSG_NOSIGNAL does not, and the library never may. The reset's
 * own error is taken first (SO_ERROR), as a read would, so the step meets
 * the EPIPE that raises the signal, not the ECONNRESET that does not. */
static void test_sendfile_peer_gone(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  size_t size = BIG;
  int fd = pattern_file(size), ferr = 0;
  off_t off = 0;
  long r;
  gl_conn_read(c, 0); /* only the writing side may learn of it */
  shrink_buffers(c, q);
  while ((r = gl_conn_sendfile(c, fd, &off, size - (size_t)off, &ferr)) > 0) {
  }
  assert_int_equal(r, 0);
  peer_reset(q);
  wait_drain(f, p);
  int e = 0;
  socklen_t len = sizeof e;
  assert_int_equal(getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len), 0);
  struct sigaction count = {.sa_handler = count_sigpipe}, was;
  sigemptyset(&count.sa_mask);
  sigpipes = 0;
  assert_int_equal(sigaction(SIGPIPE, &count, &was), 0);
  r = gl_conn_sendfile(c, fd, &off, size - (size_t)off, &ferr);
  assert_int_equal(sigaction(SIGPIPE, &was, NULL), 0);
  assert_int_equal(r, -EPIPE);
  assert_int_equal(sigpipes, 0);
  assert_int_equal(p->close_calls, 0);
  assert_true(c->flags & GL_CONN_WDEAD);
  assert_false(c->flags & GL_CONN_WANT_DRAIN);
  assert_int_equal(gl_conn_sendfile(c, fd, &off, 1, &ferr), r);
  gl_conn_read(c, 1);
  wait_ended(f, p);
  assert_all_closed(f);
  close(fd);
}

/* gl_conn_want_drain: one on_drain at the next writability, with nothing
 * queued, then no more waiting (no watcher left to spin on). */
static void test_want_drain(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  gl_conn_want_drain(c);
  assert_true(ev_is_active(&c->wio));
  wait_drain(f, p);
  assert_int_equal(p->drain_calls, 1);
  assert_false(c->flags & GL_CONN_WANT_DRAIN);
  assert_false(ev_is_active(&c->wio));
  run_for(f->loop, 0.02);
  assert_int_equal(p->drain_calls, 1);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_all_closed(f);
}

/* --- shutdown ------------------------------------------------------------ */

/* With nothing queued the writing side ends at once: the peer reads the
 * end, writes fail and take nothing, and reading goes on. */
static void test_shutdown_now(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  assert_int_equal(gl_conn_write(c, "hi", 2), GL_OK);
  assert_int_equal(gl_conn_shutdown(c), GL_OK);
  assert_false(c->flags & GL_CONN_SHUTPEND);
  assert_int_equal(gl_conn_write(c, "x", 1), -EPIPE);
  assert_int_equal(gl_conn_write_some(c, "x", 1), -EPIPE);
  assert_int_equal(gl_conn_queued(c), 0);
  assert_int_equal(gl_conn_shutdown(c), GL_OK); /* again: done already */
  peer_expect(q, "hi", 2);
  peer_expect_eof(q);
  assert_int_equal(write(q->fd, "abc", 3), 3);
  wait_seen(f, p, 3);
  assert_int_equal(p->close_calls, 0);
  assert_int_equal(f->stats.bytes_out, 2);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_int_equal(p->reason, GL_CLOSE_LOCAL);
  assert_all_closed(f);
}

/* With output queued the shutdown waits for it: the peer gets every byte,
 * then the end; the connection stays open and reading. */
static void test_shutdown_after_queue(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  char *src = pattern(BIG);
  shrink_buffers(c, q);
  assert_int_equal(gl_conn_write(c, src, BIG), GL_OK);
  assert_true(gl_conn_queued(c) > 0);
  assert_int_equal(gl_conn_shutdown(c), GL_OK);
  assert_true(c->flags & GL_CONN_SHUTPEND);
  assert_int_equal(gl_conn_write(c, "x", 1), -EPIPE);

  ev_io_start(f->loop, &q->io);
  if (!run_until(f->loop, peer_done, q, 2 * WAIT_S)) fail_msg("no EOF");
  assert_true(q->eof);
  assert_int_equal(q->got, BIG);
  assert_false(q->bad);
  assert_false(c->flags & GL_CONN_SHUTPEND);
  assert_int_equal(p->close_calls, 0);
  assert_int_equal(write(q->fd, "abc", 3), 3);
  wait_seen(f, p, 3);
  assert_int_equal(p->close_calls, 0);
  gl_conn_close(c, GL_CLOSE_LOCAL, 0);
  assert_all_closed(f);
  free(src);
}

/* A shutdown waiting behind output a peer never reads does not hold off
 * a lingering close: the close comes at its deadline. */
static void test_shutdown_then_linger_deadline(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  char *src = pattern(BIG);
  shrink_buffers(c, q);
  assert_int_equal(gl_conn_write(c, src, BIG), GL_OK);
  assert_int_equal(gl_conn_shutdown(c), GL_OK);
  gl_conn_close(c, GL_CLOSE_LOCAL, IDLE);
  assert_int_equal(p->close_calls, 0);
  wait_closed(f, p);
  assert_int_equal(p->reason, GL_CLOSE_LOCAL);
  assert_true(p->close_queued > 0);
  assert_all_closed(f);
  free(src);
}

/* A closing connection and one whose peer reset refuse it. */
static void test_shutdown_refused(void **state) {
  fixture *f = *state;
  gl_conn *c = open_conn(f, 0);
  probe *p = &f->probes[0];
  peer *q = &f->peers[0];
  char *src = pattern(BIG);
  shrink_buffers(c, q);
  assert_int_equal(gl_conn_write(c, src, BIG), GL_OK);
  gl_conn_close(c, GL_CLOSE_LOCAL, 3600); /* flushing */
  assert_int_equal(gl_conn_shutdown(c), -EPIPE);
  gl_env_close_all(&f->env);
  assert_int_equal(p->close_calls, 1);

  c = open_conn(f, 1);
  p = &f->probes[1];
  q = &f->peers[1];
  peer_reset(q);
  for (int i = 0; i < 100 && !(c->flags & GL_CONN_WDEAD); i++)
    gl_conn_write(c, "x", 1); /* until a write meets the reset */
  assert_true(c->flags & GL_CONN_WDEAD);
  int e = gl_conn_shutdown(c);
  assert_true(e == -ECONNRESET || e == -EPIPE);
  gl_env_close_all(&f->env);
  assert_int_equal(p->close_calls, 1);
  assert_all_closed(f);
  free(src);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_data_scratch_and_kept),
      T(test_in_max_pauses_reading),
      T(test_eof),
      T(test_write_direct),
      T(test_write_queues_and_refuses),
      T(test_write_some_takes_what_fits),
      T(test_writev_direct),
      T(test_writev_takes_what_fits),
      T(test_writev_refused),
      T(test_drain_at_low_water),
      T(test_linger_flushes),
      T(test_linger_deadline),
      T(test_idle_timeout),
      T(test_idle_postponed_by_activity),
      T(test_idle_off),
      T(test_peer_reset),
      T(test_write_to_reset_peer),
      T(test_last_words_survive_a_failed_write),
      T(test_stats_add_up),
      T(test_close_all),
      T(test_close_inside_on_data),
      T(test_close_all_inside_on_data),
      T(test_close_inside_on_drain),
      T(test_connect),
      T(test_connect_refused),
      T(test_sendfile_zero_copy),
      T(test_sendfile_behind_queue),
      T(test_sendfile_other_transport),
      T(test_sendfile_file_ends),
      T(test_sendfile_file_error),
      T(test_sendfile_peer_gone),
      T(test_want_drain),
      T(test_shutdown_now),
      T(test_shutdown_after_queue),
      T(test_shutdown_then_linger_deadline),
      T(test_shutdown_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
