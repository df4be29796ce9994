/*
 * test_log.c: the log's escaping (gl_log_escape), and gl_log and
 * gl_log_text, which escape every message before a hook or stderr sees it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Escapes len bytes of src with room for everything; returns the text. */
static const char *esc(const char *src, size_t len) {
  static char out[4096];
  assert_int_equal(gl_log_escape(out, sizeof out, src, len), len);
  return out;
}

#define ESC(lit) esc(lit, sizeof lit - 1)

static void test_text_passes(void **state) {
  (void)state;
  assert_string_equal(ESC(""), "");
  assert_string_equal(ESC("plain text: 1 + 2 = 3, 'quoted' \"too\" ~{}[]"),
                      "plain text: 1 + 2 = 3, 'quoted' \"too\" ~{}[]");
  /* UTF-8 passes, including continuation bytes in 0x80..0x9f and a
   * no-break space (0xc2 0xa0) */
  assert_string_equal(ESC("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\xa0"),
                      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\xa0");
}

static void test_controls_escaped(void **state) {
  (void)state;
  assert_string_equal(ESC("a\nb"), "a\\nb");
  assert_string_equal(ESC("a\rb"), "a\\rb");
  assert_string_equal(ESC("a\tb"), "a\\tb");
  assert_string_equal(ESC("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
  assert_string_equal(ESC("bell\a"), "bell\\x07");
  assert_string_equal(ESC("del\x7f"), "del\\x7f");
  assert_string_equal(ESC("a\\b"), "a\\\\b");
  /* a NUL does not end the text */
  assert_string_equal(ESC("before\0after"), "before\\x00after");
  /* C1 controls in UTF-8: CSI (U+009B), NEL (U+0085) */
  assert_string_equal(ESC("\xc2\x9b" "2J \xc2\x85"),
                      "\\xc2\\x9b" "2J \\xc2\\x85");
  /* a forged line becomes part of this one */
  assert_string_equal(ESC("x\nglisten: conn 1 (127.0.0.1:1): script error"),
                      "x\\nglisten: conn 1 (127.0.0.1:1): script error");
  /* every byte below 0x20 and DEL: no control byte comes out */
  for (int c = 0; c < 256; c++) {
    char in[1] = {(char)c};
    const char *out = esc(in, 1);
    for (const char *p = out; *p; p++)
      if ((unsigned char)*p < 0x20 || *p == 0x7f)
        fail_msg("byte %d came out as a control byte", c);
    if (c < 0x20 || c == 0x7f) {
      char want[8];
      if (c == '\n' || c == '\r' || c == '\t') continue;
      snprintf(want, sizeof want, "\\x%02x", c);
      assert_string_equal(out, want);
    }
  }
}

/* A small dst takes what fits, never half an escape, and says how much. */
static void test_cut(void **state) {
  char out[8];
  (void)state;
  assert_int_equal(gl_log_escape(out, 0, "abc", 3), 0);
  assert_int_equal(gl_log_escape(out, 1, "abc", 3), 0);
  assert_string_equal(out, "");
  assert_int_equal(gl_log_escape(out, 4, "abcdef", 6), 3);
  assert_string_equal(out, "abc");
  /* "ab\x1b": "ab" and 4 bytes of escape need 7; with 6 the escape stays */
  assert_int_equal(gl_log_escape(out, 6, "ab\x1b", 3), 2);
  assert_string_equal(out, "ab");
  assert_int_equal(gl_log_escape(out, 7, "ab\x1b", 3), 3);
  assert_string_equal(out, "ab\\x1b");
  /* a C1 pair goes whole or not at all */
  assert_int_equal(gl_log_escape(out, 8, "a\xc2\x9b", 3), 1);
  assert_string_equal(out, "a");
  /* in pieces as a whole */
  {
    const char src[] = "one\ntwo\x1b\\three\0four\xc2\x9b";
    char whole[256], piece[GL_LOG_ESCAPE_MIN], joined[256] = "";
    size_t i = 0, len = sizeof src - 1;
    gl_log_escape(whole, sizeof whole, src, len);
    while (i < len) {
      size_t took = gl_log_escape(piece, sizeof piece, src + i, len - i);
      assert_true(took > 0);
      strcat(joined, piece);
      i += took;
    }
    assert_string_equal(joined, whole);
  }
}

static char captured[GL_LOG_MAX + 64];
static int captured_level;

static void capture(void *ud, int level, const char *msg) {
  (void)ud;
  captured_level = level;
  snprintf(captured, sizeof captured, "%s", msg);
}

static void test_log_escapes(void **state) {
  static const char peer[] = "\x1b]0;title\a\r\nglisten: forged\0tail";
  char big[3 * GL_LOG_MAX];
  (void)state;
  gl_log_set(capture, NULL);
  gl_log(GL_LOG_WARN, "conn %d: %s", 7, "a\nb\x1b");
  assert_int_equal(captured_level, GL_LOG_WARN);
  assert_string_equal(captured, "conn 7: a\\nb\\x1b");
  gl_log_text(GL_LOG_ERROR, "conn 7 (127.0.0.1:9): script error", peer,
              sizeof peer - 1);
  assert_int_equal(captured_level, GL_LOG_ERROR);
  assert_string_equal(captured,
                      "conn 7 (127.0.0.1:9): script error: "
                      "\\x1b]0;title\\x07\\r\\nglisten: forged\\x00tail");
  /* long: cut to GL_LOG_MAX, and never in the middle of an escape */
  memset(big, '\x1b', sizeof big);
  gl_log_text(GL_LOG_ERROR, "head", big, sizeof big);
  assert_true(strlen(captured) <= GL_LOG_MAX);
  assert_true(strlen(captured) > GL_LOG_MAX - 4);
  assert_int_equal((strlen(captured) - strlen("head: ")) % 4, 0);
  gl_log_set(NULL, NULL);
}

/* The default writes one line, "glisten: " and the escaped message, in one
 * write of at most 4096 bytes (PIPE_BUF), so it is never split. */
static void test_default_line(void **state) {
  int fds[2], saved;
  char buf[3 * GL_LOG_MAX], big[2 * GL_LOG_MAX];
  ssize_t n;
  (void)state;
  assert_int_equal(pipe(fds), 0);
  saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
  gl_log_text(GL_LOG_ERROR, "conn 1", "x\ny\0z", 5);
  memset(big, 'q', sizeof big);
  gl_log_text(GL_LOG_ERROR, "conn 2", big, sizeof big);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fds[1]);
  n = read(fds[0], buf, sizeof buf - 1);
  assert_true(n > 0);
  buf[n] = '\0';
  close(fds[0]);
  assert_memory_equal(buf, "glisten: conn 1: x\\ny\\x00z\nglisten: conn 2: qqq",
                      strlen("glisten: conn 1: x\\ny\\x00z\nglisten: conn 2: qqq"));
  {
    const char *second = strchr(buf, '\n') + 1;
    const char *end = strchr(second, '\n');
    assert_non_null(end);
    assert_int_equal(end + 1 - second, 4096);
    assert_int_equal(end[1], '\0');
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_text_passes),
      cmocka_unit_test(test_controls_escaped),
      cmocka_unit_test(test_cut),
      cmocka_unit_test(test_log_escapes),
      cmocka_unit_test(test_default_line),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
