/*
 * test_listener.c: the accept loop on a real 127.0.0.1 listener.
 *
 * accept4 is wrapped at link time (-Wl,--wrap=accept4): __wrap_accept4
 * counts calls and fails with queued errnos before passing through to the
 * real call, so the error paths run against a real kernel backlog.
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
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "gl.h"
#include "helpers.h"
#include "listener.h"
#include "log.h"

/* --- accept4 injection --------------------------------------------------- */

int __real_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags);
int __wrap_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags);

static int inject[16];
static int inject_len, inject_next;
static int accept_calls; /* every accept4, injected or real */

/* Fails the next accept4 calls with errs[0..n), in order. */
static void inject_errors(const int *errs, int n) {
  assert_true(n <= (int)(sizeof inject / sizeof inject[0]));
  memcpy(inject, errs, (size_t)n * sizeof *errs);
  inject_len = n;
  inject_next = 0;
}

int __wrap_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags) {
  accept_calls++;
  if (inject_next < inject_len) {
    errno = inject[inject_next++];
    return -1;
  }
  return __real_accept4(fd, sa, len, flags);
}

/* --- fixture ------------------------------------------------------------- */

#define MAX_FDS 256

typedef struct fixture {
  struct ev_loop *loop;
  gl_stats stats;
  gl_listener l;
  int accepted;           /* descriptors on_accept received */
  int fds[MAX_FDS];       /* them, closed at teardown */
  int clients[MAX_FDS];   /* connecting ends */
  int nclients;
  int bad_fd;             /* an accepted fd lacked O_NONBLOCK, ... */
  int pause_at;           /* on_accept pauses at this count (0 = never) */
  int close_at;           /* on_accept closes the listener at this count */
  int target;             /* what run_until_accepted waits for */
  int warnings;           /* GL_LOG_WARN messages */
  char last_log[512];
} fixture;

static void on_accept(gl_listener *l, int fd) {
  fixture *f = l->data;
  int on = 0;
  socklen_t len = sizeof on;
  assert_true(f->accepted < MAX_FDS);
  f->fds[f->accepted++] = fd;
  if (!(fcntl(fd, F_GETFL) & O_NONBLOCK) || !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
    f->bad_fd = 1;
  if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) < 0 || !on)
    f->bad_fd = 1;
  if (f->pause_at && f->accepted == f->pause_at) gl_listener_pause(l, 1);
  if (f->close_at && f->accepted == f->close_at) gl_listener_close(l);
}

static void capture_log(void *ud, int level, const char *msg) {
  fixture *f = ud;
  if (level == GL_LOG_WARN) f->warnings++;
  snprintf(f->last_log, sizeof f->last_log, "%s", msg);
}

static int setup(void **state) {
  char err[GL_ERRLEN];
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->loop = ev_loop_new(EVFLAG_AUTO);
  if (!f->loop) return -1;
  gl_log_set(capture_log, f);
  if (gl_listener_open(&f->l, f->loop, "127.0.0.1", 0, 256, 0, on_accept, f,
                       err, sizeof err) != GL_OK) {
    fprintf(stderr, "listen: %s\n", err);
    return -1;
  }
  f->l.stats = &f->stats;
  inject_len = inject_next = 0;
  accept_calls = 0;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  gl_listener_close(&f->l);
  for (int i = 0; i < f->accepted; i++) close(f->fds[i]);
  for (int i = 0; i < f->nclients; i++) close(f->clients[i]);
  ev_loop_destroy(f->loop);
  gl_log_set(NULL, NULL);
  free(f);
  return 0;
}

/* Connections waiting in the listener's accept queue (Linux reports it as
 * tcpi_unacked of a listening socket). */
static int backlog_len(int lfd) {
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  memset(&ti, 0, sizeof ti);
  if (getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) return -1;
  return (int)ti.tcpi_unacked;
}

/* Opens n connections and waits (bounded) until all of them sit in the
 * accept queue, so that one loop iteration sees them at once. */
static void connect_clients(fixture *f, int n) {
  char err[GL_ERRLEN];
  struct timespec ms = {0, 1000000};
  assert_true(f->nclients + n <= MAX_FDS);
  for (int i = 0; i < n; i++) {
    int fd = gl_sock_connect("127.0.0.1", f->l.port, err, sizeof err);
    if (fd < 0) fail_msg("connect: %s", err);
    f->clients[f->nclients++] = fd;
  }
  int want = f->nclients - f->accepted;
  for (int i = 0; i < WAIT_MS; i++) {
    int q = backlog_len(f->l.fd);
    assert_true(q >= 0);
    if (q >= want) return;
    nanosleep(&ms, NULL);
  }
  fail_msg("only %d of %d connections reached the accept queue",
           backlog_len(f->l.fd), want);
}

static int accepted_reaches(void *arg) {
  fixture *f = arg;
  return f->accepted >= f->target;
}

/* Runs the loop until `n` connections in all were accepted (bounded). */
static void run_until_accepted(fixture *f, int n) {
  f->target = n;
  if (!run_until(f->loop, accepted_reaches, f, WAIT_S))
    fail_msg("accepted %d of %d", f->accepted, n);
}

/* --- tests --------------------------------------------------------------- */

static void test_accepts_real_connections(void **state) {
  fixture *f = *state;
  char ip[64], buf[8];
  int port, family;
  assert_true(f->l.port > 0);
  assert_int_equal(gl_sock_name(f->l.fd, 0, ip, sizeof ip, &port, &family),
                   GL_OK);
  assert_int_equal(port, f->l.port);
  assert_true(ev_is_active(&f->l.io));

  connect_clients(f, 3);
  run_until_accepted(f, 3);
  assert_int_equal(f->accepted, 3);
  assert_int_equal(f->stats.accepted, 3);
  assert_int_equal(f->stats.accept_errors, 0);
  assert_false(f->bad_fd);

  /* Each accepted descriptor is the far end of one of the clients. */
  for (int i = 0; i < 3; i++) {
    int peer_port, local_port, found = 0;
    assert_int_equal(gl_sock_name(f->fds[i], 1, ip, sizeof ip, &peer_port,
                                  &family), GL_OK);
    assert_string_equal(ip, "127.0.0.1");
    for (int j = 0; j < 3; j++) {
      assert_int_equal(gl_sock_name(f->clients[j], 0, ip, sizeof ip,
                                    &local_port, &family), GL_OK);
      if (local_port == peer_port) {
        write_all(f->clients[j], "x", 1);
        assert_true(wait_fd(f->fds[i], POLLIN, WAIT_MS) & POLLIN);
        assert_int_equal(read(f->fds[i], buf, sizeof buf), 1);
        found++;
      }
    }
    assert_int_equal(found, 1);
  }
}

/* More than GL_ACCEPT_PER_WAKE connections pending: one wake-up accepts
 * exactly that many, the rest wait for the next. */
static void test_per_wake_bound(void **state) {
  fixture *f = *state;
  enum { N = GL_ACCEPT_PER_WAKE + 36 };
  assert_int_equal(f->l.per_wake, GL_ACCEPT_PER_WAKE);
  connect_clients(f, N);
  assert_int_equal(backlog_len(f->l.fd), N);

  int calls = accept_calls;
  ev_run(f->loop, EVRUN_NOWAIT);
  assert_int_equal(f->accepted, GL_ACCEPT_PER_WAKE);
  assert_int_equal(accept_calls - calls, GL_ACCEPT_PER_WAKE);
  assert_int_equal(backlog_len(f->l.fd), N - GL_ACCEPT_PER_WAKE);
  assert_true(ev_is_active(&f->l.io));

  ev_run(f->loop, EVRUN_NOWAIT);
  assert_int_equal(f->accepted, N);
  ev_run(f->loop, EVRUN_NOWAIT);
  assert_int_equal(f->accepted, N);
  assert_int_equal(f->stats.accepted, N);
  assert_false(f->bad_fd);
}

static void test_pause_resume(void **state) {
  fixture *f = *state;
  gl_listener_pause(&f->l, 1);
  assert_false(ev_is_active(&f->l.io));
  connect_clients(f, 1);
  run_for(f->loop, 0.05);
  assert_int_equal(f->accepted, 0);
  assert_int_equal(accept_calls, 0);
  assert_int_equal(backlog_len(f->l.fd), 1); /* still waiting in the kernel */

  gl_listener_pause(&f->l, 0);
  assert_true(ev_is_active(&f->l.io));
  run_until_accepted(f, 1);

  /* Pausing from inside on_accept stops the current wake-up at once. */
  f->pause_at = 3;
  connect_clients(f, 5);
  ev_run(f->loop, EVRUN_NOWAIT);
  assert_int_equal(f->accepted, 3);
  assert_false(ev_is_active(&f->l.io));
  run_for(f->loop, 0.02);
  assert_int_equal(f->accepted, 3);
  f->pause_at = 0;
  gl_listener_pause(&f->l, 0);
  run_until_accepted(f, 6);
  assert_int_equal(f->stats.accepted, 6);
}

/* on_accept may close the listener; the wake-up ends there. */
static void test_close_inside_on_accept(void **state) {
  fixture *f = *state;
  f->close_at = 1;
  connect_clients(f, 3);
  ev_run(f->loop, EVRUN_NOWAIT);
  assert_int_equal(f->accepted, 1);
  assert_int_equal(f->l.fd, -1);
  assert_false(ev_is_active(&f->l.io));
  assert_false(ev_is_active(&f->l.retry));
  gl_listener_close(&f->l); /* twice is harmless */
  assert_int_equal(f->l.fd, -1);
}

/* Asserts f's listener is backing off: not watching the socket, retry
 * armed. */
static void assert_backing_off(fixture *f) {
  assert_true(f->l.backing_off);
  assert_false(ev_is_active(&f->l.io));
  assert_true(ev_is_active(&f->l.retry));
  assert_true(ev_timer_remaining(f->loop, &f->l.retry) <=
              GL_ACCEPT_BACKOFF + 1e-6);
}

static void assert_accepting(fixture *f) {
  assert_false(f->l.backing_off);
  assert_true(ev_is_active(&f->l.io));
  assert_false(ev_is_active(&f->l.retry));
}

/* A resource shortage on accept: back off, log once, keep the client in
 * the backlog and accept it when the retry timer fires. */
static void check_shortage(fixture *f, int err) {
  char want[128];
  int before = f->accepted;
  unsigned long long errors = f->stats.accept_errors;
  int warnings = f->warnings;
  connect_clients(f, 1);
  inject_errors(&err, 1);
  int calls = accept_calls;
  ev_run(f->loop, EVRUN_NOWAIT);
  assert_int_equal(accept_calls - calls, 1);
  assert_int_equal(f->accepted, before);
  assert_int_equal(f->stats.accept_errors, errors + 1);
  assert_backing_off(f);
  assert_int_equal(f->warnings, warnings + 1);
  snprintf(want, sizeof want, "accept on port %d: %s", f->l.port,
           strerror(err));
  if (!strstr(f->last_log, want))
    fail_msg("log \"%s\" lacks \"%s\"", f->last_log, want);

  /* Never spin: more loop iterations make no accept4 calls while backing
   * off (and at most the retry's, should the back-off run out meanwhile). */
  for (int i = 0; i < 50; i++) ev_run(f->loop, EVRUN_NOWAIT);
  if (f->l.backing_off) assert_int_equal(accept_calls - calls, 1);
  assert_true(accept_calls - calls <= 3);

  run_until_accepted(f, before + 1);
  assert_accepting(f);
  /* The failed call, the accept, the EAGAIN that ends the wake-up. */
  assert_true(accept_calls - calls <= 3);
  assert_int_equal(backlog_len(f->l.fd), 0);
  assert_int_equal(f->stats.accept_errors, errors + 1);
  assert_false(f->bad_fd);
}

static void test_emfile_backs_off(void **state) {
  check_shortage(*state, EMFILE);
}

static void test_enfile_enobufs_enomem_back_off(void **state) {
  fixture *f = *state;
  check_shortage(f, ENFILE);
  check_shortage(f, ENOBUFS);
  check_shortage(f, ENOMEM);
  assert_int_equal(f->accepted, 3);
}

/* A shortage lasting several retries costs one accept4 call per retry. */
static void test_lasting_shortage_does_not_spin(void **state) {
  fixture *f = *state;
  const int errs[] = {EMFILE, EMFILE, EMFILE};
  connect_clients(f, 1);
  inject_errors(errs, 3);
  run_until_accepted(f, 1);
  assert_int_equal(f->stats.accept_errors, 3);
  assert_true(accept_calls <= 5); /* 3 failures, 1 accept, 1 EAGAIN */
  assert_int_equal(f->warnings, 1); /* logged once per shortage */
  assert_accepting(f);
}

/* Errors about one connection are counted and skipped: the next pending
 * connection is accepted in the same wake-up, with no back-off. */
static void test_per_connection_errors_skipped(void **state) {
  fixture *f = *state;
  const int errs[] = {ECONNABORTED, EINTR, EPROTO, EPERM};
  connect_clients(f, 1);
  inject_errors(errs, 4);
  ev_run(f->loop, EVRUN_NOWAIT);
  assert_int_equal(f->accepted, 1);
  assert_int_equal(f->stats.accept_errors, 4);
  assert_accepting(f);
  assert_int_equal(f->warnings, 0);

  const int one[] = {ECONNABORTED};
  connect_clients(f, 2);
  inject_errors(one, 1);
  ev_run(f->loop, EVRUN_NOWAIT);
  assert_int_equal(f->accepted, 3);
  assert_int_equal(f->stats.accept_errors, 5);
  assert_accepting(f);
  assert_false(f->bad_fd);
}

/* A back-off ending while the owner has paused the listener leaves it
 * paused; resuming then accepts. */
static void test_pause_during_back_off(void **state) {
  fixture *f = *state;
  const int err = EMFILE;
  connect_clients(f, 1);
  inject_errors(&err, 1);
  ev_run(f->loop, EVRUN_NOWAIT);
  assert_backing_off(f);
  gl_listener_pause(&f->l, 1);
  gl_listener_pause(&f->l, 0); /* does not cut the back-off short */
  assert_backing_off(f);
  gl_listener_pause(&f->l, 1);
  int retry_active = 1;
  for (int i = 0; i < 1000 && retry_active; i++) {
    ev_run(f->loop, EVRUN_ONCE); /* the retry timer is the only watcher */
    retry_active = ev_is_active(&f->l.retry);
  }
  assert_false(retry_active);
  assert_false(f->l.backing_off);
  assert_false(ev_is_active(&f->l.io));
  assert_int_equal(f->accepted, 0);
  gl_listener_pause(&f->l, 0);
  run_until_accepted(f, 1);
}

/* Closing while backing off stops the retry timer too. */
static void test_close_during_back_off(void **state) {
  fixture *f = *state;
  const int err = ENFILE;
  connect_clients(f, 1);
  inject_errors(&err, 1);
  ev_run(f->loop, EVRUN_NOWAIT);
  assert_backing_off(f);
  gl_listener_close(&f->l);
  assert_false(ev_is_active(&f->l.retry));
  assert_false(ev_is_active(&f->l.io));
  run_for(f->loop, GL_ACCEPT_BACKOFF * 2);
  assert_int_equal(f->accepted, 0);
  assert_false(ev_is_active(&f->l.io));
}

static void test_open_failure(void **state) {
  fixture *f = *state;
  char err[GL_ERRLEN] = "", want[64];
  gl_listener l2;
  assert_int_equal(gl_listener_open(&l2, f->loop, "127.0.0.1", f->l.port,
                                    16, 0, on_accept, f, err, sizeof err),
                   GL_ERR);
  assert_int_equal(l2.fd, -1);
  snprintf(want, sizeof want, "127.0.0.1:%d", f->l.port);
  assert_non_null(strstr(err, want));
  assert_non_null(strstr(err, "Address already in use"));
  gl_listener_close(&l2);
  gl_listener_close(&l2);
}


/* --- Unix sockets -------------------------------------------------------- */

typedef struct unix_fixture {
  int accepted[8];
  int n;
} unix_fixture;

static void on_unix_accept(gl_listener *l, int fd) {
  unix_fixture *u = l->data;
  assert_true(u->n < 8);
  assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
  assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  u->accepted[u->n++] = fd;
}

static int unix_accepted(void *arg) { return ((unix_fixture *)arg)->n > 0; }

/* Connects to path and runs loop until l's fixture accepted it. */
static void unix_connect_accept(struct ev_loop *loop, const char *path,
                                unix_fixture *u) {
  char err[GL_ERRLEN];
  int c = gl_sock_connect_unix(path, err, sizeof err);
  if (c < 0) fail_msg("connect %s: %s", path, err);
  u->n = 0;
  assert_true(run_until(loop, unix_accepted, u, WAIT_S));
  close(u->accepted[0]);
  close(c);
}

/* A Unix listener accepts, its copies (gl_listener_adopt) accept on the
 * same socket, and only the listener that made the file removes it when
 * it closes; a second listener on a live path is refused. */
static void test_unix_listener(void **state) {
  char dir[] = "/tmp/glisten-listener-XXXXXX", path[64], err[GL_ERRLEN] = "";
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  gl_listener l, copy, again;
  unix_fixture u = {{0}, 0}, uc = {{0}, 0};
  struct stat st;
  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/l.sock", dir);
  assert_int_equal(gl_listener_open_unix(&l, loop, path, 0600, 16,
                                         on_unix_accept, &u, err, sizeof err),
                   GL_OK);
  assert_string_equal(l.path, path);
  assert_int_equal(l.port, 0);
  assert_int_equal(lstat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  unix_connect_accept(loop, path, &u);

  assert_int_equal(gl_listener_open_unix(&again, loop, path, -1, 16,
                                         on_unix_accept, &u, err, sizeof err),
                   GL_ERR);
  assert_int_equal(again.fd, -1);
  assert_non_null(strstr(err, "Address already in use"));
  gl_listener_close(&again);

  /* a copy of the socket: while the first is paused, the copy accepts */
  int fd = gl_sock_dup(l.fd);
  assert_true(fd >= 0);
  assert_int_equal(gl_listener_adopt(&copy, loop, fd, on_unix_accept, &uc),
                   GL_OK);
  assert_string_equal(copy.path, path);
  gl_listener_pause(&l, 1);
  unix_connect_accept(loop, path, &uc);
  gl_listener_close(&copy); /* the copy leaves the file */
  assert_int_equal(lstat(path, &st), 0);
  gl_listener_pause(&l, 0);
  unix_connect_accept(loop, path, &u);

  gl_listener_close(&l); /* the one that made it removes it */
  assert_int_equal(lstat(path, &st), -1);
  assert_int_equal(errno, ENOENT);
  gl_listener_close(&l);
  assert_int_equal(gl_listener_adopt(&copy, loop, -1, on_unix_accept, &uc),
                   -EBADF);
  ev_loop_destroy(loop);
  assert_int_equal(rmdir(dir), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_accepts_real_connections, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_per_wake_bound, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_inside_on_accept, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_emfile_backs_off, setup, teardown),
      cmocka_unit_test_setup_teardown(test_enfile_enobufs_enomem_back_off,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_lasting_shortage_does_not_spin,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_per_connection_errors_skipped,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_pause_during_back_off, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_close_during_back_off, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_open_failure, setup, teardown),
      cmocka_unit_test(test_unix_listener),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
