/*
 * fuzz_frame.c: the framing functions of core/frame.c on any bytes, cut
 * into reads in any way, against reference framers written the plain way.
 *
 * Input: one byte picks max (0..47, or near SIZE_MAX), two seed the cuts,
 * the rest is the stream. The stream arrives read by read, each read copied
 * to a block of exactly the bytes unread so far (so a read past them shows
 * under AddressSanitizer); after each read, frames are taken while there
 * are any, as receive("*l") does.
 *
 * gl_frame_line, on the whole stream. Checked:
 *   - every line found is the reference's next one: same payload, same end
 *     of line ("\n" or "\r\n"), and no longer than max_line;
 *   - every byte consumed is a line's, and lines plus their ends of line,
 *     put together, are the stream's first bytes;
 *   - GL_FRAME_NEED_MORE only when no '\n' is waiting, with at most
 *     max_line + 1 bytes waiting;
 *   - GL_FRAME_TOO_LONG only when the reference's line is longer than
 *     max_line (or, with the stream cut short, its bytes so far are);
 *   - the same stream in one read gives the same lines and the same end.
 *
 * gl_frame_until and gl_frame_packet, on the same stream's bytes, cut the
 * same way. For until, its first byte gives the delimiter's length (1 to
 * 8), the next ones are the delimiter (in a block of exactly its size), the
 * rest is what is framed. For packet, its first byte gives the header's
 * size (1, 2 or 4) and the limit (max, near 0xFFFFFFFF, or a multiple of
 * 257), the rest is what is framed. Every answer is the one a reference
 * computes from the contract in frame.h, byte by byte:
 *   - until: a frame ends at the first delimiter in the bytes unread, its
 *     payload all before it; too long if that payload is longer than max
 *     or, with no delimiter, if more than max + dlen - 1 bytes wait (and
 *     then the stream has no frame of at most max there); a wait asks for
 *     more bytes than there are, and no more than may hold a frame;
 *   - packet: a wait for the header until it is in (size hdr); then too
 *     long if its big-endian length is above max, else a frame of exactly
 *     that payload or a wait with the whole frame's size;
 *   - frames and their headers or delimiters, put together, are the
 *     stream's first bytes, and the same stream in one read gives the same
 *     frames and the same end.
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

/* How much of the n bytes a stream has fed once one more read arrives:
 * all at once when seed is 0, else mostly short reads, some long ones. */
static size_t next_read(uint32_t *seed, size_t fed, size_t n) {
  uint32_t x;
  size_t step;
  if (!*seed) return n;
  x = next(seed);
  step = x % 5 ? 1 + (x >> 8) % 17 : 1 + (x >> 8) % 400;
  return fed + (step < n - fed ? step : n - fed);
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
    fed = next_read(&seed, fed, n);
  }
  CHECK(outlen == r.done && (!outlen || memcmp(out, s, outlen) == 0));
  free(out);
  return r;
}

/* gl_frame_until and gl_frame_packet with their settings. */
typedef struct framing {
  int kind;      /* 'u' until, 'p' packet */
  const char *d; /* until: the delimiter, in a block of exactly dlen */
  size_t dlen;
  int hdr;       /* packet: header bytes */
  size_t max;
} framing;

/* The reference for gl_frame_until on s[at..fed) (the stream is s[0..n)):
 * the contract's answer, and in *want the frame (FOUND) or the fewest bytes
 * that may hold one (NEED_MORE: the delimiter ends no sooner than after the
 * longest of its starts the input ends with). */
static int ref_until(const framing *fr, const char *s, size_t n,
                     size_t at, size_t fed, gl_frame *want) {
  size_t have = fed - at, dlen = fr->dlen, j, k;
  want->off = 0;
  want->len = 0;
  for (j = at; j + dlen <= fed; j++)
    if (memcmp(s + j, fr->d, dlen) == 0) {
      want->len = j - at;
      want->size = want->len + dlen;
      return want->len > fr->max ? GL_FRAME_TOO_LONG : GL_FRAME_FOUND;
    }
  if (have >= dlen && have - (dlen - 1) > fr->max) {
    /* and so it is: the whole stream has no frame of at most max here */
    for (j = at; j + dlen <= n && j - at <= fr->max; j++)
      CHECK(memcmp(s + j, fr->d, dlen) != 0);
    return GL_FRAME_TOO_LONG;
  }
  k = dlen - 1 < have ? dlen - 1 : have;
  while (k && memcmp(s + fed - k, fr->d, k) != 0) k--;
  want->size = have + dlen - k;
  return GL_FRAME_NEED_MORE;
}

/* The reference for gl_frame_packet on s[at..fed). */
static int ref_packet(const framing *fr, const char *s, size_t at,
                      size_t fed, gl_frame *want) {
  const unsigned char *u = (const unsigned char *)s + at;
  uint64_t len = 0;
  want->off = (size_t)fr->hdr;
  want->len = 0;
  want->size = (size_t)fr->hdr;
  if (fed - at < (size_t)fr->hdr) return GL_FRAME_NEED_MORE;
  for (int i = 0; i < fr->hdr; i++) len = len * 256 + u[i];
  if (len > fr->max) return GL_FRAME_TOO_LONG;
  want->len = (size_t)len;
  want->size = (size_t)fr->hdr + (size_t)len;
  return fed - at >= want->size ? GL_FRAME_FOUND : GL_FRAME_NEED_MORE;
}

/* A branch of its own for each framing shape (delimiter length, header
 * size) and answer: frame.c has few branches, and libFuzzer keeps an input
 * only for new coverage, so without these its corpus would not hold, say, a
 * 2-byte header's frame once a 1-byte one's is in. */
static void seen(const framing *fr, int rc) {
  unsigned k = (unsigned)(fr->kind == 'u' ? fr->dlen : 8 + (size_t)fr->hdr);
  for (unsigned i = 1; i <= 12; i++)
    for (int a = 0; a < 3; a++)
      if (k == i && rc == a) __asm__ volatile("" : : "r"(i * 3 + a));
}

/* Runs the stream s[0..n) through fr in reads cut by seed (0: one read),
 * each answer against the reference; returns what came out. */
static result run_framing(const framing *fr, const char *s, size_t n,
                          uint32_t seed) {
  result r = {0, 0, GL_FRAME_NEED_MORE};
  char *out = malloc(n + 1); /* the frames, put together */
  size_t fed = 0, outlen = 0;
  CHECK(out);
  for (;;) {
    for (;;) {
      size_t have = fed - r.done;
      char *p = have ? malloc(have) : NULL;
      gl_frame f, want;
      int rc, wrc;
      if (have) {
        CHECK(p);
        memcpy(p, s + r.done, have);
      }
      memset(&f, 0xab, sizeof f);
      if (fr->kind == 'u') {
        rc = gl_frame_until(p, have, fr->d, fr->dlen, fr->max, &f);
        wrc = ref_until(fr, s, n, r.done, fed, &want);
      } else {
        rc = gl_frame_packet(p, have, fr->hdr, fr->max, &f);
        wrc = ref_packet(fr, s, r.done, fed, &want);
      }
      CHECK(rc == wrc);
      seen(fr, rc);
      if (rc == GL_FRAME_FOUND) {
        CHECK(f.off == want.off && f.len == want.len && f.size == want.size);
        CHECK(f.size <= have && f.len <= fr->max);
        if (fr->kind == 'u')
          CHECK(memcmp(p + f.len, fr->d, fr->dlen) == 0);
        memcpy(out + outlen, p, f.size);
        outlen += f.size;
        r.done += f.size;
        r.lines++;
        free(p);
        continue;
      }
      if (rc == GL_FRAME_NEED_MORE) {
        CHECK(f.size > have);
        if (fr->kind == 'u') /* no more than may hold a frame */
          CHECK(f.size <= want.size &&
                (have < fr->dlen || have - (fr->dlen - 1) <= fr->max));
        else /* exactly the header, or the whole frame */
          CHECK(f.size == want.size);
      }
      r.end = rc;
      free(p);
      break;
    }
    if (r.end == GL_FRAME_TOO_LONG || fed == n) break;
    fed = next_read(&seed, fed, n);
  }
  CHECK(outlen == r.done && (!outlen || memcmp(out, s, outlen) == 0));
  free(out);
  return r;
}

/* Runs fr over the stream cut by seed and in one read: the same frames and
 * the same end. */
static void run_both(const framing *fr, const char *s, size_t n,
                     uint32_t seed) {
  result cut = run_framing(fr, s, n, seed);
  result whole = run_framing(fr, s, n, 0);
  CHECK(cut.lines == whole.lines && cut.done == whole.done &&
        cut.end == whole.end);
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
  if (size >= 2) { /* a delimiter of 1 to 8 bytes, then the stream */
    size_t dlen = 1 + (data[0] & 7);
    if (size >= 1 + dlen) {
      char *d = malloc(dlen);
      framing fr = {'u', d, dlen, 0, max};
      CHECK(d);
      memcpy(d, data + 1, dlen);
      run_both(&fr, (const char *)data + 1 + dlen, size - 1 - dlen, seed);
      free(d);
    }
  }
  if (size >= 1) { /* a header size and a limit, then the stream */
    static const int hdrs[] = {1, 2, 4, 4};
    framing fr = {'p', NULL, 0, hdrs[data[0] & 3], max};
    unsigned v = data[0] >> 4;
    if ((data[0] >> 2 & 3) == 2)
      fr.max = 0xffffffffu - v; /* around the largest 4-byte length */
    else if ((data[0] >> 2 & 3) == 3)
      fr.max = v * 257; /* within reach of 2-byte lengths */
    run_both(&fr, (const char *)data + 1, size - 1, seed);
  }
  return 0;
}
