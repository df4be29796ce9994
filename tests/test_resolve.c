/*
 * test_resolve.c: name lookups off the loop's thread (core/resolve.c) and
 * numeric addresses at once (gl_sock_numeric). Only names in /etc/hosts
 * ("localhost") are looked up, so no query leaves the machine.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"
#include "resolve.h"
#include "sock.h"

typedef struct seen {
  int calls, found, port_ok;
  pthread_t thread;
  int in_start; /* set while gl_lookup_start runs */
  int during_start;
} seen;

static void on_done(gl_lookup *q) {
  seen *s = q->data;
  s->calls++;
  s->thread = pthread_self();
  if (s->in_start) s->during_start = 1;
  for (struct addrinfo *ai = q->addrs; ai; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      struct sockaddr_in *a = (struct sockaddr_in *)ai->ai_addr;
      if (a->sin_addr.s_addr == htonl(INADDR_LOOPBACK)) s->found++;
      if (ntohs(a->sin_port) == 4242) s->port_ok = 1;
    }
  }
}

static int got_calls(void *arg) { return ((seen *)arg)->calls > 0; }

/* "localhost" resolves, on a thread, and the result comes back on the
 * loop's thread, never from inside gl_lookup_start. */
static void test_lookup_localhost(void **state) {
  (void)state;
  struct ev_loop *loop = ev_loop_new(0);
  gl_resolver *r = gl_resolver_new(loop);
  seen s = {0};
  assert_non_null(r);
  s.in_start = 1;
  assert_non_null(gl_lookup_start(r, "localhost", 4242, on_done, &s));
  s.in_start = 0;
  assert_true(run_until(loop, got_calls, &s, WAIT_S));
  assert_int_equal(s.calls, 1);
  assert_int_equal(s.during_start, 0);
  assert_true(pthread_equal(s.thread, pthread_self()));
  assert_true(s.found > 0);
  assert_true(s.port_ok);
  gl_resolver_free(r);
  ev_loop_destroy(loop);
}

typedef struct many {
  seen s[40];
} many;

static int all_done(void *arg) {
  many *m = arg;
  for (int i = 0; i < 40; i++)
    if (m->s[i].calls != 1) return 0;
  return 1;
}

/* More lookups than run at a time: each is reported once. */
static void test_many_lookups(void **state) {
  (void)state;
  struct ev_loop *loop = ev_loop_new(0);
  gl_resolver *r = gl_resolver_new(loop);
  static many m;
  memset(&m, 0, sizeof m);
  for (int i = 0; i < 40; i++)
    assert_non_null(gl_lookup_start(r, "localhost", 4242, on_done, &m.s[i]));
  assert_true(run_until(loop, all_done, &m, WAIT_S));
  for (int i = 0; i < 40; i++) assert_true(m.s[i].found > 0);
  gl_resolver_free(r);
  ev_loop_destroy(loop);
}

/* A cancelled lookup never reports, and neither it nor an idle resolver
 * keeps the loop running: ev_run returns by itself. */
static void test_cancel_and_idle(void **state) {
  (void)state;
  struct ev_loop *loop = ev_loop_new(0);
  gl_resolver *r = gl_resolver_new(loop);
  seen s[20] = {{0}};
  gl_lookup *q[20];
  ev_run(loop, 0); /* idle: returns at once */
  for (int i = 0; i < 20; i++) /* some run, some wait their turn */
    q[i] = gl_lookup_start(r, "localhost", 1, on_done, &s[i]);
  for (int i = 0; i < 20; i += 2) gl_lookup_cancel(q[i]);
  ev_tstamp end = ev_time() + WAIT_S;
  while (ev_time() < end && ev_run(loop, EVRUN_ONCE)) {
  }
  for (int i = 0; i < 20; i++) assert_int_equal(s[i].calls, i % 2);
  gl_resolver_free(r);
  ev_loop_destroy(loop);
}

/* Ends a bounded ev_run: notes that the bound was reached. */
static void on_guard(EV_P_ ev_timer *w, int revents) {
  (void)revents;
  *(int *)w->data = 1;
  ev_break(EV_A_ EVBREAK_ALL);
}

/* Freeing a resolver with lookups in flight (some running, some waiting
 * their turn) reports none of them, not even when the loop runs afterwards;
 * leaves nothing that keeps the loop running (ev_run returns by itself
 * instead of waiting for a guard timer that does not hold the loop); and
 * the loop serves a new resolver as before. */
static void test_free_in_flight(void **state) {
  (void)state;
  struct ev_loop *loop = ev_loop_new(0);
  gl_resolver *r = gl_resolver_new(loop);
  seen s[GL_LOOKUP_THREADS + 4] = {{0}}, later = {0};
  const int n = GL_LOOKUP_THREADS + 4;
  ev_timer guard;
  int expired = 0;
  for (int i = 0; i < n; i++)
    assert_non_null(gl_lookup_start(r, "localhost", 1, on_done, &s[i]));
  gl_resolver_free(r);
  for (int i = 0; i < n; i++) assert_int_equal(s[i].calls, 0);

  ev_timer_init(&guard, on_guard, WAIT_S, 0.);
  guard.data = &expired;
  ev_timer_start(loop, &guard);
  ev_unref(loop); /* the guard alone does not keep ev_run going */
  ev_run(loop, 0);
  ev_ref(loop);
  ev_timer_stop(loop, &guard);
  assert_int_equal(expired, 0); /* a freed resolver still held the loop */
  for (int i = 0; i < n; i++) assert_int_equal(s[i].calls, 0);

  r = gl_resolver_new(loop);
  assert_non_null(r);
  assert_non_null(gl_lookup_start(r, "localhost", 4242, on_done, &later));
  assert_true(run_until(loop, got_calls, &later, WAIT_S));
  assert_int_equal(later.calls, 1);
  assert_true(later.found > 0);
  for (int i = 0; i < n; i++) assert_int_equal(s[i].calls, 0);
  gl_resolver_free(r);
  ev_loop_destroy(loop);
}

/* Numeric hosts resolve at once; a name asks for a lookup. */
static void test_numeric(void **state) {
  (void)state;
  struct addrinfo *res = NULL;
  char err[GL_ERRLEN];
  assert_int_equal(gl_sock_numeric("127.0.0.1", 80, &res, err, sizeof err), GL_OK);
  assert_non_null(res);
  assert_int_equal(res->ai_family, AF_INET);
  freeaddrinfo(res);
  assert_int_equal(gl_sock_numeric("::1", 80, &res, err, sizeof err), GL_OK);
  assert_int_equal(res->ai_family, AF_INET6);
  freeaddrinfo(res);
  assert_int_equal(gl_sock_numeric("localhost", 80, &res, err, sizeof err), GL_AGAIN);
  assert_int_equal(gl_sock_numeric("127.0.0.1", 70000, &res, err, sizeof err), GL_ERR);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lookup_localhost),
      cmocka_unit_test(test_many_lookups),
      cmocka_unit_test(test_cancel_and_idle),
      cmocka_unit_test(test_free_in_flight),
      cmocka_unit_test(test_numeric),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
