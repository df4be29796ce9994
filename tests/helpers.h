/*
 * helpers.h: loopback sockets and bounded loop runs shared by the core tests.
 *
 * Include after <cmocka.h>. Every wait here has a deadline, so a broken
 * core makes a test fail rather than hang. Only 127.0.0.1 and ::1 are used.
 */
#ifndef GL_TEST_HELPERS_H
#define GL_TEST_HELPERS_H

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gl.h"
#include "sock.h"

#define WAIT_MS 5000   /* longest a single wait on a descriptor may take */
#define WAIT_S 5.0     /* longest a single loop run may take */

/* Polls fd for events; returns the revents seen, or 0 after timeout_ms. */
static inline int wait_fd(int fd, short events, int timeout_ms) {
  struct pollfd p = {fd, events, 0};
  int n;
  do {
    n = poll(&p, 1, timeout_ms);
  } while (n < 0 && errno == EINTR);
  return n > 0 ? p.revents : 0;
}

/* Opens a listener on 127.0.0.1 port 0; *port receives the port. */
static inline int listen_loopback(int *port) {
  char err[GL_ERRLEN];
  int fd = gl_sock_listen("127.0.0.1", 0, 128, 0, port, err, sizeof err);
  if (fd < 0) fail_msg("listen: %s", err);
  return fd;
}

/* A connected loopback TCP pair, both ends non-blocking: *accepted is the
 * listener's end, *connected the end from gl_sock_connect. */
static inline void tcp_pair(int *accepted, int *connected) {
  char err[GL_ERRLEN];
  int port;
  int l = listen_loopback(&port);
  int c = gl_sock_connect("127.0.0.1", port, err, sizeof err);
  if (c < 0) fail_msg("connect: %s", err);
  assert_true(wait_fd(l, POLLIN, WAIT_MS) & POLLIN);
  int a = accept(l, NULL, NULL);
  assert_true(a >= 0);
  assert_int_equal(fcntl(a, F_SETFL, fcntl(a, F_GETFL) | O_NONBLOCK), 0);
  assert_true(wait_fd(c, POLLOUT, WAIT_MS) & POLLOUT);
  assert_int_equal(gl_sock_connect_result(c), GL_OK);
  close(l);
  *accepted = a;
  *connected = c;
}

/* Writes all n bytes to fd, waiting (at most WAIT_MS each time) while the
 * socket is full. */
static inline void write_all(int fd, const void *p, size_t n) {
  const char *s = p;
  while (n) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
      assert_true(wait_fd(fd, POLLOUT, WAIT_MS) & POLLOUT);
      continue;
    }
    assert_true(w > 0);
    s += w;
    n -= (size_t)w;
  }
}

static inline void guard_expired(struct ev_loop *loop, ev_timer *w,
                                 int revents) {
  (void)loop;
  (void)revents;
  *(int *)w->data = 1;
}

typedef int until_fn(void *arg);

/* Runs loop until pred(arg) holds or `seconds` pass; returns whether it
 * held. pred NULL: run for the whole time (to show nothing happens). */
static inline int run_until(struct ev_loop *loop, until_fn *pred, void *arg,
                            double seconds) {
  ev_timer guard;
  int expired = 0;
  ev_now_update(loop);
  ev_timer_init(&guard, guard_expired, seconds, 0.);
  guard.data = &expired;
  ev_timer_start(loop, &guard);
  while (!(pred && pred(arg)) && !expired) ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &guard);
  return pred ? pred(arg) : 0;
}

static inline void run_for(struct ev_loop *loop, double seconds) {
  run_until(loop, NULL, NULL, seconds);
}

static inline int int_nonzero(void *arg) { return *(int *)arg != 0; }

#endif
