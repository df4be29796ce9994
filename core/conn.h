/*
 * conn.h: one TCP connection: reading on readiness, writing directly with a
 * bounded queue for what the kernel did not take, idle timeout, lingering
 * close.
 *
 * Ownership: the core allocates and frees a gl_conn. Its owner learns of
 * the end through on_close, after which the pointer must not be used. A
 * connection is never freed while one of its own callbacks runs: it is
 * marked and freed when the callback returns.
 *
 * A write that fails because the peer is gone (EPIPE, ECONNRESET) does not
 * close: it drops the queued output and marks GL_CONN_WDEAD, and reading
 * goes on, so what the peer sent before it left (a last error message, say)
 * can still be read; the read that reports the end closes.
 *
 * A connect that fails closes with GL_CLOSE_ERROR but is not counted in
 * stats->errors: its owner may go on to another address, and counts the
 * connect that fails for good.
 *
 * Files: gl_conn_sendfile sends bytes of a file with sendfile(2), the
 * kernel copying them from the page cache, when the plain transport can
 * write at once; behind queued output, or over another transport (TLS), it
 * reads one chunk of at most GL_READ_CHUNK bytes and writes it as
 * gl_conn_write_some does. So no more of a file than one chunk is ever in
 * user space on its way out, besides what the queue holds.
 *
 * Input: each readiness event makes one read of at most GL_READ_CHUNK bytes.
 * While the connection holds no unread input, the read lands in the worker's
 * shared scratch buffer (gl_env.scratch) and only the bytes the owner leaves
 * unread in on_data are copied to the connection's own buffer; so a
 * connection whose owner consumes every chunk owns no input memory. Reading
 * pauses while in.len >= in_max.
 */
#ifndef GL_CONN_H
#define GL_CONN_H

#include <ev.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "buf.h"
#include "stats.h"

#define GL_READ_CHUNK 65536

/* What the connections of one worker share. */
typedef struct gl_conn gl_conn;

/* A transport result besides a count and -errno: nothing moved, and the
 * same call must be made again (a write with the same bytes first) once the
 * descriptor is readable (GL_WANT_READ) or writable (GL_WANT_WRITE). TLS
 * gives the direction opposite to the call's own when a record of the other
 * way must pass first. */
#define GL_WANT_READ (-10001)
#define GL_WANT_WRITE (-10002)

/* gl_conn_sendfile's results besides a count and -errno: the file ends
 * before the bytes asked for (it is shorter, or was cut while being sent);
 * reading the file failed (*ferr holds the errno; c is untouched). */
#define GL_FILE_END (-10003)
#define GL_FILE_ERROR (-10004)

/* How bytes cross a connection's descriptor: plain (the default) or TLS
 * (tls.h). The connection calls it; it never calls the owner. */
typedef struct gl_transport {
  const char *name;
  /* Moves at most n (> 0) bytes. Returns the count (> 0), 0 (read only:
   * the peer ended the stream), GL_WANT_*, or -errno. */
  long (*read)(gl_conn *c, char *p, size_t n);
  long (*write)(gl_conn *c, const char *p, size_t n);
  /* Advances the handshake: 1 when done, GL_WANT_*, or -errno. */
  int (*handshake)(gl_conn *c);
  /* Whether a read would give bytes without the descriptor being readable
   * (bytes the transport already holds). NULL: never. */
  int (*pending)(gl_conn *c);
  /* Just before the descriptor closes: says goodbye if it can without
   * waiting (clean != 0: a local close with nothing left unwritten). NULL:
   * nothing to say. */
  void (*close)(gl_conn *c, int clean);
  /* Says goodbye on the writing side only (gl_conn_shutdown), before the
   * descriptor's shutdown(SHUT_WR); reading goes on. 1 when said,
   * GL_WANT_* (called again on that readiness), or -errno. NULL: nothing
   * to say. */
  int (*shutdown)(gl_conn *c);
  /* When c is freed (after on_close, so the owner may still ask the
   * transport why it closed): frees c->tpd. NULL: nothing to free. */
  void (*free)(gl_conn *c);
} gl_transport;

extern const gl_transport gl_plain;

typedef struct gl_env {
  struct ev_loop *loop;
  gl_stats *stats;
  char *scratch;   /* GL_READ_CHUNK bytes, owned by whoever made the env */
  gl_conn *conns;  /* every connection not yet closed */
} gl_env;

typedef struct gl_conn_cbs {
  /* New bytes in c->in, or GL_CONN_EOF newly set. */
  void (*on_data)(gl_conn *c);
  /* After a write, a finished connect or a finished handshake, while
   * queued output is at or below c->low_water (so possibly more than once
   * per drain). */
  void (*on_drain)(gl_conn *c);
  /* The descriptor is closed (c->reason, c->err say why); c is freed
   * after this returns. */
  void (*on_close)(gl_conn *c);
} gl_conn_cbs;

enum {
  GL_CONN_EOF = 1,        /* the peer closed its side */
  GL_CONN_CLOSING = 2,    /* flushing, then closing */
  GL_CONN_CLOSED = 4,     /* descriptor closed */
  GL_CONN_CONNECTING = 8, /* outbound connect in progress */
  GL_CONN_READING = 16,   /* the owner wants input */
  GL_CONN_WDEAD = 32,     /* the peer reset: writes fail, reads go on */
  GL_CONN_HANDSHAKE = 64, /* the transport's handshake is under way */
  GL_CONN_WANT_DRAIN = 128, /* the owner waits for writability, with
                               nothing queued: on_drain then
                               (gl_conn_want_drain) */
  GL_CONN_WSHUT = 256,    /* the owner ended its writing (gl_conn_shutdown):
                             writes fail with -EPIPE */
  GL_CONN_SHUTPEND = 512  /* ... and the shutdown waits for the queue, the
                             connect or handshake, or the transport */
};

enum {
  GL_CLOSE_NONE = 0,
  GL_CLOSE_LOCAL,   /* gl_conn_close */
  GL_CLOSE_PEER,    /* reset by the peer (ECONNRESET, EPIPE) */
  GL_CLOSE_TIMEOUT, /* idle timeout */
  GL_CLOSE_ERROR    /* any other socket failure; c->err holds the errno */
};

struct gl_conn {
  gl_env *env;
  const gl_conn_cbs *cbs;
  void *data; /* the owner's */
  int fd;
  unsigned flags;
  int reason; /* GL_CLOSE_*, once closing or closed */
  int err;    /* errno of the failure, or 0 */
  int busy;   /* callbacks of this connection on the C stack */
  gl_buf in, out;
  size_t in_max;    /* reading pauses at this much unread input */
  size_t out_max;   /* queued output may never pass this */
  size_t low_water; /* on_drain fires when queued output falls to this */
  double idle_timeout; /* seconds without I/O before closing; 0 = never */
  double linger;       /* longest a flushing close may wait */
  ev_tstamp last_active;
  const gl_transport *tp; /* &gl_plain unless set */
  void *tpd;              /* the transport's state */
  int hswant;             /* GL_WANT_* of the handshake under way */
  unsigned char rwait;    /* the last read wants writability */
  unsigned char wwait;    /* the queued output wants readability */
  ev_io rio, wio;
  ev_timer timer; /* idle timeout, then linger deadline */
  gl_conn *prev, *next; /* in env->conns */
};

/* Takes ownership of fd. connecting != 0: fd has a connect in progress
 * (gl_sock_connect); on_drain reports its success, on_close (reason
 * GL_CLOSE_ERROR, c->err set) its failure.
 * Returns NULL (fd closed) when out of memory. Reading starts with
 * gl_conn_read. */
gl_conn *gl_conn_new(gl_env *env, int fd, int connecting,
                     const gl_conn_cbs *cbs, void *data);

/* Puts the connection on transport tp (with its state tpd) from here on.
 * handshake: 0, or the readiness the handshake starts with (GL_WANT_READ
 * for a server, GL_WANT_WRITE for a client); until it ends nothing is read
 * or written for the owner, then on_drain reports its success and on_close
 * (reason GL_CLOSE_ERROR, c->err set, not counted in stats->errors) its
 * failure. c must hold no unread input and no queued output (what was
 * there belongs to the stream before the change). The previous transport's
 * state is freed (its free). */
void gl_conn_set_transport(gl_conn *c, const gl_transport *tp, void *tpd,
                           int handshake);

/* Starts (on != 0) or stops wanting input. */
void gl_conn_read(gl_conn *c, int on);

/* Marks n bytes of c->in as read and resumes reading if it had paused. */
void gl_conn_consume(gl_conn *c, size_t n);

/* Re-evaluates what to wait for (after in_max changed, say). */
void gl_conn_update(gl_conn *c);

/* Writes n bytes: directly when nothing is queued, queueing what the kernel
 * does not take. Returns GL_OK; -ENOBUFS if the rest would take the queue
 * past out_max: nothing of the rest is queued, but a first part may have
 * been written, so the stream is cut and the caller must close; -EPIPE or
 * -ECONNRESET when the peer is gone (c stays open for reading, see above);
 * or another -errno when the socket failed, in which case c has been closed
 * (on_close has run). */
int gl_conn_write(gl_conn *c, const char *p, size_t n);

/* Takes what it can of n bytes: writes directly when nothing is queued, and
 * queues as much of the rest as fits under out_max. Returns the number of
 * bytes taken (0 to n; fewer than n when the queue is full, or when no
 * memory could be had for it after a direct write), or a negative errno
 * with nothing taken: -ENOMEM when no memory could be had for the queue
 * (c stays open), else as gl_conn_write. For a writer that waits for
 * on_drain and goes on with the rest. */
long gl_conn_write_some(gl_conn *c, const char *p, size_t n);

/* gl_conn_write_some for the n pieces of iov, one after the other, as one
 * stream of bytes. On the plain transport, with nothing queued, one
 * writev-like call (sendmsg) writes them: the kernel sees one write. Another
 * transport takes them piece by piece. Returns as gl_conn_write_some, the
 * count being bytes of the whole stream. */
long gl_conn_writev_some(gl_conn *c, const struct iovec *iov, int n);

/* Sends at most n (> 0) bytes of the file open as fd, from *off on, and
 * advances *off by what it took. fd is the caller's: it is neither closed
 * nor moved (the reads give their offset).
 *
 * When nothing is queued and c is on the plain transport, sendfile(2)
 * moves the bytes from the file to the socket directly: what the kernel
 * takes is sent, nothing is queued. Otherwise (queued output, a connect or
 * handshake under way, another transport such as TLS, or a file sendfile
 * cannot read) it reads one chunk of at most GL_READ_CHUNK bytes, no more
 * than the queue has room for under out_max, with pread and writes it as
 * gl_conn_write_some does: after the queued bytes, queueing what the
 * transport does not take. stats->bytes_out and last_active count what is
 * written, as for any write.
 *
 * Returns:
 *   > 0            bytes taken (written, or queued to be written);
 *   0              nothing taken: the socket is full (c then waits for
 *                  writability) or the queue is at out_max; on_drain follows
 *                  once more can be taken, and the caller calls again then,
 *                  as a writer of gl_conn_write_some that got 0 does;
 *   GL_FILE_END    the file ends at *off: nothing left to send, whatever n
 *                  said (a file cut short while it is sent ends the send
 *                  cleanly, never a wait);
 *   GL_FILE_ERROR  reading the file failed; *ferr holds the errno, c is as
 *                  it was;
 *   -errno         as gl_conn_write_some: -EPIPE or -ECONNRESET when the
 *                  peer is gone (c stays open for reading), -ENOMEM with
 *                  nothing taken, or another -errno when the socket failed
 *                  (c has been closed: on_close has run).
 * Never runs a callback of c's owner but on_close, and that only when the
 * socket failed. */
long gl_conn_sendfile(gl_conn *c, int fd, off_t *off, size_t n, int *ferr);

/* Ends the writing side, as shutdown(SHUT_WR): once what is queued is
 * written (and a connect or handshake under way has ended), the transport
 * says goodbye (TLS: close_notify) and the descriptor is shut for writing,
 * so the peer reads the end of the stream. Reading goes on as before, and
 * the connection stays open until closed. Writes after it fail with -EPIPE
 * and take nothing. Returns GL_OK (also when already shut); -EPIPE when c
 * is closing; the peer's errno when it is gone (GL_CONN_WDEAD); or another
 * -errno when shutting failed, in which case c has been closed (on_close
 * has run). A failure that comes once the queue drains is handled as a
 * failed write. */
int gl_conn_shutdown(gl_conn *c);

/* Asks for on_drain at the socket's next writability even though nothing is
 * queued (at once, in the loop's next turn, if it is writable now): for a
 * writer that gives the loop a turn between large steps. With output
 * queued, on_drain comes as the queue drains anyway. */
void gl_conn_want_drain(gl_conn *c);

/* Closes. With linger > 0 and output queued, reading stops and the close
 * waits until the queue is written or linger seconds pass. reason is
 * reported in c->reason. May run on_close before returning. */
void gl_conn_close(gl_conn *c, int reason, double linger);

/* Arms the idle timeout (seconds; 0 = off). */
void gl_conn_set_idle(gl_conn *c, double seconds);

/* Closes every connection of env at once (reason GL_CLOSE_LOCAL), as at
 * teardown: on_close runs for each. */
void gl_env_close_all(gl_env *env);

/* Teardown that keeps the promise of a lingering close: connections still
 * flushing (closed with linger) go on flushing, on a private loop so no
 * other watcher of env's loop runs meanwhile, until each is written out,
 * its linger passes or `limit` seconds pass, whichever comes first; every
 * other connection is closed at once (as is every one when limit <= 0). On
 * return env has no connections. Blocks for at most min(limit, the longest
 * linger). */
void gl_env_flush_close_all(gl_env *env, double limit);

static inline size_t gl_conn_queued(const gl_conn *c) { return c->out.len; }

#endif
