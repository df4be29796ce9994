/*
 * frame.h: finding one message in a connection's input, byte logic only.
 *
 * A framing function looks at the unread input p[0..len) and says whether a
 * whole frame is there, and if so where its payload lies and how many bytes
 * it takes from the input. It keeps no state, copies nothing and allocates
 * nothing: the caller holds the bytes, consumes what a frame says, and calls
 * again as more arrive. The answer depends only on the bytes, never on how
 * they were cut into reads. Every function reads at most len bytes of p, and
 * p may be NULL when len is 0.
 *
 * A frame is laid out as   [0, off)         a header (none for a line)
 *                          [off, off + len) the payload
 *                          [off + len, size) a trailer (a line's end)
 * so that a frame of another kind (a length-prefixed packet, its header
 * before the payload) comes back in the same shape.
 */
#ifndef GL_FRAME_H
#define GL_FRAME_H

#include <stddef.h>
#include <string.h>

enum {
  GL_FRAME_NEED_MORE = 0, /* no whole frame yet: read more, call again */
  GL_FRAME_FOUND = 1,     /* a frame: *out says where */
  GL_FRAME_TOO_LONG = 2   /* the frame at the start is (or will be, once it
                           * ends) past its limit; the input is unchanged */
};

typedef struct gl_frame {
  size_t off;  /* where the payload starts */
  size_t len;  /* payload bytes */
  size_t size; /* bytes the frame takes from the input, header and trailer
                * included; on GL_FRAME_NEED_MORE, the fewest bytes of
                * input that may hold a frame (more may be needed) */
} gl_frame;

/* A line: bytes up to and including the first '\n'. The payload is the
 * bytes before it, without one '\r' right before the '\n', so "a\r\n" and
 * "a\n" both carry "a"; a '\r' anywhere else is payload. The trailer (1 or
 * 2 bytes) is the end of line, which a caller that wants it ("*L") keeps by
 * taking p[0..size).
 *
 * A line whose payload is longer than max_line is GL_FRAME_TOO_LONG, and so
 * is input without a '\n' that holds more than max_line payload bytes
 * already: every byte of it but a last '\r' (which may start a "\r\n") is
 * payload of the line to come. So GL_FRAME_NEED_MORE leaves at most
 * max_line + 1 bytes waiting, and max_line + 2 bytes of input always get
 * another answer: an input buffer of that size never waits in vain. */
static inline int gl_frame_line(const char *p, size_t len, size_t max_line,
                                gl_frame *out) {
  /* inline: it runs once per message of a line-mode connection */
  const char *nl = len ? (const char *)memchr(p, '\n', len) : NULL;
  size_t l;
  out->off = 0;
  if (!nl) {
    /* a last '\r' may be the start of a "\r\n": not payload yet */
    if (len - (len && p[len - 1] == '\r') > max_line) {
      out->len = out->size = 0;
      return GL_FRAME_TOO_LONG;
    }
    out->len = 0;
    out->size = len + 1;
    return GL_FRAME_NEED_MORE;
  }
  l = (size_t)(nl - p);
  out->len = l - (l && p[l - 1] == '\r');
  if (out->len > max_line) {
    out->len = out->size = 0;
    return GL_FRAME_TOO_LONG;
  }
  out->size = l + 1;
  return GL_FRAME_FOUND;
}

/* Bytes up to the first occurrence of the delimiter d[0..dlen) (dlen > 0),
 * which is the trailer. A payload longer than max is GL_FRAME_TOO_LONG, and
 * so is input without the delimiter that holds more than max bytes that
 * cannot be the delimiter's start (all but its last dlen - 1). So
 * GL_FRAME_NEED_MORE leaves at most max + dlen - 1 bytes waiting, and an
 * input buffer of max + dlen bytes never waits in vain. */
int gl_frame_until(const char *p, size_t len, const char *d, size_t dlen,
                   size_t max, gl_frame *out);

/* A packet: a big-endian unsigned length of hdr bytes (1, 2 or 4), then
 * that many bytes of payload. A length above max is GL_FRAME_TOO_LONG as
 * soon as the header is in. On GL_FRAME_NEED_MORE, out->size is the whole
 * frame's size once the header is in (hdr before): the caller may wait for
 * exactly that much. */
int gl_frame_packet(const char *p, size_t len, int hdr, size_t max,
                    gl_frame *out);

#endif
