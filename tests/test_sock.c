/*
 * test_sock.c: the socket helpers, on real loopback sockets and on Unix
 * sockets in a folder the test makes (and removes).
 *
 * socket(2) is wrapped at link time (-Wl,--wrap=socket): __wrap_socket
 * fails AF_INET6 with EAFNOSUPPORT while no_inet6 is set, as on a machine
 * without IPv6, and passes every other call through.
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
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "gl.h"
#include "helpers.h"
#include "sock.h"

int __real_socket(int domain, int type, int protocol);
int __wrap_socket(int domain, int type, int protocol);

static int no_inet6; /* socket(AF_INET6, ...) fails: no IPv6 here */

int __wrap_socket(int domain, int type, int protocol) {
  if (no_inet6 && domain == AF_INET6) {
    errno = EAFNOSUPPORT;
    return -1;
  }
  return __real_socket(domain, type, protocol);
}

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


/* --- dual stack ------------------------------------------------------- */

/* "::" takes IPv4 too, and an IPv4 peer (::ffff:127.0.0.1 to the kernel)
 * is named as the IPv4 address it is, on both ends. */
static void test_dual_stack_names_ipv4_as_ipv4(void **state) {
  char err[GL_ERRLEN], ip[GL_NAMELEN], key[64], text[GL_NAMELEN + 48];
  int port = -1, p2, family = 0, v6only = 1;
  socklen_t len = sizeof v6only;
  (void)state;
  int l = gl_sock_listen("::", 0, 16, 0, &port, err, sizeof err);
  if (l < 0) {
    print_message(":: unavailable (%s)\n", err);
    skip();
  }
  assert_int_equal(getsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), 0);
  assert_false(v6only);
  int c = gl_sock_connect("127.0.0.1", port, err, sizeof err);
  assert_true(c >= 0);
  assert_true(wait_fd(l, POLLIN, WAIT_MS) & POLLIN);
  int a = accept(l, NULL, NULL);
  assert_true(a >= 0);
  assert_int_equal(gl_sock_name(a, 1, ip, sizeof ip, &p2, &family), GL_OK);
  assert_string_equal(ip, "127.0.0.1");
  assert_int_equal(family, GL_FAMILY_INET);
  assert_int_equal(gl_sock_name(a, 0, ip, sizeof ip, &p2, &family), GL_OK);
  assert_string_equal(ip, "127.0.0.1");
  assert_int_equal(p2, port);
  assert_int_equal(family, GL_FAMILY_INET);
  assert_int_equal(gl_sock_peer_key(a, key, sizeof key), GL_OK);
  assert_string_equal(key, "127.0.0.1");
  assert_int_equal(gl_sock_peer_text(a, text, sizeof text), GL_OK);
  assert_int_equal(strncmp(text, "127.0.0.1:", 10), 0);
  close(a);
  close(c);
  /* an IPv6 peer stays IPv6 */
  c = gl_sock_connect("::1", port, err, sizeof err);
  if (c >= 0 && (wait_fd(l, POLLIN, WAIT_MS) & POLLIN)) {
    a = accept(l, NULL, NULL);
    assert_true(a >= 0);
    assert_int_equal(gl_sock_name(a, 1, ip, sizeof ip, &p2, &family), GL_OK);
    assert_string_equal(ip, "::1");
    assert_int_equal(family, GL_FAMILY_INET6);
    assert_int_equal(gl_sock_peer_text(a, text, sizeof text), GL_OK);
    assert_int_equal(strncmp(text, "[::1]:", 6), 0);
    close(a);
  }
  if (c >= 0) close(c);
  close(l);
}

/* "*" is "::" with IPv6, "0.0.0.0" without. */
static void test_any_host(void **state) {
  char err[GL_ERRLEN], ip[GL_NAMELEN];
  int port, p2, family;
  (void)state;
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  int have6 = fd >= 0 || errno != EAFNOSUPPORT;
  if (fd >= 0) close(fd);
  assert_string_equal(gl_sock_any(), have6 ? "::" : "0.0.0.0");
  no_inet6 = 1;
  assert_string_equal(gl_sock_any(), "0.0.0.0");
  fd = gl_sock_listen("*", 0, 16, 0, &port, err, sizeof err);
  no_inet6 = 0;
  if (fd < 0) fail_msg("listen *: %s", err);
  assert_int_equal(gl_sock_name(fd, 0, ip, sizeof ip, &p2, &family), GL_OK);
  assert_string_equal(ip, "0.0.0.0");
  assert_int_equal(family, GL_FAMILY_INET);
  close(fd);
  if (!have6) return;
  fd = gl_sock_listen("*", 0, 16, 0, &port, err, sizeof err);
  if (fd < 0) fail_msg("listen *: %s", err);
  assert_int_equal(gl_sock_name(fd, 0, ip, sizeof ip, &p2, &family), GL_OK);
  assert_string_equal(ip, "::");
  assert_int_equal(family, GL_FAMILY_INET6);
  close(fd);
}

/* --- Unix sockets ----------------------------------------------------- */

static char dir[64]; /* the test's own folder, made by each Unix test */

static void make_dir(void) {
  snprintf(dir, sizeof dir, "/tmp/glisten-sock-XXXXXX");
  assert_non_null(mkdtemp(dir));
}

/* Removes what a test left in its folder, then the folder. */
static void remove_dir(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static const char *in_dir(const char *name) {
  static char path[96];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return path;
}

/* An accepted and a connected end of the Unix socket listening at l. */
static void unix_pair(int l, const char *path, int *accepted, int *connected) {
  char err[GL_ERRLEN];
  int c = gl_sock_connect_unix(path, err, sizeof err);
  if (c < 0) fail_msg("connect %s: %s", path, err);
  assert_nonblock_cloexec(c);
  assert_true(wait_fd(l, POLLIN, WAIT_MS) & POLLIN);
  int a = accept(l, NULL, NULL);
  assert_true(a >= 0);
  assert_true(wait_fd(c, POLLOUT, WAIT_MS) & POLLOUT);
  assert_int_equal(gl_sock_connect_result(c), GL_OK);
  *accepted = a;
  *connected = c;
}

static void test_unix_listen_names_cred(void **state) {
  char err[GL_ERRLEN], ip[GL_NAMELEN], want[GL_NAMELEN + 64];
  char key[64], text[GL_NAMELEN + 64];
  gl_sockfile file;
  struct stat st;
  int port = -1, family = 0, a, c;
  long pid, uid, gid;
  (void)state;
  make_dir();
  const char *path = in_dir("s.sock");
  int l = gl_sock_listen_unix(path, 16, 0640, &file, err, sizeof err);
  if (l < 0) fail_msg("listen: %s", err);
  assert_nonblock_cloexec(l);
  assert_true(file.made);
  assert_int_equal(lstat(path, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));
  assert_int_equal(st.st_mode & 0777, 0640);
  assert_int_equal(gl_sock_name(l, 0, ip, sizeof ip, &port, &family), GL_OK);
  assert_string_equal(ip, path);
  assert_int_equal(port, 0);
  assert_int_equal(family, GL_FAMILY_UNIX);

  unix_pair(l, path, &a, &c);
  /* the client's peer is the path; the accepted end's peer is unnamed */
  assert_int_equal(gl_sock_name(c, 1, ip, sizeof ip, &port, &family), GL_OK);
  assert_string_equal(ip, path);
  assert_int_equal(family, GL_FAMILY_UNIX);
  assert_int_equal(gl_sock_name(a, 1, ip, sizeof ip, &port, &family), GL_OK);
  assert_string_equal(ip, "");
  assert_int_equal(family, GL_FAMILY_UNIX);
  assert_int_equal(gl_sock_name(a, 0, ip, sizeof ip, &port, &family), GL_OK);
  assert_string_equal(ip, path);

  /* both ends are this process */
  assert_int_equal(gl_sock_peercred(a, &pid, &uid, &gid), GL_OK);
  assert_int_equal(pid, getpid());
  assert_int_equal(uid, getuid());
  assert_int_equal(gid, getgid());
  assert_int_equal(gl_sock_peercred(c, &pid, &uid, &gid), GL_OK);
  assert_int_equal(pid, getpid());

  /* a Unix peer is counted by its user, and logged with its path */
  assert_int_equal(gl_sock_peer_key(a, key, sizeof key), GL_OK);
  snprintf(want, sizeof want, "uid:%ld", (long)getuid());
  assert_string_equal(key, want);
  assert_int_equal(gl_sock_peer_text(a, text, sizeof text), GL_OK);
  snprintf(want, sizeof want, "unix:%s pid %ld uid %ld", path, (long)getpid(),
           (long)getuid());
  assert_string_equal(text, want);
  assert_int_equal(gl_sock_peer_text(c, text, sizeof text), GL_OK);
  assert_string_equal(text, want);

  /* the pair carries bytes */
  char buf[8];
  write_all(c, "ping", 4);
  assert_true(wait_fd(a, POLLIN, WAIT_MS) & POLLIN);
  assert_int_equal(read(a, buf, sizeof buf), 4);
  close(a);
  close(c);

  /* closed and removed: the file goes, and only once */
  close(l);
  gl_sock_unlink(path, &file);
  assert_false(file.made);
  assert_int_equal(lstat(path, &st), -1);
  assert_int_equal(errno, ENOENT);
  remove_dir();
}

/* A socket file nothing answers on is replaced; a live one, a file and a
 * folder are refused, and left as they were. */
static void test_unix_stale_live_other(void **state) {
  char err[GL_ERRLEN] = "";
  gl_sockfile file, file2;
  struct sockaddr_un sa;
  struct stat st;
  (void)state;
  make_dir();
  const char *path = in_dir("s.sock");

  /* stale: bound, never listening, closed without removing its file */
  int dead = socket(AF_UNIX, SOCK_STREAM, 0);
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  assert_int_equal(bind(dead, (struct sockaddr *)&sa, sizeof sa), 0);
  close(dead);
  assert_int_equal(lstat(path, &st), 0);
  int l = gl_sock_listen_unix(path, 16, -1, &file, err, sizeof err);
  if (l < 0) fail_msg("a stale file was not replaced: %s", err);

  /* live: refused, and the live server's file is still there */
  err[0] = 0;
  assert_int_equal(gl_sock_listen_unix(path, 16, -1, &file2, err, sizeof err),
                   -1);
  assert_contains(err, "cannot listen on unix:");
  assert_contains(err, "Address already in use");
  assert_false(file2.made);
  int a, c;
  unix_pair(l, path, &a, &c); /* and it still serves */
  close(a);
  close(c);

  /* a file of another server's since: closing leaves it alone */
  assert_int_equal(unlink(path), 0);
  int other = gl_sock_listen_unix(path, 16, -1, &file2, err, sizeof err);
  assert_true(other >= 0);
  close(l);
  gl_sock_unlink(path, &file);
  assert_int_equal(lstat(path, &st), 0);
  close(other);
  gl_sock_unlink(path, &file2);
  assert_int_equal(lstat(path, &st), -1);

  /* a plain file, and a folder: not sockets, not touched */
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fclose(f);
  err[0] = 0;
  assert_int_equal(gl_sock_listen_unix(path, 16, -1, &file, err, sizeof err),
                   -1);
  assert_contains(err, "exists and is a file, not a socket");
  assert_int_equal(lstat(path, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  err[0] = 0;
  assert_int_equal(gl_sock_listen_unix(dir, 16, -1, &file, err, sizeof err),
                   -1);
  assert_contains(err, "exists and is a directory, not a socket");
  remove_dir();
}

/* sun_path holds 107 bytes and a NUL: one more is refused, clearly. */
static void test_unix_path_length(void **state) {
  char err[GL_ERRLEN] = "", path[GL_NAMELEN + 8];
  gl_sockfile file;
  (void)state;
  make_dir();
  size_t n = strlen(dir);
  memcpy(path, dir, n);
  path[n] = '/';
  memset(path + n + 1, 'x', GL_UNIX_PATH_MAX - n - 1);
  path[GL_UNIX_PATH_MAX] = '\0';
  int l = gl_sock_listen_unix(path, 16, -1, &file, err, sizeof err);
  if (l < 0) fail_msg("a path of %d bytes: %s", GL_UNIX_PATH_MAX, err);
  int a, c;
  unix_pair(l, path, &a, &c);
  close(a);
  close(c);
  close(l);
  gl_sock_unlink(path, &file);
  strcat(path, "x");
  assert_int_equal(gl_sock_listen_unix(path, 16, -1, &file, err, sizeof err),
                   -1);
  assert_contains(err, "path too long (108 bytes, at most 107)");
  err[0] = 0;
  assert_int_equal(gl_sock_connect_unix(path, err, sizeof err), -1);
  assert_contains(err, "path too long (108 bytes, at most 107)");
  assert_int_equal(gl_sock_listen_unix("", 16, -1, &file, err, sizeof err), -1);
  assert_contains(err, "empty path");
  remove_dir();
}

/* "@NAME" is in the abstract namespace: no file, names with '@', a second
 * listener refused, nothing to remove. */
static void test_unix_abstract(void **state) {
  char err[GL_ERRLEN] = "", name[64], ip[GL_NAMELEN];
  gl_sockfile file, file2;
  int port, family, a, c;
  (void)state;
  snprintf(name, sizeof name, "@glisten-test-%ld", (long)getpid());
  int l = gl_sock_listen_unix(name, 16, 0600, &file, err, sizeof err);
  if (l < 0) fail_msg("listen %s: %s", name, err);
  assert_false(file.made);
  assert_int_equal(gl_sock_name(l, 0, ip, sizeof ip, &port, &family), GL_OK);
  assert_string_equal(ip, name);
  assert_int_equal(family, GL_FAMILY_UNIX);
  assert_int_equal(gl_sock_listen_unix(name, 16, -1, &file2, err, sizeof err),
                   -1);
  assert_contains(err, "Address already in use");
  unix_pair(l, name, &a, &c);
  assert_int_equal(gl_sock_name(c, 1, ip, sizeof ip, &port, &family), GL_OK);
  assert_string_equal(ip, name);
  close(a);
  close(c);
  close(l);
  /* nothing answers now */
  assert_int_equal(gl_sock_connect_unix(name, err, sizeof err), -1);
  assert_string_equal(err, strerror(ECONNREFUSED));
}

/* A copy is another descriptor of the same socket, close-on-exec. */
static void test_dup(void **state) {
  int port, port2, family;
  char ip[GL_NAMELEN];
  (void)state;
  int l = listen_loopback(&port);
  int d = gl_sock_dup(l);
  assert_true(d >= 0 && d != l);
  assert_nonblock_cloexec(d);
  assert_int_equal(gl_sock_name(d, 0, ip, sizeof ip, &port2, &family), GL_OK);
  assert_int_equal(port2, port);
  close(d);
  close(l);
  assert_int_equal(gl_sock_dup(-1), -EBADF);
}

/* --- options ---------------------------------------------------------- */

static void test_options_tcp(void **state) {
  int a, c, v, secs;
  long pid, uid, gid;
  (void)state;
  tcp_pair(&a, &c);
  /* accepted and connected ends: TCP_NODELAY on (gl_sock_tune), the rest
   * as the kernel gives them */
  gl_sock_tune(a);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_NODELAY, &v, &secs), GL_OK);
  assert_true(v);
  assert_int_equal(gl_sock_getopt(c, GL_OPT_NODELAY, &v, &secs), GL_OK);
  assert_true(v);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_KEEPALIVE, &v, &secs), GL_OK);
  assert_false(v);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_LINGER, &v, &secs), GL_OK);
  assert_false(v);

  assert_int_equal(gl_sock_setopt(a, GL_OPT_NODELAY, 0, 0), GL_OK);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_NODELAY, &v, &secs), GL_OK);
  assert_false(v);
  assert_int_equal(gl_sock_setopt(a, GL_OPT_KEEPALIVE, 1, 0), GL_OK);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_KEEPALIVE, &v, &secs), GL_OK);
  assert_true(v);
  assert_int_equal(gl_sock_setopt(a, GL_OPT_REUSEADDR, 1, 0), GL_OK);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_REUSEADDR, &v, &secs), GL_OK);
  assert_true(v);
  assert_int_equal(gl_sock_setopt(a, GL_OPT_LINGER, 1, 7), GL_OK);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_LINGER, &v, &secs), GL_OK);
  assert_true(v);
  assert_int_equal(secs, 7);
  assert_int_equal(gl_sock_setopt(a, GL_OPT_KEEPIDLE, 30, 0), GL_OK);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_KEEPIDLE, &v, &secs), GL_OK);
  assert_int_equal(v, 30);
  assert_int_equal(gl_sock_setopt(a, GL_OPT_KEEPINTVL, 5, 0), GL_OK);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_KEEPINTVL, &v, &secs), GL_OK);
  assert_int_equal(v, 5);
  assert_int_equal(gl_sock_setopt(a, GL_OPT_KEEPCNT, 3, 0), GL_OK);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_KEEPCNT, &v, &secs), GL_OK);
  assert_int_equal(v, 3);
  /* what the kernel refuses comes back as -errno */
  assert_int_equal(gl_sock_setopt(a, GL_OPT_KEEPIDLE, 0, 0), -EINVAL);
  assert_int_equal(gl_sock_setopt(a, 99, 1, 0), -EINVAL);
  assert_int_equal(gl_sock_setopt(-1, GL_OPT_NODELAY, 1, 0), -EBADF);
  /* TCP has no peer credentials */
  assert_int_equal(gl_sock_peercred(a, &pid, &uid, &gid), -ENOTSUP);
  close(a);
  close(c);
}

static void test_options_unix(void **state) {
  char err[GL_ERRLEN];
  gl_sockfile file;
  int a, c, v, secs;
  (void)state;
  make_dir();
  const char *path = in_dir("o.sock");
  int l = gl_sock_listen_unix(path, 16, -1, &file, err, sizeof err);
  assert_true(l >= 0);
  unix_pair(l, path, &a, &c);
  assert_int_equal(gl_sock_setopt(a, GL_OPT_NODELAY, 1, 0), -EOPNOTSUPP);
  assert_int_equal(gl_sock_getopt(a, GL_OPT_KEEPCNT, &v, &secs), -EOPNOTSUPP);
  assert_int_equal(gl_sock_setopt(a, GL_OPT_LINGER, 1, 2), GL_OK);
  close(a);
  close(c);
  close(l);
  gl_sock_unlink(path, &file);
  remove_dir();
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
      cmocka_unit_test(test_dual_stack_names_ipv4_as_ipv4),
      cmocka_unit_test(test_any_host),
      cmocka_unit_test(test_unix_listen_names_cred),
      cmocka_unit_test(test_unix_stale_live_other),
      cmocka_unit_test(test_unix_path_length),
      cmocka_unit_test(test_unix_abstract),
      cmocka_unit_test(test_dup),
      cmocka_unit_test(test_options_tcp),
      cmocka_unit_test(test_options_unix),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
