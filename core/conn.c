#include "conn.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/sendfile.h>
#endif

#include "gl.h"

static void destroy(gl_conn *c) {
  if (c->tp->free) c->tp->free(c);
  gl_buf_free(&c->in);
  gl_buf_free(&c->out);
  free(c);
}

/* --- the plain transport ------------------------------------------------ */

static long plain_read(gl_conn *c, char *p, size_t n) {
  ssize_t r = read(c->fd, p, n);
  if (r >= 0) return (long)r;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return GL_WANT_READ;
  return -errno;
}

static long plain_write(gl_conn *c, const char *p, size_t n) {
  ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
  if (r >= 0) return (long)r;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return GL_WANT_WRITE;
  return -errno;
}

static int plain_handshake(gl_conn *c) {
  (void)c;
  return 1;
}

const gl_transport gl_plain = {"plain", plain_read, plain_write,
                               plain_handshake, NULL, NULL, NULL, NULL};

/* Every read and write goes through these: the plain transport, by far the
 * most common, is called directly (no indirect call on the hot path). */
static inline long tp_read(gl_conn *c, char *p, size_t n) {
  return c->tp == &gl_plain ? plain_read(c, p, n) : c->tp->read(c, p, n);
}

static inline long tp_write(gl_conn *c, const char *p, size_t n) {
  return c->tp == &gl_plain ? plain_write(c, p, n) : c->tp->write(c, p, n);
}

/* --- closing ------------------------------------------------------------- */

static void close_now(gl_conn *c, int reason, int err) {
  struct ev_loop *loop = c->env->loop;
  if (c->flags & GL_CONN_CLOSED) return;
  ev_io_stop(loop, &c->rio);
  ev_io_stop(loop, &c->wio);
  ev_timer_stop(loop, &c->timer);
  if (c->tp->close)
    c->tp->close(c, reason == GL_CLOSE_LOCAL && !c->out.len &&
                        !(c->flags & (GL_CONN_WDEAD | GL_CONN_HANDSHAKE |
                                      GL_CONN_CONNECTING)));
  close(c->fd);
  c->fd = -1;
  if (c->prev)
    c->prev->next = c->next;
  else
    c->env->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  if (!c->reason) c->reason = reason;
  if (!c->err) c->err = err;
  if (c->env->stats) {
    GL_STAT_ADD(c->env->stats->connections, -1);
    GL_STAT_ADD(c->env->stats->closed, 1);
    if (c->reason == GL_CLOSE_ERROR &&
        !(c->flags & (GL_CONN_CONNECTING | GL_CONN_HANDSHAKE)))
      GL_STAT_ADD(c->env->stats->errors, 1);
  }
  c->flags = (c->flags | GL_CONN_CLOSED) &
             ~(GL_CONN_CLOSING | GL_CONN_CONNECTING | GL_CONN_HANDSHAKE);
  c->busy++;
  c->cbs->on_close(c);
  c->busy--;
  if (!c->busy) destroy(c);
}

/* A failed read or write: a reset peer is a peer that went away. */
static void fail(gl_conn *c, int e) {
  int peer = e == ECONNRESET || e == EPIPE;
  close_now(c, peer ? GL_CLOSE_PEER : GL_CLOSE_ERROR, e);
}

/* A failed write. Returns whether c is still open: a peer that is gone only
 * ends the writing side (see conn.h); any other failure closes. */
static int write_failed(gl_conn *c, int e) {
  if (e != EPIPE && e != ECONNRESET) {
    fail(c, e);
    return 0;
  }
  c->flags = (c->flags | GL_CONN_WDEAD) & ~GL_CONN_WANT_DRAIN;
  c->err = e;
  c->wwait = 0;
  gl_buf_free(&c->out);
  gl_conn_update(c);
  if (c->flags & GL_CONN_CLOSING) { /* nothing left to flush */
    close_now(c, c->reason, 0);
    return 0;
  }
  return 1;
}

/* Whether the owner's reading may go on. */
static int reading(const gl_conn *c) {
  return (c->flags & GL_CONN_READING) &&
         !(c->flags & (GL_CONN_EOF | GL_CONN_CLOSING | GL_CONN_CLOSED |
                       GL_CONN_CONNECTING | GL_CONN_HANDSHAKE)) &&
         c->in.len < c->in_max;
}

static void set_watcher(struct ev_loop *loop, ev_io *w, int on) {
  if (on && !ev_is_active(w))
    ev_io_start(loop, w);
  else if (!on && ev_is_active(w))
    ev_io_stop(loop, w);
}

/* The one place that decides which readiness c waits for. */
void gl_conn_update(gl_conn *c) {
  struct ev_loop *loop = c->env->loop;
  int rd = 0, wr = 0;
  if (c->flags & GL_CONN_CLOSED) return;
  if (c->flags & GL_CONN_CONNECTING) {
    wr = 1;
  } else if (c->flags & GL_CONN_HANDSHAKE) {
    rd = c->hswant == GL_WANT_READ;
    wr = !rd;
  } else {
    if (reading(c)) *(c->rwait ? &wr : &rd) = 1;
    if (c->out.len || (c->flags & GL_CONN_SHUTPEND))
      *(c->wwait ? &rd : &wr) = 1;
    else if (c->flags & GL_CONN_WANT_DRAIN)
      wr = 1;
  }
  set_watcher(loop, &c->wio, wr);
  set_watcher(loop, &c->rio, rd);
  /* bytes the transport holds make the descriptor no readier: say so */
  if (rd && c->tp->pending && !c->rwait && reading(c) && c->tp->pending(c))
    ev_feed_event(loop, &c->rio, EV_READ);
}

/* gl_conn_update, with the hot case inline: a plain connection that has
 * nothing queued, waits for no writability, and at most wants to read. */
static inline void update(gl_conn *c) {
  if (c->tp == &gl_plain && !c->out.len &&
      !(c->flags & (GL_CONN_CLOSED | GL_CONN_CONNECTING | GL_CONN_HANDSHAKE |
                    GL_CONN_WANT_DRAIN | GL_CONN_SHUTPEND))) {
    int in = reading(c);
    if (in != ev_is_active(&c->rio)) set_watcher(c->env->loop, &c->rio, in);
    if (ev_is_active(&c->wio)) ev_io_stop(c->env->loop, &c->wio);
    return;
  }
  gl_conn_update(c);
}

/* Runs one of the owner's callbacks with c held: a close inside it only
 * marks c, and the caller frees it after (see conn.h). */
#define CALL(c, cb)                                          \
  do {                                                       \
    (c)->busy++;                                             \
    (c)->cbs->cb(c);                                         \
    (c)->busy--;                                             \
  } while (0)

/* Advances the handshake; its end is reported as on_drain. */
static void shake(gl_conn *c) {
  int r;
  c->busy++; /* a hook inside the handshake may close c */
  r = c->tp->handshake(c);
  c->busy--;
  if (c->flags & GL_CONN_CLOSED) {
    if (!c->busy) destroy(c);
    return;
  }
  if (r == GL_WANT_READ || r == GL_WANT_WRITE) {
    c->hswant = r;
    gl_conn_update(c);
    return;
  }
  if (r < 0) {
    close_now(c, GL_CLOSE_ERROR, -r);
    return;
  }
  c->flags &= ~GL_CONN_HANDSHAKE;
  c->last_active = ev_now(c->env->loop);
  gl_conn_update(c);
  CALL(c, on_drain);
  if (c->flags & GL_CONN_CLOSED) {
    if (!c->busy) destroy(c);
    return;
  }
  gl_conn_update(c);
}

static void do_read(gl_conn *c);
static void flush_out(gl_conn *c);

static void on_read(EV_P_ ev_io *w, int revents) {
  gl_conn *c = w->data;
  (void)loop;
  (void)revents;
  if (c->flags & GL_CONN_HANDSHAKE) {
    shake(c);
  } else if (c->wwait) { /* the queued output waited for this */
    c->wwait = 0;
    flush_out(c); /* the read, if any, on the next turn: level-triggered */
  } else if (reading(c)) {
    do_read(c);
  } else {
    gl_conn_update(c);
  }
}

/* One read for the owner, into the scratch buffer or c's own. */
static void do_read(gl_conn *c) {
  gl_buf own = c->in;
  int borrowed = 0;
  size_t room;
  long n;
  if (c->in.len == 0 && c->env->scratch) {
    c->in.data = c->env->scratch;
    c->in.off = 0;
    c->in.cap = GL_READ_CHUNK;
    borrowed = 1;
    room = c->in_max < GL_READ_CHUNK ? c->in_max : GL_READ_CHUNK;
  } else {
    room = c->in_max > c->in.len ? c->in_max - c->in.len : 1;
    if (room > GL_READ_CHUNK) room = GL_READ_CHUNK;
    if (gl_buf_reserve(&c->in, room) != GL_OK) {
      close_now(c, GL_CLOSE_ERROR, ENOMEM);
      return;
    }
  }
  c->rwait = 0;
  n = tp_read(c, gl_buf_tail(&c->in), room);
  if (n == GL_WANT_READ || n == GL_WANT_WRITE) {
    if (borrowed) c->in = own;
    c->rwait = n == GL_WANT_WRITE;
    gl_conn_update(c);
    return;
  }
  if (n < 0) {
    if (borrowed) c->in = own;
    fail(c, (int)-n);
    return;
  }
  if (n == 0) {
    c->flags |= GL_CONN_EOF;
  } else {
    c->in.len += (size_t)n;
    c->last_active = ev_now(c->env->loop);
    if (c->env->stats) GL_STAT_ADD(c->env->stats->bytes_in, (size_t)n);
  }
  CALL(c, on_data);
  if (borrowed) {
    /* Keep what the owner left unread in storage of the connection's own. */
    gl_buf left = c->in;
    c->in = own;
    if (left.len && !(c->flags & GL_CONN_CLOSED) &&
        gl_buf_append(&c->in, gl_buf_head(&left), left.len) != GL_OK) {
      close_now(c, GL_CLOSE_ERROR, ENOMEM);
      return;
    }
  }
  if (c->flags & GL_CONN_CLOSED) {
    if (!c->busy) destroy(c);
    return;
  }
  update(c);
}


static void on_write(EV_P_ ev_io *w, int revents) {
  gl_conn *c = w->data;
  (void)revents;
  if (c->flags & GL_CONN_CONNECTING) {
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0) e = errno;
    if (e) { /* still CONNECTING: not counted in stats->errors */
      close_now(c, GL_CLOSE_ERROR, e);
      return;
    }
    c->flags &= ~GL_CONN_CONNECTING;
    c->last_active = ev_now(EV_A);
    gl_conn_update(c);
    CALL(c, on_drain);
    if ((c->flags & GL_CONN_CLOSED) && !c->busy) destroy(c);
    return;
  }
  if (c->flags & GL_CONN_HANDSHAKE) {
    shake(c);
  } else if (c->rwait) { /* the last read waited for this */
    if (reading(c))
      do_read(c); /* the write, if any, on the next turn */
    else {
      c->rwait = 0;
      gl_conn_update(c);
    }
  } else {
    flush_out(c);
  }
}

/* Ends the writing side now that nothing is queued (gl_conn_shutdown):
 * the transport's goodbye, then shutdown(2). Returns whether c is still
 * open; a goodbye that must wait leaves GL_CONN_SHUTPEND set and waits. */
static int shut_now(gl_conn *c) {
  int r = c->tp->shutdown ? c->tp->shutdown(c) : 1;
  if (r == GL_WANT_READ || r == GL_WANT_WRITE) {
    c->wwait = r == GL_WANT_READ;
    gl_conn_update(c);
    return 1;
  }
  c->flags &= ~GL_CONN_SHUTPEND;
  /* ENOTCONN: the peer reset meanwhile, which the next read reports */
  if (r >= 0 && shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
    r = -errno;
  gl_conn_update(c);
  return r >= 0 ? 1 : write_failed(c, -r);
}

/* Writes what is queued, as much as the transport takes; with nothing
 * queued, only tells a writer waiting for writability (GL_CONN_WANT_DRAIN)
 * that it has come. */
static void flush_out(gl_conn *c) {
  c->flags &= ~GL_CONN_WANT_DRAIN;
  if (c->out.len) {
    long n = tp_write(c, gl_buf_head(&c->out), c->out.len);
    if (n == GL_WANT_READ || n == GL_WANT_WRITE) {
      c->wwait = n == GL_WANT_READ;
      gl_conn_update(c);
      return;
    }
    if (n < 0) {
      if (write_failed(c, (int)-n)) {
        CALL(c, on_drain); /* waiting writers learn the peer is gone */
        if ((c->flags & GL_CONN_CLOSED) && !c->busy) destroy(c);
      }
      return;
    }
    gl_buf_consume(&c->out, (size_t)n);
    c->last_active = ev_now(c->env->loop);
    if (c->env->stats) GL_STAT_ADD(c->env->stats->bytes_out, (size_t)n);
  }
  if (c->out.len == 0) {
    gl_buf_free(&c->out); /* an idle connection owns no output memory */
    if (c->flags & GL_CONN_CLOSING) {
      close_now(c, c->reason, 0);
      return;
    }
    if ((c->flags & GL_CONN_SHUTPEND) && !shut_now(c)) return;
  }
  gl_conn_update(c);
  if (c->out.len <= c->low_water) {
    CALL(c, on_drain);
    if ((c->flags & GL_CONN_CLOSED) && !c->busy) destroy(c);
  }
}

static void on_timer(EV_P_ ev_timer *w, int revents) {
  gl_conn *c = w->data;
  (void)revents;
  if (c->flags & GL_CONN_CLOSING) {
    close_now(c, c->reason, 0); /* linger deadline */
    return;
  }
  ev_tstamp left = c->last_active + c->idle_timeout - ev_now(EV_A);
  if (left > 0) {
    w->repeat = left;
    ev_timer_again(EV_A_ w);
    return;
  }
  close_now(c, GL_CLOSE_TIMEOUT, 0);
}

gl_conn *gl_conn_new(gl_env *env, int fd, int connecting,
                     const gl_conn_cbs *cbs, void *data) {
  gl_conn *c = calloc(1, sizeof *c);
  if (!c) {
    close(fd);
    return NULL;
  }
  c->env = env;
  c->cbs = cbs;
  c->data = data;
  c->fd = fd;
  c->in_max = GL_READ_CHUNK;
  c->out_max = (size_t)-1;
  c->linger = 5.0;
  c->last_active = ev_now(env->loop);
  c->tp = &gl_plain;
  ev_io_init(&c->rio, on_read, fd, EV_READ);
  c->rio.data = c;
  ev_io_init(&c->wio, on_write, fd, EV_WRITE);
  c->wio.data = c;
  ev_init(&c->timer, on_timer);
  c->timer.data = c;
  if (env->stats) GL_STAT_ADD(env->stats->connections, 1);
  c->next = env->conns;
  if (c->next) c->next->prev = c;
  env->conns = c;
  if (connecting) {
    c->flags |= GL_CONN_CONNECTING;
    ev_io_start(env->loop, &c->wio);
  }
  return c;
}

void gl_conn_set_transport(gl_conn *c, const gl_transport *tp, void *tpd,
                           int handshake) {
  if (c->tp->free) c->tp->free(c);
  c->tp = tp;
  c->tpd = tpd;
  c->rwait = c->wwait = 0;
  if (handshake) {
    c->flags |= GL_CONN_HANDSHAKE;
    c->hswant = handshake;
  }
  gl_conn_update(c);
}

void gl_conn_read(gl_conn *c, int on) {
  if (on)
    c->flags |= GL_CONN_READING;
  else
    c->flags &= ~GL_CONN_READING;
  gl_conn_update(c);
}

void gl_conn_consume(gl_conn *c, size_t n) {
  gl_buf_consume(&c->in, n);
  if (c->in.len == 0 && c->in.data && c->in.data != c->env->scratch)
    gl_buf_free(&c->in);
  update(c);
}

/* The first step of a write: writes directly what the kernel takes when
 * nothing is queued. Returns the bytes written, or -errno when c cannot
 * take any (a failed socket is closed, see write_failed). */
static long write_direct(gl_conn *c, const char *p, size_t n) {
  long w;
  if (c->flags & (GL_CONN_CLOSED | GL_CONN_CLOSING | GL_CONN_WDEAD |
                  GL_CONN_WSHUT))
    return (c->flags & GL_CONN_WDEAD) ? -c->err : -EPIPE;
  if (c->out.len || (c->flags & (GL_CONN_CONNECTING | GL_CONN_HANDSHAKE)) ||
      !n)
    return 0;
  w = tp_write(c, p, n);
  if (w == GL_WANT_READ || w == GL_WANT_WRITE) {
    /* the caller queues the bytes: the retry writes them first */
    c->wwait = w == GL_WANT_READ;
    return 0;
  }
  if (w < 0) {
    write_failed(c, (int)-w);
    return w;
  }
  c->last_active = ev_now(c->env->loop);
  if (c->env->stats) GL_STAT_ADD(c->env->stats->bytes_out, (size_t)w);
  return (long)w;
}

int gl_conn_write(gl_conn *c, const char *p, size_t n) {
  long w = write_direct(c, p, n);
  if (w < 0) return (int)w;
  p += w;
  n -= (size_t)w;
  if (n == 0) return GL_OK;
  if (n > c->out_max || c->out.len > c->out_max - n) return -ENOBUFS;
  if (gl_buf_append(&c->out, p, n) != GL_OK) return -ENOBUFS;
  gl_conn_update(c);
  return GL_OK;
}

long gl_conn_write_some(gl_conn *c, const char *p, size_t n) {
  long w = write_direct(c, p, n);
  size_t rest, room;
  if (w == (long)n) return w; /* all written: the common case */
  if (w < 0) return w;
  rest = n - (size_t)w;
  room = c->out_max > c->out.len ? c->out_max - c->out.len : 0;
  if (rest > room) rest = room;
  if (rest) {
    if (gl_buf_append(&c->out, p + w, rest) != GL_OK)
      return w ? w : -ENOMEM;
    gl_conn_update(c);
  }
  return w + (long)rest;
}

/* The first step of a vectored write on the plain transport, as
 * write_direct. */
static long writev_direct(gl_conn *c, const struct iovec *iov, int n) {
  struct msghdr m;
  ssize_t w;
  if (c->flags & (GL_CONN_CLOSED | GL_CONN_CLOSING | GL_CONN_WDEAD |
                  GL_CONN_WSHUT))
    return (c->flags & GL_CONN_WDEAD) ? -c->err : -EPIPE;
  if (c->out.len || (c->flags & (GL_CONN_CONNECTING | GL_CONN_HANDSHAKE)))
    return 0;
  memset(&m, 0, sizeof m);
  m.msg_iov = (struct iovec *)iov;
  m.msg_iovlen = (size_t)n;
  w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
  if (w < 0) {
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR) return 0;
    write_failed(c, e);
    return -e;
  }
  c->last_active = ev_now(c->env->loop);
  if (c->env->stats) GL_STAT_ADD(c->env->stats->bytes_out, (size_t)w);
  return (long)w;
}

long gl_conn_writev_some(gl_conn *c, const struct iovec *iov, int n) {
  long taken = 0, w;
  int i = 0;
  size_t skip = 0; /* of iov[i], already taken */
  if (c->tp == &gl_plain && n > 1) {
    w = writev_direct(c, iov, n);
    if (w < 0) return w;
    taken = w;
    while (i < n && (size_t)w >= iov[i].iov_len) w -= (long)iov[i++].iov_len;
    skip = (size_t)w;
  }
  /* the rest, piece by piece: written when nothing is queued, else
   * queued, until the queue is full */
  for (; i < n; i++, skip = 0) {
    size_t len = iov[i].iov_len - skip;
    if (!len) continue;
    w = gl_conn_write_some(c, (const char *)iov[i].iov_base + skip, len);
    if (w < 0) return taken ? taken : w;
    taken += w;
    if ((size_t)w < len) break;
  }
  return taken;
}

/* --- files ---------------------------------------------------------------- */

/* One chunk of the file through the write path: read with pread (which
 * neither needs nor moves the file's offset), then gl_conn_write_some. Reads
 * no more than the queue has room for, so every byte read is taken (unless
 * memory runs out), and at most GL_READ_CHUNK, the most of a file held in
 * user space at once besides the queue. */
static long file_chunk(gl_conn *c, int fd, off_t *off, size_t n, int *ferr) {
  size_t room = c->out_max > c->out.len ? c->out_max - c->out.len : 0;
  char *chunk;
  ssize_t r;
  long w;
  if (n > room) n = room;
  if (n > GL_READ_CHUNK) n = GL_READ_CHUNK;
  if (!n) return 0; /* the queue is full: on_drain follows as it drains */
  chunk = malloc(n);
  if (!chunk) return -ENOMEM;
  do {
    r = pread(fd, chunk, n, *off);
  } while (r < 0 && errno == EINTR);
  if (r <= 0) {
    *ferr = r < 0 ? errno : 0;
    free(chunk);
    return r < 0 ? GL_FILE_ERROR : GL_FILE_END;
  }
  w = gl_conn_write_some(c, chunk, (size_t)r);
  free(chunk);
  if (w > 0) *off += w;
  return w;
}

#ifdef __linux__
/* sendfile(2) takes no MSG_NOSIGNAL: to a peer that is gone it raises
 * SIGPIPE, which a program that embeds the library need not ignore (the
 * library never raises it). It raises it even when it returns a count: the
 * bytes moved before it met the closed socket. So it runs with SIGPIPE
 * blocked for the thread, and after a call that moved fewer bytes than
 * asked, a SIGPIPE it raised is taken before the mask is put back; one
 * already pending (only possible where the thread blocked it itself) is
 * left alone. */
static ssize_t quiet_sendfile(int out, int in, off_t *off, size_t n) {
  sigset_t pipe, old, pending;
  ssize_t r;
  int e, had = 0;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, &old);
  if (sigismember(&old, SIGPIPE) && sigpending(&pending) == 0)
    had = sigismember(&pending, SIGPIPE);
  r = sendfile(out, in, off, n);
  e = errno;
  if (r != (ssize_t)n && !had) {
    struct timespec now = {0, 0};
    while (sigtimedwait(&pipe, NULL, &now) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = e;
  return r;
}
#endif

long gl_conn_sendfile(gl_conn *c, int fd, off_t *off, size_t n, int *ferr) {
  if (!n) return 0;
  if (c->flags & (GL_CONN_CLOSED | GL_CONN_CLOSING | GL_CONN_WDEAD |
                  GL_CONN_WSHUT))
    return (c->flags & GL_CONN_WDEAD) ? -c->err : -EPIPE;
#ifdef __linux__
  if (c->tp == &gl_plain && !c->out.len &&
      !(c->flags & (GL_CONN_CONNECTING | GL_CONN_HANDSHAKE))) {
    ssize_t r = quiet_sendfile(c->fd, fd, off, n);
    if (r > 0) {
      c->last_active = ev_now(c->env->loop);
      if (c->env->stats) GL_STAT_ADD(c->env->stats->bytes_out, (size_t)r);
      return (long)r;
    }
    if (r == 0) return GL_FILE_END;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      /* the socket is full: nothing moved, and nothing is queued whose
       * draining would say when to go on, so wait for writability */
      gl_conn_want_drain(c);
      return 0;
    }
    if (errno == EPIPE || errno == ECONNRESET) {
      int e = errno;
      write_failed(c, e);
      return -e;
    }
    /* Any other failure may be the file's (EIO, a file sendfile cannot read:
     * EINVAL, ESPIPE) or the socket's (ETIMEDOUT): the chunk's pread and
     * write tell which, each reporting its own. */
  }
#endif
  return file_chunk(c, fd, off, n, ferr);
}

int gl_conn_shutdown(gl_conn *c) {
  if (c->flags & GL_CONN_WDEAD) return -c->err;
  if (c->flags & (GL_CONN_CLOSED | GL_CONN_CLOSING)) return -EPIPE;
  if (c->flags & GL_CONN_WSHUT) return GL_OK;
  c->flags |= GL_CONN_WSHUT | GL_CONN_SHUTPEND;
  if (c->out.len || (c->flags & (GL_CONN_CONNECTING | GL_CONN_HANDSHAKE))) {
    gl_conn_update(c); /* flush_out shuts once the queue is written */
    return GL_OK;
  }
  c->busy++; /* a failure closes c: on_close runs, c is freed below */
  shut_now(c);
  c->busy--;
  if (c->flags & GL_CONN_CLOSED) {
    int e = c->err ? c->err : EPIPE;
    if (!c->busy) destroy(c);
    return -e;
  }
  return (c->flags & GL_CONN_WDEAD) ? -c->err : GL_OK;
}

void gl_conn_want_drain(gl_conn *c) {
  if (c->flags & GL_CONN_CLOSED) return;
  c->flags |= GL_CONN_WANT_DRAIN;
  gl_conn_update(c);
}

void gl_conn_close(gl_conn *c, int reason, double linger) {
  if (c->flags & GL_CONN_CLOSED) return;
  if (linger > 0 && c->out.len &&
      !(c->flags & (GL_CONN_CONNECTING | GL_CONN_WDEAD | GL_CONN_HANDSHAKE))) {
    if (c->flags & GL_CONN_CLOSING) return;
    c->flags |= GL_CONN_CLOSING;
    c->reason = reason;
    gl_conn_update(c);
    ev_timer_stop(c->env->loop, &c->timer);
    ev_timer_set(&c->timer, linger, 0.);
    ev_timer_start(c->env->loop, &c->timer);
    return;
  }
  close_now(c, reason, 0);
}

void gl_conn_set_idle(gl_conn *c, double seconds) {
  c->idle_timeout = seconds;
  if (c->flags & (GL_CONN_CLOSING | GL_CONN_CLOSED)) return;
  ev_timer_stop(c->env->loop, &c->timer);
  if (seconds > 0) {
    ev_timer_set(&c->timer, seconds, 0.);
    ev_timer_start(c->env->loop, &c->timer);
  }
}

void gl_env_close_all(gl_env *env) {
  while (env->conns) close_now(env->conns, GL_CLOSE_LOCAL, 0);
}

void gl_env_flush_close_all(gl_env *env, double limit) {
  struct ev_loop *home = env->loop, *own;
  gl_conn *c, *next;
  for (c = env->conns; c; c = next) { /* the others end now */
    next = c->next;
    if (!(c->flags & GL_CONN_CLOSING) || limit <= 0)
      close_now(c, GL_CLOSE_LOCAL, 0);
  }
  if (!env->conns) return;
  own = ev_loop_new(EVFLAG_AUTO);
  if (!own) {
    gl_env_close_all(env);
    return;
  }
  ev_now_update(home); /* it may not have run for a while */
  for (c = env->conns; c; c = c->next) { /* watchers move between loops */
    ev_tstamp left = ev_timer_remaining(home, &c->timer);
    ev_io_stop(home, &c->rio);
    ev_io_stop(home, &c->wio);
    ev_timer_stop(home, &c->timer);
    if (left > limit) left = limit;
    ev_timer_set(&c->timer, left > 0 ? left : 0., 0.);
    ev_timer_start(own, &c->timer);
  }
  env->loop = own;
  for (c = env->conns; c; c = c->next) gl_conn_update(c);
  while (env->conns) ev_run(own, EVRUN_ONCE);
  env->loop = home;
  ev_loop_destroy(own);
}
