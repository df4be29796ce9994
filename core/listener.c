#define _GNU_SOURCE
#include "listener.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gl.h"
#include "log.h"
#include "sock.h"

static void update(gl_listener *l) {
  int want = l->fd >= 0 && !l->paused && !l->backing_off;
  if (want && !ev_is_active(&l->io))
    ev_io_start(l->loop, &l->io);
  else if (!want && ev_is_active(&l->io))
    ev_io_stop(l->loop, &l->io);
}

static void on_retry(EV_P_ ev_timer *w, int revents) {
  gl_listener *l = w->data;
  (void)revents;
  ev_timer_stop(EV_A_ w);
  l->backing_off = 0;
  update(l);
}

static void back_off(gl_listener *l, int err) {
  if (!l->warned)
    gl_log(GL_LOG_WARN, "accept on port %d: %s; pausing %.1fs", l->port,
           strerror(err), GL_ACCEPT_BACKOFF);
  l->warned = 1; /* once per shortage, not every retry */
  l->backing_off = 1;
  update(l);
  ev_timer_set(&l->retry, GL_ACCEPT_BACKOFF, 0.);
  ev_timer_start(l->loop, &l->retry);
}

static void on_io(EV_P_ ev_io *w, int revents) {
  gl_listener *l = w->data;
  (void)revents;
  (void)loop;
  for (unsigned i = 0; i < l->per_wake; i++) {
    if (l->fd < 0 || l->paused || l->backing_off) return;
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      l->warned = 0;
      gl_sock_tune(fd);
      if (l->stats) GL_STAT_ADD(l->stats->accepted, 1);
      l->on_accept(l, fd);
      continue;
    }
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) return;
    if (l->stats) GL_STAT_ADD(l->stats->accept_errors, 1);
    switch (e) {
      case EINTR:
      case ECONNABORTED:
      case EPROTO:
      case EPERM:
      case ENETDOWN:
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case EOPNOTSUPP:
      case ENETUNREACH:
        continue; /* that connection failed; the next may not */
      default:
        back_off(l, e); /* EMFILE, ENFILE, ENOBUFS, ENOMEM, or unknown */
        return;
    }
  }
}

int gl_listener_open(gl_listener *l, struct ev_loop *loop, const char *host,
                     int port, int backlog, int flags, gl_accept_fn *on_accept,
                     void *data, char *err, size_t errlen) {
  memset(l, 0, sizeof *l);
  l->loop = loop;
  l->on_accept = on_accept;
  l->data = data;
  l->per_wake = GL_ACCEPT_PER_WAKE;
  l->fd = gl_sock_listen(host, port, backlog, flags, &l->port, err, errlen);
  if (l->fd < 0) return GL_ERR;
  ev_io_init(&l->io, on_io, l->fd, EV_READ);
  l->io.data = l;
  ev_timer_init(&l->retry, on_retry, GL_ACCEPT_BACKOFF, 0.);
  l->retry.data = l;
  update(l);
  return GL_OK;
}

void gl_listener_pause(gl_listener *l, int paused) {
  l->paused = paused;
  update(l);
}

void gl_listener_close(gl_listener *l) {
  if (l->fd < 0) return;
  ev_io_stop(l->loop, &l->io);
  ev_timer_stop(l->loop, &l->retry);
  close(l->fd);
  l->fd = -1;
}
