#define _GNU_SOURCE
#include "listener.h"

#include <errno.h>
#include <stdio.h>
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
  if (!l->warned && l->path[0])
    gl_log(GL_LOG_WARN, "accept on unix:%s: %s; pausing %.1fs", l->path,
           strerror(err), GL_ACCEPT_BACKOFF);
  else if (!l->warned)
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

/* Resets l to a closed listener of loop. */
static void init(gl_listener *l, struct ev_loop *loop, gl_accept_fn *on_accept,
                 void *data) {
  memset(l, 0, sizeof *l);
  l->loop = loop;
  l->on_accept = on_accept;
  l->data = data;
  l->per_wake = GL_ACCEPT_PER_WAKE;
  l->fd = -1;
}

/* Starts accepting on l->fd, once open. */
static int start(gl_listener *l) {
  if (l->fd < 0) return GL_ERR;
  ev_io_init(&l->io, on_io, l->fd, EV_READ);
  l->io.data = l;
  ev_timer_init(&l->retry, on_retry, GL_ACCEPT_BACKOFF, 0.);
  l->retry.data = l;
  update(l);
  return GL_OK;
}

int gl_listener_open(gl_listener *l, struct ev_loop *loop, const char *host,
                     int port, int backlog, int flags, gl_accept_fn *on_accept,
                     void *data, char *err, size_t errlen) {
  init(l, loop, on_accept, data);
  l->fd = gl_sock_listen(host, port, backlog, flags, &l->port, err, errlen);
  return start(l);
}

int gl_listener_open_unix(gl_listener *l, struct ev_loop *loop,
                          const char *path, int mode, int backlog,
                          gl_accept_fn *on_accept, void *data, char *err,
                          size_t errlen) {
  init(l, loop, on_accept, data);
  snprintf(l->path, sizeof l->path, "%s", path);
  l->fd = gl_sock_listen_unix(path, backlog, mode, &l->file, err, errlen);
  return start(l);
}

int gl_listener_adopt(gl_listener *l, struct ev_loop *loop, int fd,
                      gl_accept_fn *on_accept, void *data) {
  char name[GL_NAMELEN];
  int port = 0, fam, rc;
  init(l, loop, on_accept, data);
  if ((rc = gl_sock_name(fd, 0, name, sizeof name, &port, &fam)) != GL_OK) {
    close(fd);
    return rc;
  }
  if (fam == GL_FAMILY_UNIX)
    snprintf(l->path, sizeof l->path, "%s", name);
  else
    l->port = port;
  l->fd = fd;
  return start(l);
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
  gl_sock_unlink(l->path, &l->file);
}
