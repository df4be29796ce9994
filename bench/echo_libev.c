/*
 * echo_libev: the floor glisten-lua is measured against, a plain C echo
 * server on libev as one would write it by hand: non-blocking accept4 in a
 * loop, one read per readiness event into a stack buffer, the write tried
 * directly and only what the kernel did not take queued.
 *
 *   echo_libev PORT     (127.0.0.1; prints "listening on 127.0.0.1:PORT")
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct client {
  ev_io r, w;
  char *q;       /* unsent bytes */
  size_t qlen, qoff;
} client;

static void drop(struct ev_loop *loop, client *c) {
  ev_io_stop(loop, &c->r);
  ev_io_stop(loop, &c->w);
  close(c->r.fd);
  free(c->q);
  free(c);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents) {
  client *c = w->data;
  (void)revents;
  ssize_t n = send(w->fd, c->q + c->qoff, c->qlen - c->qoff, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno != EAGAIN) drop(loop, c);
    return;
  }
  c->qoff += (size_t)n;
  if (c->qoff == c->qlen) {
    c->qoff = c->qlen = 0;
    ev_io_stop(loop, &c->w);
    ev_io_start(loop, &c->r);
  }
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents) {
  client *c = w->data;
  char buf[65536];
  (void)revents;
  ssize_t n = read(w->fd, buf, sizeof buf);
  if (n <= 0) {
    if (n < 0 && errno == EAGAIN) return;
    drop(loop, c);
    return;
  }
  ssize_t s = send(w->fd, buf, (size_t)n, MSG_NOSIGNAL);
  if (s < 0) {
    if (errno != EAGAIN) {
      drop(loop, c);
      return;
    }
    s = 0;
  }
  if (s < n) { /* queue the rest; stop reading until it is written */
    c->q = realloc(c->q, (size_t)(n - s));
    memcpy(c->q, buf + s, (size_t)(n - s));
    c->qlen = (size_t)(n - s);
    c->qoff = 0;
    ev_io_stop(loop, &c->r);
    ev_io_start(loop, &c->w);
  }
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)w;
  (void)revents;
  ev_break(loop, EVBREAK_ALL); /* exit cleanly, so profilers write out */
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  for (int i = 0; i < 64; i++) {
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    client *c = calloc(1, sizeof *c);
    ev_io_init(&c->r, on_read, fd, EV_READ);
    ev_io_init(&c->w, on_write, fd, EV_WRITE);
    c->r.data = c->w.data = c;
    ev_io_start(loop, &c->r);
  }
}

int main(int argc, char **argv) {
  struct rlimit rl;
  int port = argc > 1 ? atoi(argv[1]) : 0, on = 1;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  socklen_t len = sizeof a;
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1024) < 0) {
    perror("echo_libev");
    return 1;
  }
  getsockname(fd, (struct sockaddr *)&a, &len);
  fprintf(stderr, "listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
  struct ev_loop *loop = EV_DEFAULT;
  ev_io lw;
  ev_io_init(&lw, on_accept, fd, EV_READ);
  ev_io_start(loop, &lw);
  ev_signal term, intr;
  ev_signal_init(&term, on_stop, SIGTERM);
  ev_signal_start(loop, &term);
  ev_signal_init(&intr, on_stop, SIGINT);
  ev_signal_start(loop, &intr);
  ev_run(loop, 0);
  return 0;
}
