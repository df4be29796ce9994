/*
 * test_frame.c: gl_frame_line, the line framing behind receive("*l") and
 * receive("*L").
 *
 * Every input is copied to a block of exactly its size, so a read past the
 * end shows under AddressSanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

/* gl_frame_line over the n bytes at s, from a block of exactly n bytes. */
static int frame(const char *s, size_t n, size_t max_line, gl_frame *f) {
  char *p = n ? malloc(n) : NULL;
  int rc;
  if (n) {
    assert_non_null(p);
    memcpy(p, s, n);
  }
  memset(f, 0xab, sizeof *f);
  rc = gl_frame_line(p, n, max_line, f);
  free(p);
  return rc;
}

/* The string literal s (no NUL counted) is one line: payload len bytes,
 * size bytes taken. */
#define FOUND(s, max, plen, psize)                                  \
  do {                                                              \
    gl_frame f_;                                                    \
    assert_int_equal(frame(s, sizeof(s) - 1, max, &f_),            \
                     GL_FRAME_FOUND);                               \
    assert_int_equal(f_.off, 0);                                    \
    assert_int_equal(f_.len, plen);                                 \
    assert_int_equal(f_.size, psize);                               \
  } while (0)

#define NEED_MORE(s, max)                                           \
  do {                                                              \
    gl_frame f_;                                                    \
    assert_int_equal(frame(s, sizeof(s) - 1, max, &f_),            \
                     GL_FRAME_NEED_MORE);                           \
    assert_int_equal(f_.size, sizeof(s)); /* one more byte at least */ \
  } while (0)

#define TOO_LONG(s, max)                                            \
  do {                                                              \
    gl_frame f_;                                                    \
    assert_int_equal(frame(s, sizeof(s) - 1, max, &f_),            \
                     GL_FRAME_TOO_LONG);                            \
  } while (0)

static void test_ends_of_line(void **state) {
  (void)state;
  FOUND("abc\n", 10, 3, 4);
  FOUND("abc\r\n", 10, 3, 5);   /* the '\r' is the end's, not payload */
  FOUND("\n", 10, 0, 1);        /* an empty line */
  FOUND("\r\n", 10, 0, 2);      /* an empty line, CRLF */
  FOUND("\n\n", 10, 0, 1);      /* one line at a time */
  FOUND("ab\ncd\n", 10, 2, 3);
  FOUND("a\0b\n", 10, 3, 4);    /* a NUL is payload */
}

static void test_carriage_returns(void **state) {
  (void)state;
  FOUND("a\rb\n", 10, 3, 4);    /* a '\r' in the middle is payload */
  FOUND("\r\rx\r\n", 10, 3, 5);
  FOUND("ab\r\r\n", 10, 3, 5);  /* only the last '\r' is the end's */
  FOUND("\r\r\n", 10, 1, 3);
  NEED_MORE("abc\r", 10);       /* a lone '\r' at the end: wait */
  NEED_MORE("\r", 10);
  NEED_MORE("a\rb", 10);
}

static void test_empty_input(void **state) {
  gl_frame f;
  (void)state;
  assert_int_equal(gl_frame_line(NULL, 0, 10, &f), GL_FRAME_NEED_MORE);
  assert_int_equal(f.size, 1);
  assert_int_equal(gl_frame_line("", 0, 0, &f), GL_FRAME_NEED_MORE);
  assert_int_equal(f.size, 1);
}

static void test_max_line(void **state) {
  (void)state;
  /* exactly max_line: a line, or a wait for its end */
  FOUND("abc\n", 3, 3, 4);
  FOUND("abc\r\n", 3, 3, 5);
  NEED_MORE("abc", 3);
  /* max_line + 1: too long, whether the end is there or not */
  TOO_LONG("abcd\n", 3);
  TOO_LONG("abcd\r\n", 3);
  TOO_LONG("abcd", 3);
  TOO_LONG("abcdefgh\n", 3);
  /* a longer line after a short one: the short one first */
  FOUND("ab\ncdefgh", 2, 2, 3);
}

static void test_max_line_with_cr_pending(void **state) {
  (void)state;
  /* max_line bytes then '\r': it may be the start of "\r\n" */
  NEED_MORE("abc\r", 3);
  FOUND("abc\r\n", 3, 3, 5);
  /* ... and it was not: the '\r' is payload, one byte too many */
  TOO_LONG("abc\rx", 3);
  TOO_LONG("abc\r\r", 3);
  TOO_LONG("abc\r\r\n", 3);
  FOUND("abc\r\r\n", 4, 4, 6);
  /* so at most max_line + 1 bytes wait, and max_line + 2 always answer */
  NEED_MORE("\r", 0);
  TOO_LONG("\r\r", 0);
  TOO_LONG("a", 0);
  FOUND("\n", 0, 0, 1);
  FOUND("\r\n", 0, 0, 2);
}

static void test_no_overflow_at_the_top(void **state) {
  (void)state;
  FOUND("abc\r\n", SIZE_MAX, 3, 5);
  NEED_MORE("abc\r", SIZE_MAX);
  NEED_MORE("abc", SIZE_MAX - 1);
}

/* A stream cut anywhere gives the same lines: consume each and go on. */
static void test_stream(void **state) {
  static const char in[] = "a\r\nbb\n\r\n\rc\rd\n\nccc\r";
  static const struct { const char *payload; size_t size; } want[] = {
      {"a", 3}, {"bb", 3}, {"", 2}, {"\rc\rd", 5}, {"", 1}};
  (void)state;
  for (size_t cut = 0; cut <= sizeof in - 1; cut++) {
    size_t done = 0, lines = 0, have = 0;
    gl_frame f;
    /* the input arrives in two reads: [0, cut), then the rest */
    for (int read = 0; read < 2; read++) {
      have = read ? sizeof in - 1 : cut;
      while (have > done &&
             frame(in + done, have - done, 16, &f) == GL_FRAME_FOUND) {
        assert_true(lines < sizeof want / sizeof want[0]);
        assert_int_equal(f.len, strlen(want[lines].payload));
        assert_memory_equal(in + done, want[lines].payload, f.len);
        assert_int_equal(f.size, want[lines].size);
        done += f.size;
        lines++;
      }
    }
    assert_int_equal(lines, sizeof want / sizeof want[0]);
    assert_int_equal(frame(in + done, have - done, 16, &f),
                     GL_FRAME_NEED_MORE);
    assert_int_equal(have - done, 4); /* "ccc\r" waits */
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ends_of_line),
      cmocka_unit_test(test_carriage_returns),
      cmocka_unit_test(test_empty_input),
      cmocka_unit_test(test_max_line),
      cmocka_unit_test(test_max_line_with_cr_pending),
      cmocka_unit_test(test_no_overflow_at_the_top),
      cmocka_unit_test(test_stream),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
