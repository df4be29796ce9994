/*
 * test_alloc.c: gl_alloc, the size-class heap behind the Lua states that
 * glisten-lua creates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"

#define A(a, p, o, n) gl_alloc_fn((a), (p), (o), (n))

static void fill(void *p, size_t n, unsigned seed) {
  unsigned char *b = p;
  for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(seed * 31 + i * 7);
}

static int check(const void *p, size_t n, unsigned seed) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != (unsigned char)(seed * 31 + i * 7)) return 0;
  return 1;
}

/* A freed small block is the next one given for its class, and only for
 * its class; blocks are aligned and do not overlap. */
static void test_reuse_by_class(void **state) {
  (void)state;
  gl_alloc *a = gl_alloc_new();
  gl_alloc_stats st;
  assert_non_null(a);
  char *p = A(a, NULL, 4 /* a type tag, not a size */, 40);
  char *q = A(a, NULL, 0, 40);
  assert_non_null(p);
  assert_non_null(q);
  assert_int_equal((uintptr_t)p % GL_ALLOC_GRAIN, 0);
  assert_int_equal((uintptr_t)q % GL_ALLOC_GRAIN, 0);
  assert_true(q >= p + 48 || p >= q + 48);
  gl_alloc_get_stats(a, &st);
  assert_int_equal(st.small, 96);
  assert_null(A(a, p, 40, 0));
  char *r = A(a, NULL, 0, 100); /* another class: not p */
  assert_ptr_not_equal(r, p);
  char *s = A(a, NULL, 0, 33); /* 33..48 share p's class */
  assert_ptr_equal(s, p);
  A(a, q, 40, 0);
  A(a, r, 100, 0);
  A(a, s, 33, 0);
  gl_alloc_get_stats(a, &st);
  assert_int_equal(st.small, 0);
  assert_int_equal(st.large, 0);
  assert_int_equal(st.chunks, GL_ALLOC_CHUNK);
  assert_null(A(a, NULL, 0, 0)); /* freeing nothing is fine */
  gl_alloc_free(a);
}

/* Resizing keeps the bytes, across classes and across the small/large
 * line, both ways; within a class it keeps the block. */
static void test_resize_keeps_bytes(void **state) {
  (void)state;
  gl_alloc *a = gl_alloc_new();
  gl_alloc_stats st;
  size_t sizes[] = {1, 16, 17, 100, 512, 513, 5000, 300, 20, 70000, 8};
  char *p = A(a, NULL, 0, 10);
  size_t n = 10;
  fill(p, n, 1);
  char *same = A(a, p, 10, 16);
  assert_ptr_equal(same, p);
  n = 16;
  fill(p, n, 1);
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    char *q = A(a, p, n, sizes[i]);
    assert_non_null(q);
    assert_true(check(q, n < sizes[i] ? n : sizes[i], 1));
    p = q;
    n = sizes[i];
    fill(p, n, 1);
  }
  gl_alloc_get_stats(a, &st);
  assert_int_equal(st.small, 16);
  assert_int_equal(st.large, 0);
  A(a, p, n, 0);
  gl_alloc_get_stats(a, &st);
  assert_int_equal(st.small, 0);
  gl_alloc_free(a);
}

/* Many live blocks of every size, resized and freed at random, keep their
 * contents; the heap ends empty and held only what the peak needed. */
static void test_random_workload(void **state) {
  (void)state;
  enum { N = 4000, ROUNDS = 60000 };
  static char *blk[N];
  static size_t len[N];
  static unsigned seed[N];
  gl_alloc *a = gl_alloc_new();
  gl_alloc_stats st;
  unsigned r = 12345;
  size_t peak_small = 0;
  for (int k = 0; k < ROUNDS; k++) {
    r = r * 1103515245u + 12345u;
    int i = (int)((r >> 8) % N);
    size_t n = (r >> 20) % 3 == 0 ? 1 + (r >> 4) % 2000 : 1 + (r >> 4) % 200;
    if (blk[i]) assert_true(check(blk[i], len[i], seed[i]));
    if ((r >> 28) % 4 == 0) { /* free */
      A(a, blk[i], len[i], 0);
      blk[i] = NULL;
      len[i] = 0;
      continue;
    }
    char *q = A(a, blk[i], len[i], n);
    assert_non_null(q);
    if (blk[i]) assert_true(check(q, len[i] < n ? len[i] : n, seed[i]));
    blk[i] = q;
    len[i] = n;
    seed[i] = (unsigned)k;
    fill(q, n, seed[i]);
    gl_alloc_get_stats(a, &st);
    if (st.small > peak_small) peak_small = st.small;
  }
  for (int i = 0; i < N; i++) {
    if (blk[i]) assert_true(check(blk[i], len[i], seed[i]));
    A(a, blk[i], len[i], 0);
  }
  gl_alloc_get_stats(a, &st);
  assert_int_equal(st.small, 0);
  assert_int_equal(st.large, 0);
  /* the chunks hold the peak and not much more (the tail of each chunk is
   * reused, so the waste is the chunk headers and the unused last chunk) */
  assert_true(st.chunks <= peak_small + peak_small / 8 + 2 * GL_ALLOC_CHUNK);
  gl_alloc_free(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reuse_by_class),
      cmocka_unit_test(test_resize_keeps_bytes),
      cmocka_unit_test(test_random_workload),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
