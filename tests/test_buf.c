/*
 * test_buf.c: gl_buf, the byte buffer behind a connection's input and
 * queued output.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "gl.h"

#if defined(__SANITIZE_ADDRESS__)
/* The -ENOMEM test asks malloc for 2^63 bytes; AddressSanitizer must answer
 * NULL as libc does instead of aborting the run. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "allocator_may_return_null=1";
}
#endif

/* The byte at stream position i: a pattern with no short period, so a
 * misplaced or repeated block shows. */
static char pat(size_t i) { return (char)(i % 251); }

static void fill(char *p, size_t from, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = pat(from + i);
}

/* Asserts the unread bytes of b are stream positions from .. from+len. */
static void assert_stream(const gl_buf *b, size_t from) {
  const char *h = gl_buf_head(b);
  for (size_t i = 0; i < b->len; i++)
    if (h[i] != pat(from + i))
      fail_msg("byte %zu of the buffer is wrong", i);
}

static void test_init_owns_nothing(void **state) {
  gl_buf b;
  (void)state;
  memset(&b, 0xab, sizeof b);
  gl_buf_init(&b);
  assert_null(b.data);
  assert_int_equal(b.off, 0);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.cap, 0);
  /* no storage: no pointer into it either (NULL + 0 is undefined) */
  assert_null(gl_buf_head(&b));
  assert_null(gl_buf_tail(&b));
  /* Reserving nothing allocates nothing. */
  assert_int_equal(gl_buf_reserve(&b, 0), GL_OK);
  assert_null(b.data);
  assert_int_equal(gl_buf_append(&b, "x", 0), GL_OK);
  assert_null(b.data);
  gl_buf_free(&b);
  gl_buf_free(&b); /* twice is harmless */
  assert_null(b.data);
}

static void test_reserve_append_consume(void **state) {
  gl_buf b;
  (void)state;
  gl_buf_init(&b);
  assert_int_equal(gl_buf_reserve(&b, 10), GL_OK);
  assert_non_null(b.data);
  assert_true(gl_buf_room(&b) >= 10);
  assert_int_equal(b.len, 0);

  assert_int_equal(gl_buf_append(&b, "hello", 5), GL_OK);
  assert_int_equal(b.len, 5);
  assert_memory_equal(gl_buf_head(&b), "hello", 5);
  assert_ptr_equal(gl_buf_tail(&b), gl_buf_head(&b) + 5);

  gl_buf_consume(&b, 2);
  assert_int_equal(b.off, 2);
  assert_int_equal(b.len, 3);
  assert_memory_equal(gl_buf_head(&b), "llo", 3);

  assert_int_equal(gl_buf_append(&b, " world", 6), GL_OK);
  assert_int_equal(b.len, 9);
  assert_memory_equal(gl_buf_head(&b), "llo world", 9);

  /* Writing through reserve + tail, as a read(2) into the buffer does. */
  assert_int_equal(gl_buf_reserve(&b, 3), GL_OK);
  memcpy(gl_buf_tail(&b), "!!!", 3);
  b.len += 3;
  assert_memory_equal(gl_buf_head(&b), "llo world!!!", 12);
  gl_buf_free(&b);
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.cap, 0);
}

static void test_consume_to_empty_resets_offset(void **state) {
  gl_buf b;
  (void)state;
  gl_buf_init(&b);
  assert_int_equal(gl_buf_append(&b, "abcdef", 6), GL_OK);
  char *data = b.data;
  size_t cap = b.cap;
  gl_buf_consume(&b, 4);
  assert_int_equal(b.off, 4);
  gl_buf_consume(&b, 2);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.off, 0); /* the whole storage is room again */
  assert_ptr_equal(b.data, data);
  assert_int_equal(gl_buf_room(&b), cap);

  /* Consuming more than is there empties too. */
  assert_int_equal(gl_buf_append(&b, "xyz", 3), GL_OK);
  gl_buf_consume(&b, 1);
  gl_buf_consume(&b, 100);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.off, 0);
  gl_buf_free(&b);
}

/* With enough space in front of the unread bytes, reserve slides them down
 * in the same storage rather than allocating. */
static void test_compaction_slides_down(void **state) {
  gl_buf b;
  char src[512];
  (void)state;
  gl_buf_init(&b);
  fill(src, 0, 400);
  assert_int_equal(gl_buf_append(&b, src, 400), GL_OK);
  size_t cap = b.cap;
  char *data = b.data;
  assert_true(cap >= 400);
  gl_buf_consume(&b, 300); /* 100 unread, 300 free in front */
  assert_int_equal(b.off, 300);
  size_t room = gl_buf_room(&b);
  size_t want = room + 100; /* more than fits behind, less than cap - len */
  assert_true(want <= cap - b.len);

  assert_int_equal(gl_buf_reserve(&b, want), GL_OK);
  assert_ptr_equal(b.data, data); /* no new storage */
  assert_int_equal(b.cap, cap);
  assert_int_equal(b.off, 0);
  assert_int_equal(b.len, 100);
  assert_true(gl_buf_room(&b) >= want);
  assert_stream(&b, 300);

  /* The same through append. */
  fill(src, 400, want);
  assert_int_equal(gl_buf_append(&b, src, want), GL_OK);
  assert_ptr_equal(b.data, data);
  assert_int_equal(b.len, 100 + want);
  assert_stream(&b, 300);
  gl_buf_free(&b);
}

/* Without room, storage grows (doubling) and keeps the unread bytes in
 * order at offset 0. */
static void test_growth(void **state) {
  gl_buf b;
  char src[4096];
  (void)state;
  gl_buf_init(&b);
  fill(src, 0, 400);
  assert_int_equal(gl_buf_append(&b, src, 400), GL_OK);
  size_t cap = b.cap;
  gl_buf_consume(&b, 10);
  fill(src, 400, 3 * cap);
  assert_true(3 * cap <= sizeof src);
  assert_int_equal(gl_buf_append(&b, src, 3 * cap), GL_OK);
  assert_true(b.cap >= 390 + 3 * cap);
  assert_true(b.cap > cap);
  assert_int_equal(b.cap % cap, 0); /* grown by doubling */
  assert_int_equal(b.off, 0);
  assert_int_equal(b.len, 390 + 3 * cap);
  assert_stream(&b, 10);

  /* Mostly full storage grows rather than sliding a large block around. */
  gl_buf_consume(&b, 1);
  size_t need = gl_buf_room(&b) + 2;
  assert_int_equal(gl_buf_reserve(&b, need), GL_OK);
  assert_true(gl_buf_room(&b) >= need);
  assert_stream(&b, 11);
  gl_buf_free(&b);
}

/* One append far larger than the storage, then a long run of appends and
 * partial consumes: the buffer is a FIFO of the exact bytes. */
static void test_large_appends(void **state) {
  enum { BIG = 10 << 20, STEP = 4097, TOTAL = 3 << 20 };
  gl_buf b;
  (void)state;
  char *src = malloc(BIG);
  assert_non_null(src);
  gl_buf_init(&b);
  fill(src, 0, BIG);
  assert_int_equal(gl_buf_append(&b, src, BIG), GL_OK);
  assert_int_equal(b.len, BIG);
  assert_true(b.cap >= BIG);
  assert_memory_equal(gl_buf_head(&b), src, BIG);
  gl_buf_free(&b);

  size_t in = 0, out = 0, peak = 0;
  while (in < TOTAL) {
    fill(src, in, STEP);
    assert_int_equal(gl_buf_append(&b, src, STEP), GL_OK);
    in += STEP;
    if (b.len > peak) peak = b.len;
    size_t take = STEP - 1000; /* consume a little less than arrives */
    /* First and last unread bytes each round; all of them at the end. */
    assert_int_equal(gl_buf_head(&b)[0], pat(out));
    assert_int_equal(gl_buf_tail(&b)[-1], pat(in - 1));
    gl_buf_consume(&b, take);
    out += take;
  }
  assert_int_equal(b.len, in - out);
  assert_stream(&b, out);
  /* Storage tracks what is unread, not what passed through. */
  assert_true(b.cap <= 2 * peak + 512);
  gl_buf_free(&b);
  free(src);
}

/* Sizes no allocation can satisfy fail with -ENOMEM and leave b as it
 * was. */
static void test_enomem(void **state) {
  gl_buf b;
  (void)state;
  gl_buf_init(&b);
  assert_int_equal(gl_buf_reserve(&b, SIZE_MAX), -ENOMEM);
  assert_null(b.data);
  assert_int_equal(b.cap, 0);

  assert_int_equal(gl_buf_append(&b, "abcdef", 6), GL_OK);
  gl_buf_consume(&b, 1);
  gl_buf saved = b;

  /* Past the overflow guard. */
  assert_int_equal(gl_buf_reserve(&b, SIZE_MAX), -ENOMEM);
  assert_int_equal(gl_buf_reserve(&b, SIZE_MAX - b.len), -ENOMEM);
  assert_int_equal(gl_buf_append(&b, "x", SIZE_MAX), -ENOMEM);
  /* Within the guard, but malloc cannot give 2^63 bytes. */
  assert_int_equal(gl_buf_reserve(&b, SIZE_MAX / 2 - b.len), -ENOMEM);
  assert_memory_equal(&b, &saved, sizeof b);
  assert_memory_equal(gl_buf_head(&b), "bcdef", 5);

  /* Still usable. */
  assert_int_equal(gl_buf_append(&b, "g", 1), GL_OK);
  assert_memory_equal(gl_buf_head(&b), "bcdefg", 6);
  gl_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_owns_nothing),
      cmocka_unit_test(test_reserve_append_consume),
      cmocka_unit_test(test_consume_to_empty_resets_offset),
      cmocka_unit_test(test_compaction_slides_down),
      cmocka_unit_test(test_growth),
      cmocka_unit_test(test_large_appends),
      cmocka_unit_test(test_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
