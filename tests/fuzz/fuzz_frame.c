/*
 * fuzz_frame.c: gl_frame_line (core/frame.c) on any bytes, cut into reads
 * in any way, against a reference splitter written the plain way.
 *
 * Input: one byte picks max_line (0..47, or near SIZE_MAX), two seed the
 * cuts, the rest is the stream. The stream arrives read by read, each read
 * copied to a block of exactly the bytes unread so far (so a read past them
 * shows under AddressSanitizer); after each read, lines are taken while
 * there are any, as receive("*l") does. Checked:
 *   - every line found is the reference's next one: same payload, same end
 *     of line ("\n" or "\r\n"), and no longer than max_line;
 *   - every byte consumed is a line's, and lines plus their ends of line,
 *     put together, are the stream's first bytes;
 *   - GL_FRAME_NEED_MORE only when no '\n' is waiting, with at most
 *     max_line + 1 bytes waiting;
 *   - GL_FRAME_TOO_LONG only when the reference's line is longer than
 *     max_line (or, with the stream cut short, its bytes so far are);
 *   - the same stream in one read gives the same lines and the same end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                         \
  do {                                                                   \
    if (!(c)) {                                                          \
      fprintf(stderr, "fuzz_frame: %s:%d: %s\n", __FILE__, __LINE__, #c); \
      abort();                                                           \
    }                                                                    \
  } while (0)

/* The reference: the line that starts at `at` ends with the first '\n' at
 * or after it; its payload drops one '\r' right before that '\n'. With no
 * '\n' (the stream ends first), *nl is n and the payload is what there is
 * but a last '\r'. */
static size_t ref_line(const char *s, size_t n, size_t at, size_t *nl) {
  size_t j = at;
  while (j < n && s[j] != '\n') j++;
  *nl = j;
  if (j > at && s[j - 1] == '\r') return j - at - 1;
  return j - at;
}

typedef struct result {
  size_t lines, done; /* lines taken, bytes they took */
  int end;            /* the last answer: NEED_MORE or TOO_LONG */
} result;

static uint32_t next(uint32_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

/* Runs the stream s[0..n) through gl_frame_line in reads cut by seed (0:
 * one read), checking each answer; returns what came out. */
static result run(const char *s, size_t n, size_t max, uint32_t seed) {
  result r = {0, 0, GL_FRAME_NEED_MORE};
  char *out = malloc(n + 1); /* the lines and their ends, put together */
  size_t fed = 0, outlen = 0;
  CHECK(out);
  for (;;) {
    for (;;) {
      size_t have = fed - r.done, nl, want;
      char *p = have ? malloc(have) : NULL;
      gl_frame f;
      int rc;
      if (have) {
        CHECK(p);
        memcpy(p, s + r.done, have);
      }
      rc = gl_frame_line(p, have, max, &f);
      want = ref_line(s, n, r.done, &nl);
      if (rc == GL_FRAME_FOUND) {
        CHECK(f.off == 0);
        CHECK(f.size >= 1 && f.size <= have);
        CHECK(nl < fed && f.size == nl - r.done + 1); /* the first '\n' */
        CHECK(p[f.size - 1] == '\n');
        CHECK(f.len == want && f.len <= max);
        CHECK(f.size - f.len == 1 ||
              (f.size - f.len == 2 && p[f.len] == '\r'));
        memcpy(out + outlen, p, f.size);
        outlen += f.size;
        r.done += f.size;
        r.lines++;
        free(p);
        continue;
      }
      if (rc == GL_FRAME_TOO_LONG) {
        /* the whole line is, or (the stream ending first) what there is */
        CHECK(want > max);
        r.end = rc;
      } else {
        CHECK(rc == GL_FRAME_NEED_MORE);
        CHECK(nl >= fed); /* no '\n' waiting */
        CHECK(have - (have && p[have - 1] == '\r') <= max);
        CHECK(have <= max + 1 || max >= SIZE_MAX - 1);
        CHECK(f.size == have + 1);
        r.end = rc;
      }
      free(p);
      break;
    }
    if (r.end == GL_FRAME_TOO_LONG || fed == n) break;
    if (!seed) {
      fed = n;
    } else { /* mostly short reads, some long ones */
      uint32_t x = next(&seed);
      size_t step = x % 5 ? 1 + (x >> 8) % 17 : 1 + (x >> 8) % 400;
      fed += step < n - fed ? step : n - fed;
    }
  }
  CHECK(outlen == r.done && (!outlen || memcmp(out, s, outlen) == 0));
  free(out);
  return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t max;
  uint32_t seed;
  result cut, whole;
  if (size < 3) return 0;
  if (data[0] < 0xf0)
    max = data[0] % 48;
  else /* the top of the range: no overflow in max + 1 or + 2 */
    max = SIZE_MAX - (data[0] & 0x0f);
  seed = (uint32_t)data[1] << 8 | data[2];
  seed = seed * 2654435761u | 1; /* xorshift needs a nonzero state */
  data += 3;
  size -= 3;
  cut = run((const char *)data, size, max, seed);
  whole = run((const char *)data, size, max, 0);
  CHECK(cut.lines == whole.lines && cut.done == whole.done &&
        cut.end == whole.end);
  return 0;
}
