/*
 * test_sock.c: the socket helpers, on real loopback sockets.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gl.h"
#include "helpers.h"
#include "sock.h"

/* What every descriptor from sock.h must be. */
static void assert_nonblock_cloexec(int fd) {
  assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
  assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

static void assert_contains(const char *s, const char *part) {
  if (!strstr(s, part)) fail_msg("\"%s\" does not contain \"%s\"", s, part);
}

static void test_listen_port_zero_reports_port(void **state) {
  char err[GL_ERRLEN] = "", ip[64];
  int port = -1, name_port = -1, family = 0;
  (void)state;
  int fd = gl_sock_listen("127.0.0.1", 0, 16, 0, &port, err, sizeof err);
  assert_true(fd >= 0);
  assert_true(port > 0 && port <= 65535);
  assert_nonblock_cloexec(fd);
  assert_int_equal(gl_sock_name(fd, 0, ip, sizeof ip, &name_port, &family),
                   GL_OK);
  assert_string_equal(ip, "127.0.0.1");
  assert_int_equal(name_port, port);
  assert_int_equal(family, 4);
  /* A listening socket has no peer. */
  assert_int_equal(gl_sock_name(fd, 1, ip, sizeof ip, &name_port, &family),
                   -ENOTCONN);
  /* bound may be NULL. */
  int fd2 = gl_sock_listen("127.0.0.1", 0, 16, 0, NULL, err, sizeof err);
  assert_true(fd2 >= 0);
  close(fd2);
  close(fd);
}

static void test_listen_port_in_use(void **state) {
  char err[GL_ERRLEN] = "", want[64];
  int port, port2 = -1;
  (void)state;
  int fd = listen_loopback(&port);
  int fd2 = gl_sock_listen("127.0.0.1", port, 16, 0, &port2, err,
                           sizeof err);
  assert_int_equal(fd2, -1);
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  assert_contains(err, want);
  assert_contains(err, "Address already in use");
  close(fd);
}

static void test_invalid_port(void **state) {
  char err[GL_ERRLEN];
  int port;
  (void)state;
  err[0] = 0;
  assert_int_equal(gl_sock_listen("127.0.0.1", 65536, 16, 0, &port, err,
                                  sizeof err), -1);
  assert_string_equal(err, "invalid port 65536");
  err[0] = 0;
  assert_int_equal(gl_sock_listen("127.0.0.1", -1, 16, 0, &port, err,
                                  sizeof err), -1);
  assert_string_equal(err, "invalid port -1");
  err[0] = 0;
  assert_int_equal(gl_sock_connect("127.0.0.1", 70000, err, sizeof err), -1);
  assert_string_equal(err, "invalid port 70000");
}

/* A 64-byte label cannot be put in a DNS query, so the lookup fails inside
 * the resolver without sending anything. */
static void test_unresolvable_host(void **state) {
  char host[128], err[GL_ERRLEN], want[160];
  int port;
  (void)state;
  memset(host, 'x', 64);
  strcpy(host + 64, ".invalid");
  snprintf(want, sizeof want, "cannot resolve %s: ", host);
  err[0] = 0;
  assert_int_equal(gl_sock_listen(host, 0, 16, 0, &port, err, sizeof err),
                   -1);
  assert_contains(err, want);
  assert_true(strlen(err) > strlen(want)); /* the resolver's reason follows */
  err[0] = 0;
  assert_int_equal(gl_sock_connect(host, 80, err, sizeof err), -1);
  assert_contains(err, want);
}

/* A short error buffer receives a cut, terminated message. */
static void test_short_error_buffer(void **state) {
  char err[8];
  int port;
  (void)state;
  memset(err, 'z', sizeof err);
  assert_int_equal(gl_sock_listen("127.0.0.1", 99999, 16, 0, &port, err,
                                  sizeof err), -1);
  assert_string_equal(err, "invalid");
}

static void test_connect_and_names(void **state) {
  char err[GL_ERRLEN], ip[64];
  int lport, port, family, on = 0;
  socklen_t len = sizeof on;
  (void)state;
  int l = listen_loopback(&lport);
  int c = gl_sock_connect("127.0.0.1", lport, err, sizeof err);
  assert_true(c >= 0);
  assert_nonblock_cloexec(c);
  assert_int_equal(getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
  assert_true(on);
  assert_true(wait_fd(c, POLLOUT, WAIT_MS) & POLLOUT);
  assert_int_equal(gl_sock_connect_result(c), GL_OK);

  assert_true(wait_fd(l, POLLIN, WAIT_MS) & POLLIN);
  int a = accept(l, NULL, NULL);
  assert_true(a >= 0);
  /* The client's peer is the listener's port; the accepted end's peer is
   * the client's local port. */
  assert_int_equal(gl_sock_name(c, 1, ip, sizeof ip, &port, &family), GL_OK);
  assert_string_equal(ip, "127.0.0.1");
  assert_int_equal(port, lport);
  assert_int_equal(family, 4);
  int cport;
  assert_int_equal(gl_sock_name(c, 0, ip, sizeof ip, &cport, &family),
                   GL_OK);
  assert_int_equal(gl_sock_name(a, 1, ip, sizeof ip, &port, &family), GL_OK);
  assert_int_equal(port, cport);
  assert_string_equal(ip, "127.0.0.1");

  /* gl_sock_tune sets TCP_NODELAY on an accepted descriptor. */
  on = 0;
  gl_sock_tune(a);
  assert_int_equal(getsockopt(a, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
  assert_true(on);

  /* The connection carries bytes. */
  write_all(c, "ping", 4);
  char buf[8];
  assert_true(wait_fd(a, POLLIN, WAIT_MS) & POLLIN);
  assert_int_equal(read(a, buf, sizeof buf), 4);
  assert_memory_equal(buf, "ping", 4);
  close(a);
  close(c);
  close(l);
  assert_int_equal(gl_sock_name(-1, 0, ip, sizeof ip, &port, &family),
                   -EBADF);
}

static void test_ipv6_loopback(void **state) {
  char err[GL_ERRLEN], ip[64];
  int port = -1, name_port, family = 0;
  (void)state;
  int fd = gl_sock_listen("::1", 0, 16, 0, &port, err, sizeof err);
  if (fd < 0) {
    print_message("::1 unavailable (%s)\n", err);
    skip();
  }
  assert_true(port > 0);
  assert_int_equal(gl_sock_name(fd, 0, ip, sizeof ip, &name_port, &family),
                   GL_OK);
  assert_int_equal(family, 6);
  assert_string_equal(ip, "::1");
  assert_int_equal(name_port, port);

  int c = gl_sock_connect("::1", port, err, sizeof err);
  assert_true(c >= 0);
  assert_true(wait_fd(c, POLLOUT, WAIT_MS) & POLLOUT);
  assert_int_equal(gl_sock_connect_result(c), GL_OK);
  assert_int_equal(gl_sock_name(c, 1, ip, sizeof ip, &name_port, &family),
                   GL_OK);
  assert_int_equal(family, 6);
  assert_string_equal(ip, "::1");
  assert_int_equal(name_port, port);
  close(c);
  close(fd);
}

/* GL_LISTEN_REUSEPORT lets listening sockets share a port when each asks
 * for it; without it the port is taken. */
static void test_reuseport(void **state) {
  char err[GL_ERRLEN] = "";
  int port, port2 = -1;
  (void)state;
  int a = gl_sock_listen("127.0.0.1", 0, 16, GL_LISTEN_REUSEPORT, &port, err,
                         sizeof err);
  if (a < 0) fail_msg("listen: %s", err);
  int b = gl_sock_listen("127.0.0.1", port, 16, GL_LISTEN_REUSEPORT, &port2,
                         err, sizeof err);
  if (b < 0) fail_msg("second listen: %s", err);
  assert_int_equal(port2, port);
  assert_nonblock_cloexec(b);
  assert_int_equal(gl_sock_listen("127.0.0.1", port, 16, 0, NULL, err,
                                  sizeof err), -1);
  assert_contains(err, "Address already in use");

  /* A connection lands in one of the two. */
  int c = gl_sock_connect("127.0.0.1", port, err, sizeof err);
  assert_true(c >= 0);
  struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
  assert_true(poll(p, 2, WAIT_MS) >= 1);
  int fd = accept(p[0].revents & POLLIN ? a : b, NULL, NULL);
  assert_true(fd >= 0);
  close(fd);
  close(c);
  close(b);
  close(a);
}

/* A port nobody listens on: a port just bound and released. */
static int closed_port(void) {
  int port;
  close(listen_loopback(&port));
  return port;
}

static void test_connect_refused(void **state) {
  char err[GL_ERRLEN] = "";
  (void)state;
  int port = closed_port();
  int fd = gl_sock_connect("127.0.0.1", port, err, sizeof err);
  if (fd < 0) {
    /* A stack may refuse before connect(2) returns; the reason must say
     * so. */
    assert_string_equal(err, strerror(ECONNREFUSED));
    return;
  }
  int ev = wait_fd(fd, POLLOUT, WAIT_MS);
  assert_true(ev & (POLLOUT | POLLERR | POLLHUP));
  assert_int_equal(gl_sock_connect_result(fd), -ECONNREFUSED);
  close(fd);
  assert_int_equal(gl_sock_connect_result(-1), -EBADF);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_listen_port_zero_reports_port),
      cmocka_unit_test(test_listen_port_in_use),
      cmocka_unit_test(test_invalid_port),
      cmocka_unit_test(test_unresolvable_host),
      cmocka_unit_test(test_short_error_buffer),
      cmocka_unit_test(test_connect_and_names),
      cmocka_unit_test(test_ipv6_loopback),
      cmocka_unit_test(test_reuseport),
      cmocka_unit_test(test_connect_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
