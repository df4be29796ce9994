/*
 * listener.h: a listening socket that accepts on readiness.
 *
 * Per readiness event it accepts at most per_wake connections, so a flood of
 * connects cannot starve established peers. Running out of descriptors or
 * memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses accepting for a short
 * back-off (GL_ACCEPT_BACKOFF seconds) instead of spinning: waiting clients
 * stay in the kernel's backlog and are accepted once descriptors free up.
 * Errors that concern one connection only (ECONNABORTED, EPROTO, EPERM, ...)
 * are counted and skipped.
 */
#ifndef GL_LISTENER_H
#define GL_LISTENER_H

#include <ev.h>

#include "sock.h"
#include "stats.h"

#define GL_ACCEPT_PER_WAKE 64
#define GL_ACCEPT_BACKOFF 0.1

typedef struct gl_listener gl_listener;

/* Receives each accepted descriptor (non-blocking, close-on-exec,
 * TCP_NODELAY on TCP). The callee owns fd. It may pause or close the
 * listener. */
typedef void gl_accept_fn(gl_listener *l, int fd);

struct gl_listener {
  struct ev_loop *loop;
  int fd;             /* -1 once closed */
  int port;           /* port actually bound (0 on a Unix socket) */
  char path[GL_NAMELEN]; /* a Unix socket's path ("@NAME": abstract), or "" */
  gl_sockfile file;   /* the socket file it made, removed when it closes */
  int paused;         /* set by the owner through gl_listener_pause */
  int backing_off;    /* waiting out a resource shortage */
  int warned;         /* the shortage was logged; cleared by an accept */
  unsigned per_wake;  /* accepts per readiness event */
  gl_accept_fn *on_accept;
  void *data;         /* the owner's */
  gl_stats *stats;    /* may be NULL */
  ev_io io;
  ev_timer retry;
};

/* Opens host:port (flags: GL_LISTEN_* of sock.h) and starts accepting.
 * Returns GL_OK, or GL_ERR with a message in err (l is then closed). */
int gl_listener_open(gl_listener *l, struct ev_loop *loop, const char *host,
                     int port, int backlog, int flags, gl_accept_fn *on_accept,
                     void *data, char *err, size_t errlen);

/* Opens the Unix socket path (gl_sock_listen_unix: a stale socket file is
 * replaced; mode < 0: as the umask leaves it) and starts accepting; the
 * socket file is removed when the listener closes. As gl_listener_open
 * otherwise. */
int gl_listener_open_unix(gl_listener *l, struct ev_loop *loop,
                          const char *path, int mode, int backlog,
                          gl_accept_fn *on_accept, void *data, char *err,
                          size_t errlen);

/* Starts accepting on fd, a listening socket it takes over (a dup of
 * another listener's, so several loops share one Unix socket); it
 * removes no socket file. Returns GL_OK, or -errno (fd is then closed). */
int gl_listener_adopt(gl_listener *l, struct ev_loop *loop, int fd,
                      gl_accept_fn *on_accept, void *data);

/* Stops (paused != 0) or resumes accepting, as for a connection limit. */
void gl_listener_pause(gl_listener *l, int paused);

/* Stops watching and closes the socket, and removes the socket file it
 * made (if that is still the one at its path); safe to call twice. */
void gl_listener_close(gl_listener *l);

#endif
