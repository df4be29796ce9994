/*
 * test_addrs.c: gl_addrs, open connections counted by client address.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "addrs.h"

static void takes_up_to_max_then_refuses(void **state) {
  gl_addrs *t = gl_addrs_new();
  gl_addr *e[3];
  int full;
  (void)state;
  assert_non_null(t);
  for (int i = 0; i < 3; i++) {
    e[i] = gl_addrs_take(t, "10.0.0.1", 8, 3, &full);
    assert_non_null(e[i]);
    assert_int_equal(full, 0);
  }
  assert_null(gl_addrs_take(t, "10.0.0.1", 8, 3, &full));
  assert_int_equal(full, 1);
  /* another address has its own count */
  gl_addr *o = gl_addrs_take(t, "10.0.0.2", 8, 3, &full);
  assert_non_null(o);
  assert_int_equal(gl_addrs_count(t, "10.0.0.1", 8), 3);
  /* one given back: one more may come, and no other */
  gl_addrs_give(t, e[1]);
  assert_int_equal(gl_addrs_count(t, "10.0.0.1", 8), 2);
  e[1] = gl_addrs_take(t, "10.0.0.1", 8, 3, &full);
  assert_non_null(e[1]);
  assert_null(gl_addrs_take(t, "10.0.0.1", 8, 3, &full));
  for (int i = 0; i < 3; i++) gl_addrs_give(t, e[i]);
  gl_addrs_give(t, o);
  assert_int_equal(gl_addrs_count(t, "10.0.0.1", 8), 0);
  assert_int_equal(gl_addrs_count(t, "10.0.0.2", 8), 0);
  gl_addrs_free(t);
}

/* Many addresses (the table grows several times), each counted right,
 * and every entry gone once given back (ASan would see a leak). */
static void counts_many_addresses_across_growth(void **state) {
  enum { N = 5000 };
  static gl_addr *e[N][2];
  gl_addrs *t = gl_addrs_new();
  char k[32];
  int full;
  (void)state;
  for (int i = 0; i < N; i++) {
    int n = snprintf(k, sizeof k, "2001:db8::%x", i);
    e[i][0] = gl_addrs_take(t, k, (size_t)n, 2, &full);
    e[i][1] = gl_addrs_take(t, k, (size_t)n, 2, &full);
    assert_non_null(e[i][0]);
    assert_ptr_equal(e[i][0], e[i][1]);
  }
  for (int i = 0; i < N; i++) {
    int n = snprintf(k, sizeof k, "2001:db8::%x", i);
    assert_int_equal(gl_addrs_count(t, k, (size_t)n), 2);
    assert_null(gl_addrs_take(t, k, (size_t)n, 2, &full));
    assert_int_equal(full, 1);
  }
  for (int i = 0; i < N; i += 2) {
    gl_addrs_give(t, e[i][0]);
    gl_addrs_give(t, e[i][1]);
  }
  for (int i = 0; i < N; i++) {
    int n = snprintf(k, sizeof k, "2001:db8::%x", i);
    assert_int_equal(gl_addrs_count(t, k, (size_t)n), i % 2 ? 2 : 0);
  }
  gl_addrs_free(t); /* frees the odd ones still taken */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(takes_up_to_max_then_refuses),
      cmocka_unit_test(counts_many_addresses_across_growth),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
