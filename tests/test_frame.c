/*
 * test_frame.c: the framing functions of core/frame.c: gl_frame_line (the
 * line framing behind receive("*l") and receive("*L")), gl_frame_until (a
 * delimiter of any length) and gl_frame_packet (a big-endian length prefix).
 *
 * Every input, and every delimiter, is copied to a block of exactly its
 * size, so a read past the end shows under AddressSanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

/* A block of exactly n bytes holding s[0..n); NULL for none. */
static char *exact(const char *s, size_t n) {
  char *p;
  if (!n) return NULL;
  p = malloc(n);
  assert_non_null(p);
  memcpy(p, s, n);
  return p;
}

/* gl_frame_line over the n bytes at s, from a block of exactly n bytes. */
static int frame(const char *s, size_t n, size_t max_line, gl_frame *f) {
  char *p = exact(s, n);
  int rc;
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

/* ---- gl_frame_until ---- */

/* gl_frame_until over s[0..n) and the delimiter d[0..dlen), each from a
 * block of exactly its size. */
static int until(const char *s, size_t n, const char *d, size_t dlen,
                 size_t max, gl_frame *f) {
  char *p = exact(s, n), *q = exact(d, dlen);
  int rc;
  memset(f, 0xab, sizeof *f);
  rc = gl_frame_until(p, n, q, dlen, max, f);
  free(p);
  free(q);
  return rc;
}

/* The fewest bytes of input that may hold a frame, for s[0..n) with no
 * delimiter in it: the delimiter ends no sooner than after the longest of
 * its starts that s ends with. */
static size_t until_fewest(const char *s, size_t n, const char *d,
                           size_t dlen) {
  size_t k = dlen - 1 < n ? dlen - 1 : n;
  while (k && memcmp(s + n - k, d, k) != 0) k--;
  return n + dlen - k;
}

/* gl_frame_until over s[0..n) answers rc; a frame has a payload of plen
 * bytes at 0 and the delimiter after it; a wait asks for more than n bytes
 * but no more than may hold a frame. */
#define UNTIL_IS(s, n, d, dlen, max, rc, plen)                          \
  do {                                                                  \
    gl_frame f_;                                                        \
    assert_int_equal(until(s, n, d, dlen, max, &f_), rc);               \
    if ((rc) == GL_FRAME_FOUND) {                                       \
      assert_int_equal(f_.off, 0);                                      \
      assert_int_equal(f_.len, plen);                                   \
      assert_int_equal(f_.size, (size_t)(plen) + (dlen));               \
    } else if ((rc) == GL_FRAME_NEED_MORE) {                            \
      assert_true(f_.size > (size_t)(n));                               \
      assert_true(f_.size <= until_fewest(s, n, d, dlen));              \
    }                                                                   \
  } while (0)

/* The same, for string literals (no NUL counted, NULs inside are bytes). */
#define UNTIL_FOUND(s, d, max, plen)                                    \
  UNTIL_IS(s, sizeof(s) - 1, d, sizeof(d) - 1, max, GL_FRAME_FOUND, plen)
#define UNTIL_NEED_MORE(s, d, max)                                      \
  UNTIL_IS(s, sizeof(s) - 1, d, sizeof(d) - 1, max, GL_FRAME_NEED_MORE, 0)
#define UNTIL_TOO_LONG(s, d, max)                                       \
  UNTIL_IS(s, sizeof(s) - 1, d, sizeof(d) - 1, max, GL_FRAME_TOO_LONG, 0)

static void test_until_delimiters(void **state) {
  (void)state;
  /* one byte */
  UNTIL_FOUND("abc;", ";", 10, 3);
  UNTIL_FOUND("abc;def;", ";", 10, 3);  /* the first one */
  UNTIL_FOUND(";", ";", 10, 0);         /* an empty payload */
  UNTIL_FOUND(";;", ";", 10, 0);
  UNTIL_NEED_MORE("abc", ";", 10);
  /* two */
  UNTIL_FOUND("abc\r\n", "\r\n", 10, 3);
  UNTIL_FOUND("a\rb\nc\r\n", "\r\n", 10, 5); /* its halves alone: payload */
  UNTIL_FOUND("\n\r\r\n", "\r\n", 10, 2);
  UNTIL_FOUND("\r\n", "\r\n", 10, 0);
  UNTIL_FOUND("ba;b;ab", "ab", 10, 5);       /* its bytes in order only */
  UNTIL_NEED_MORE("abc\n\r", "\r\n", 10);
  /* several */
  UNTIL_FOUND("Host: x\r\n\r\nbody", "\r\n\r\n", 32, 7);
  UNTIL_FOUND("a\r\n\rb\r\n\r\n", "\r\n\r\n", 32, 5);
  UNTIL_FOUND("--XYZ--", "--XYZ--", 0, 0);
  UNTIL_FOUND("--XYZ-XYZ--", "XYZ--", 10, 6);
  UNTIL_NEED_MORE("a\r\n\rb\r\n\r", "\r\n\r\n", 32);
  /* bytes of any value, NUL included, in the delimiter and the payload */
  UNTIL_FOUND("a\0b\0\0c", "\0\0", 10, 3);
  UNTIL_FOUND("\0\0", "\0\0", 10, 0);
  UNTIL_FOUND("\xff\x00\xfe\xff\xfe", "\xff\xfe", 10, 3);
  UNTIL_FOUND("x\0y\0z", "\0z", 10, 3);
  UNTIL_NEED_MORE("a\0b\0", "\0\0", 10);
}

/* A match that fails part way must not hide one that starts inside it. */
static void test_until_overlaps(void **state) {
  (void)state;
  UNTIL_FOUND("aaab", "aab", 10, 1);
  UNTIL_FOUND("aab", "aab", 10, 0);
  UNTIL_FOUND("abababc", "ababc", 10, 2);
  UNTIL_FOUND("aaaa", "aa", 10, 0);
  UNTIL_FOUND("xaaaa", "aa", 10, 1);
  UNTIL_FOUND("\r\n\r\r\n\r\n", "\r\n\r\n", 10, 3);
  UNTIL_FOUND("\r\n\r\n\r\n", "\r\n\r\n", 10, 0);
  UNTIL_FOUND("aaaab", "aab", 2, 2);    /* the payload: all before it */
  UNTIL_TOO_LONG("aaaab", "aab", 1);
  UNTIL_NEED_MORE("aaaa", "aab", 10);   /* "aa" may start it */
  UNTIL_NEED_MORE("ababa", "ababc", 10);
}

/* A delimiter cut by the end of the input, and inputs shorter than it. */
static void test_until_partial(void **state) {
  gl_frame f;
  (void)state;
  /* a part of it at the end: wait, though the payload is max already */
  UNTIL_NEED_MORE("abc\r", "\r\n", 3);
  UNTIL_NEED_MORE("abc\r", "\r\n\r\n", 3);
  UNTIL_NEED_MORE("abc\r\n", "\r\n\r\n", 3);
  UNTIL_NEED_MORE("abc\r\n\r", "\r\n\r\n", 3);
  UNTIL_FOUND("abc\r\n\r\n", "\r\n\r\n", 3, 3);
  UNTIL_NEED_MORE("abaa", "aab", 2);
  UNTIL_FOUND("abaab", "aab", 2, 2);
  /* ... and it was not the delimiter after all */
  UNTIL_TOO_LONG("abc\r\n\rx", "\r\n\r\n", 3);
  UNTIL_TOO_LONG("abc\rx", "\r\n", 3);
  /* shorter than the delimiter: nothing is payload yet */
  UNTIL_NEED_MORE("\r\n\r", "\r\n\r\n", 0);
  UNTIL_NEED_MORE("\r", "\r\n\r\n", 0);
  UNTIL_NEED_MORE("aa", "aab", 0);
  UNTIL_NEED_MORE("xyz", "\r\n\r\n", 0);
  UNTIL_NEED_MORE("x", "ab", 0);
  UNTIL_NEED_MORE("", ";", 0);
  assert_int_equal(gl_frame_until(NULL, 0, "\r\n", 2, 10, &f),
                   GL_FRAME_NEED_MORE);
  assert_true(f.size >= 1 && f.size <= 2);
  assert_int_equal(gl_frame_until("", 0, ";", 1, 0, &f), GL_FRAME_NEED_MORE);
  assert_int_equal(f.size, 1);
}

static void test_until_max(void **state) {
  (void)state;
  /* a payload of exactly max: a frame; max + 1: too long */
  UNTIL_FOUND("abc;", ";", 3, 3);
  UNTIL_TOO_LONG("abcd;", ";", 3);
  UNTIL_FOUND("abc\r\n\r\n", "\r\n\r\n", 3, 3);
  UNTIL_TOO_LONG("abcd\r\n\r\n", "\r\n\r\n", 3);
  UNTIL_TOO_LONG("abcdefgh\r\n", "\r\n", 3);
  /* no delimiter: max + dlen - 1 bytes wait, max + dlen are too long */
  UNTIL_NEED_MORE("abc", ";", 3);
  UNTIL_TOO_LONG("abcd", ";", 3);
  UNTIL_NEED_MORE("abcxyz", "\r\n\r\n", 3);
  UNTIL_TOO_LONG("abcxyzw", "\r\n\r\n", 3);
  UNTIL_TOO_LONG("abcd\r\n\r", "\r\n\r\n", 3); /* 4 bytes before it, at least */
  /* max 0: only an empty payload */
  UNTIL_FOUND(";", ";", 0, 0);
  UNTIL_FOUND(";x", ";", 0, 0);
  UNTIL_TOO_LONG("a;", ";", 0);
  UNTIL_TOO_LONG("a", ";", 0);
  UNTIL_NEED_MORE("a", "ab", 0);
  UNTIL_TOO_LONG("ba", "ab", 0);
  /* a short frame before a long one: the short one first */
  UNTIL_FOUND("ab\r\ncdefgh", "\r\n", 2, 2);
}

/* Every delimiter length 1 to 5 and max 0 to 6, with the delimiter made of
 * distinct bytes and of one byte repeated ("aaaab"'s starts). */
static void test_until_boundaries(void **state) {
  static const char *const delims[] = {"-=+*#", "aaaab"};
  char s[32];
  (void)state;
  for (size_t i = 0; i < 2; i++)
    for (size_t dlen = 1; dlen <= 5; dlen++)
      for (size_t max = 0; max <= 6; max++) {
        const char *d = delims[i];
        memset(s, 'x', sizeof s);
        /* max + dlen - 1 bytes of payload: wait; max + dlen: too long */
        UNTIL_IS(s, max + dlen - 1, d, dlen, max, GL_FRAME_NEED_MORE, 0);
        UNTIL_IS(s, max + dlen, d, dlen, max, GL_FRAME_TOO_LONG, 0);
        /* max bytes then the delimiter, whole or all but its last byte */
        memcpy(s + max, d, dlen);
        UNTIL_IS(s, max + dlen, d, dlen, max, GL_FRAME_FOUND, max);
        UNTIL_IS(s, max + dlen - 1, d, dlen, max, GL_FRAME_NEED_MORE, 0);
        UNTIL_IS(s, max + dlen - 1, d, dlen, max + 1, GL_FRAME_NEED_MORE, 0);
        /* max + 1 bytes then the delimiter */
        memset(s, 'x', sizeof s);
        memcpy(s + max + 1, d, dlen);
        UNTIL_IS(s, max + 1 + dlen, d, dlen, max, GL_FRAME_TOO_LONG, 0);
        UNTIL_IS(s, max + 1 + dlen, d, dlen, max + 1, GL_FRAME_FOUND, max + 1);
      }
}

static void test_until_no_overflow_at_the_top(void **state) {
  (void)state;
  UNTIL_FOUND("abc\r\n", "\r\n", SIZE_MAX, 3);
  UNTIL_NEED_MORE("abc\r", "\r\n\r\n", SIZE_MAX);
  UNTIL_NEED_MORE("abcdef", "\r\n\r\n", SIZE_MAX);
  UNTIL_NEED_MORE("abcdef", "\r\n\r\n", SIZE_MAX - 1);
  UNTIL_NEED_MORE("abcdef", "\r\n\r\n", SIZE_MAX - 2);
  UNTIL_NEED_MORE("abcdef", "\r\n\r\n", SIZE_MAX - 3);
}

/* ---- gl_frame_packet ---- */

/* gl_frame_packet over s[0..n), from a block of exactly n bytes. */
static int packet(const char *s, size_t n, int hdr, size_t max,
                  gl_frame *f) {
  char *p = exact(s, n);
  int rc;
  memset(f, 0xab, sizeof *f);
  rc = gl_frame_packet(p, n, hdr, max, f);
  free(p);
  return rc;
}

/* gl_frame_packet over s[0..n) answers rc; a frame has its payload of plen
 * bytes after the header and takes psize bytes; a wait asks for exactly
 * psize bytes. */
#define PACKET_IS(s, n, hdr, max, rc, plen, psize)                      \
  do {                                                                  \
    gl_frame f_;                                                        \
    assert_int_equal(packet(s, n, hdr, max, &f_), rc);                  \
    if ((rc) == GL_FRAME_FOUND) {                                       \
      assert_int_equal(f_.off, hdr);                                    \
      assert_int_equal(f_.len, plen);                                   \
    }                                                                   \
    if ((rc) != GL_FRAME_TOO_LONG) assert_int_equal(f_.size, psize);    \
  } while (0)

#define PACKET_FOUND(s, hdr, max, plen)                                 \
  PACKET_IS(s, sizeof(s) - 1, hdr, max, GL_FRAME_FOUND, plen,           \
            (size_t)(hdr) + (plen))
#define PACKET_NEED_MORE(s, hdr, max, psize)                            \
  PACKET_IS(s, sizeof(s) - 1, hdr, max, GL_FRAME_NEED_MORE, 0, psize)
#define PACKET_TOO_LONG(s, hdr, max)                                    \
  PACKET_IS(s, sizeof(s) - 1, hdr, max, GL_FRAME_TOO_LONG, 0, 0)

static void test_packet_headers(void **state) {
  (void)state;
  /* 1 byte */
  PACKET_FOUND("\x03" "abc", 1, 10, 3);
  PACKET_FOUND("\x03" "abcX", 1, 10, 3); /* the next frame's bytes stay */
  PACKET_FOUND("\x00", 1, 10, 0);        /* an empty payload */
  PACKET_FOUND("\x00" "abc", 1, 10, 0);
  PACKET_NEED_MORE("\x03" "ab", 1, 10, 4);
  /* 2 bytes, big-endian */
  PACKET_FOUND("\x00\x03" "abc", 2, 10, 3);
  PACKET_FOUND("\x00\x00", 2, 10, 0);
  PACKET_NEED_MORE("\x01\x02" "ab", 2, 1000, 2 + 0x102);
  PACKET_NEED_MORE("\x03\x00", 2, 1000, 2 + 0x300);
  /* 4 bytes, big-endian */
  PACKET_FOUND("\x00\x00\x00\x02" "ab", 4, 10, 2);
  PACKET_FOUND("\x00\x00\x00\x00" "ab", 4, 0, 0);
  PACKET_NEED_MORE("\x00\x01\x02\x03", 4, SIZE_MAX, 4 + 0x10203);
  PACKET_NEED_MORE("\x01\x02\x03\x04" "abc", 4, SIZE_MAX, 4 + 0x1020304);
  PACKET_NEED_MORE("\x02\x00\x00\x00", 4, SIZE_MAX, 4 + 0x2000000);
}

/* Before the whole header is in: a wait for the header, whatever its first
 * bytes say. */
static void test_packet_split_header(void **state) {
  gl_frame f;
  static const int hdrs[] = {1, 2, 4};
  (void)state;
  for (size_t i = 0; i < 3; i++) {
    int hdr = hdrs[i];
    assert_int_equal(gl_frame_packet(NULL, 0, hdr, 10, &f),
                     GL_FRAME_NEED_MORE);
    assert_int_equal(f.size, hdr);
  }
  PACKET_NEED_MORE("\x00", 2, 10, 2);
  PACKET_NEED_MORE("\x00", 4, 10, 4);
  PACKET_NEED_MORE("\x00\x00", 4, 10, 4);
  PACKET_NEED_MORE("\x00\x00\x00", 4, 10, 4);
  PACKET_NEED_MORE("\xff", 2, SIZE_MAX, 2);
  PACKET_NEED_MORE("\xff\xff\xff", 4, SIZE_MAX, 4);
  /* then the rest of it: the whole frame's size */
  PACKET_NEED_MORE("\x00\x00\x00\x05", 4, 10, 9);
  PACKET_NEED_MORE("\x00\x00\x00\x05" "abcd", 4, 10, 9);
  PACKET_FOUND("\x00\x00\x00\x05" "abcde", 4, 10, 5);
}

/* Lengths 0 to 65536 around the byte boundaries, with every header size
 * that holds them: max exactly, max + 1, and every stage of arrival. */
static void test_packet_lengths(void **state) {
  static const size_t lens[] = {0, 1, 2, 127, 128, 255, 256, 257,
                                1000, 32768, 65535, 65536, 70000};
  static const int hdrs[] = {1, 2, 4};
  (void)state;
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
    for (size_t h = 0; h < 3; h++) {
      int hdr = hdrs[h];
      size_t n = lens[i], total = (size_t)hdr + n;
      char *s;
      if (hdr < 4 && n >> (8 * hdr)) continue; /* does not fit */
      s = malloc(total + 3);
      assert_non_null(s);
      for (int b = 0; b < hdr; b++)
        s[b] = (char)(n >> (8 * (hdr - 1 - b)) & 0xff);
      for (size_t j = 0; j < n + 3; j++) s[hdr + j] = (char)('a' + j % 26);
      /* exactly max, then more bytes after it: one frame */
      PACKET_IS(s, total, hdr, n, GL_FRAME_FOUND, n, total);
      PACKET_IS(s, total + 3, hdr, n, GL_FRAME_FOUND, n, total);
      PACKET_IS(s, total, hdr, SIZE_MAX, GL_FRAME_FOUND, n, total);
      /* max + 1 below it: too long, as soon as the header is in */
      if (n) {
        PACKET_IS(s, total, hdr, n - 1, GL_FRAME_TOO_LONG, 0, 0);
        PACKET_IS(s, (size_t)hdr, hdr, n - 1, GL_FRAME_TOO_LONG, 0, 0);
        PACKET_IS(s, total - 1, hdr, n, GL_FRAME_NEED_MORE, 0, total);
      }
      PACKET_IS(s, (size_t)hdr, hdr, n, n ? GL_FRAME_NEED_MORE : GL_FRAME_FOUND,
                n, total);
      PACKET_IS(s, (size_t)hdr - 1, hdr, n, GL_FRAME_NEED_MORE, 0,
                (size_t)hdr);
      free(s);
    }
}

/* Bytes with the high bit set are read unsigned, and 4-byte lengths up to
 * 0xFFFFFFFF never wrap around. */
static void test_packet_high_bits(void **state) {
  static const size_t maxes[] = {0xffffffffu, SIZE_MAX, SIZE_MAX - 1,
                                 SIZE_MAX - 3, SIZE_MAX - 4};
  (void)state;
  PACKET_NEED_MORE("\xff", 1, 0xff, 0x100);
  PACKET_TOO_LONG("\xff", 1, 0xfe);
  PACKET_NEED_MORE("\x80", 1, 0x80, 0x81);
  PACKET_TOO_LONG("\x80", 1, 0x7f);
  PACKET_NEED_MORE("\xff\xff", 2, 0xffff, 0x10001);
  PACKET_TOO_LONG("\xff\xff", 2, 0xfffe);
  PACKET_NEED_MORE("\x00\x80", 2, 0x80, 0x82);
  PACKET_NEED_MORE("\x80\x01", 2, SIZE_MAX, 0x8003);
  PACKET_NEED_MORE("\x00\x00\x00\xff", 4, 0xff, 0x103);
  PACKET_NEED_MORE("\x00\x00\x80\x01", 4, SIZE_MAX, 4 + 0x8001);
  PACKET_NEED_MORE("\x00\xff\x00\xff", 4, SIZE_MAX, 4 + 0xff00ff);
  PACKET_TOO_LONG("\x80\x00\x00\x00", 4, 0x7fffffff);
  PACKET_TOO_LONG("\x80\x00\x00\x00" "abc", 4, 0);
  PACKET_NEED_MORE("\x80\x00\x00\x00", 4, 0x80000000u, 0x80000004u);
  PACKET_TOO_LONG("\xff\xff\xff\xff", 4, 0);
  PACKET_TOO_LONG("\xff\xff\xff\xff", 4, 0x7fffffff);
  PACKET_TOO_LONG("\xff\xff\xff\xff" "abcdef", 4, 0xfffffffeu);
  PACKET_TOO_LONG("\xff\xff\xff\xfe", 4, 0xfffffffdu);
  /* the largest length under the largest limits: a wait for all of it
   * where size_t holds hdr + length, never a frame */
  for (size_t i = 0; i < sizeof maxes / sizeof maxes[0]; i++) {
    gl_frame f;
    int rc = packet("\xff\xff\xff\xff" "abcdef", 10, 4, maxes[i], &f);
    if ((uint64_t)SIZE_MAX >= (uint64_t)0xffffffffu + 4) {
      assert_int_equal(rc, GL_FRAME_NEED_MORE);
      assert_true((uint64_t)f.size == (uint64_t)0xffffffffu + 4);
    } else {
      /* 32 bits: the frame cannot exist; a wait would have to name a size
       * that does not fit */
      assert_int_equal(rc, GL_FRAME_TOO_LONG);
    }
  }
}

/* ---- every cut of a stream ---- */

/* One framing and its settings, so one driver cuts streams for all. */
typedef struct framing {
  int kind;      /* 'l' line, 'u' until, 'p' packet */
  const char *d; /* until: the delimiter */
  size_t dlen;
  int hdr;       /* packet: header bytes */
  size_t max;
} framing;

typedef struct want {
  const char *payload;
  size_t len, size;
} want;

static int frame_any(const framing *fr, const char *s, size_t n,
                     gl_frame *f) {
  switch (fr->kind) {
  case 'l':
    return frame(s, n, fr->max, f);
  case 'u':
    return until(s, n, fr->d, fr->dlen, fr->max, f);
  default:
    return packet(s, n, fr->hdr, fr->max, f);
  }
}

/* The stream in[0..n) cut into reads in every way there is (bit i of cuts
 * on: a read ends after byte i), frames taken after each read while there
 * are any: every cut gives the frames w[0..nw) and then the answer end,
 * with rest bytes waiting if that is GL_FRAME_NEED_MORE. */
static void every_cut(const framing *fr, const char *in, size_t n,
                      const want *w, size_t nw, int end, size_t rest) {
  assert_true(n >= 1 && n <= 18);
  for (uint32_t cuts = 0; cuts < (uint32_t)1 << (n - 1); cuts++) {
    size_t done = 0, frames = 0, have = 0;
    int rc = GL_FRAME_NEED_MORE;
    gl_frame f;
    while (have < n && rc != GL_FRAME_TOO_LONG) {
      do have++;
      while (have < n && !(cuts >> (have - 1) & 1));
      while ((rc = frame_any(fr, in + done, have - done, &f)) ==
             GL_FRAME_FOUND) {
        assert_true(frames < nw);
        assert_int_equal(f.len, w[frames].len);
        assert_int_equal(f.size, w[frames].size);
        assert_true(f.off + f.len <= f.size && f.size <= have - done);
        if (f.len)
          assert_memory_equal(in + done + f.off, w[frames].payload, f.len);
        done += f.size;
        frames++;
      }
    }
    assert_int_equal(frames, nw);
    assert_int_equal(rc, end);
    if (end == GL_FRAME_NEED_MORE) assert_int_equal(n - done, rest);
  }
}

static void test_every_cut(void **state) {
  (void)state;
  {
    static const char in[] = "ab\r\n\n\r\r\nx\r";
    static const want w[] = {{"ab", 2, 4}, {"", 0, 1}, {"\r", 1, 3}};
    framing fr = {'l', NULL, 0, 0, 8};
    every_cut(&fr, in, sizeof in - 1, w, 3, GL_FRAME_NEED_MORE, 2);
  }
  {
    /* overlapping starts of the delimiter, one frame of exactly max */
    static const char in[] = "xaaabaababaabaa";
    static const want w[] = {{"xa", 2, 5}, {"", 0, 3}, {"ab", 2, 5}};
    framing fr = {'u', "aab", 3, 0, 2};
    every_cut(&fr, in, sizeof in - 1, w, 3, GL_FRAME_NEED_MORE, 2);
  }
  {
    /* max + dlen - 1 bytes wait at the end, ending with a part of it */
    static const char in[] = "a\r\n\r\n\r\n\r\nb\r\n\r";
    static const want w[] = {{"a", 1, 5}, {"", 0, 4}};
    framing fr = {'u', "\r\n\r\n", 4, 0, 1};
    every_cut(&fr, in, sizeof in - 1, w, 2, GL_FRAME_NEED_MORE, 4);
  }
  {
    /* a frame too long after two that are not */
    static const char in[] = "ab;;abcd;e;";
    static const want w[] = {{"ab", 2, 3}, {"", 0, 1}};
    framing fr = {'u', ";", 1, 0, 3};
    every_cut(&fr, in, sizeof in - 1, w, 2, GL_FRAME_TOO_LONG, 0);
  }
  {
    static const char in[] = "ab\0\0\0c\0\0";
    static const want w[] = {{"ab", 2, 4}, {"\0c", 2, 4}};
    framing fr = {'u', "\0\0", 2, 0, 2};
    every_cut(&fr, in, sizeof in - 1, w, 2, GL_FRAME_NEED_MORE, 0);
  }
  {
    static const char in[] = "\x00\x03" "abc" "\x00\x00" "\x00\x01" "z"
                             "\x00\x02" "q";
    static const want w[] = {{"abc", 3, 5}, {"", 0, 2}, {"z", 1, 3}};
    framing fr = {'p', NULL, 0, 2, 3};
    every_cut(&fr, in, sizeof in - 1, w, 3, GL_FRAME_NEED_MORE, 3);
  }
  {
    static const char in[] = "\x02" "ab" "\x00" "\x01" "\xff" "\x03" "xyz"
                             "\x04" "abcd";
    static const want w[] = {{"ab", 2, 3}, {"", 0, 1}, {"\xff", 1, 2},
                             {"xyz", 3, 4}};
    framing fr = {'p', NULL, 0, 1, 3};
    every_cut(&fr, in, sizeof in - 1, w, 4, GL_FRAME_TOO_LONG, 0);
  }
  {
    /* a 4-byte header cut anywhere, then one past max */
    static const char in[] = "\x00\x00\x00\x01" "a" "\x00\x00\x01\x00" "abcd";
    static const want w[] = {{"a", 1, 5}};
    framing fr = {'p', NULL, 0, 4, 255};
    every_cut(&fr, in, sizeof in - 1, w, 1, GL_FRAME_TOO_LONG, 0);
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
      cmocka_unit_test(test_until_delimiters),
      cmocka_unit_test(test_until_overlaps),
      cmocka_unit_test(test_until_partial),
      cmocka_unit_test(test_until_max),
      cmocka_unit_test(test_until_boundaries),
      cmocka_unit_test(test_until_no_overflow_at_the_top),
      cmocka_unit_test(test_packet_headers),
      cmocka_unit_test(test_packet_split_header),
      cmocka_unit_test(test_packet_lengths),
      cmocka_unit_test(test_packet_high_bits),
      cmocka_unit_test(test_every_cut),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
