#define _GNU_SOURCE /* memmem */
#include "frame.h"

#include <stdint.h>
#include <string.h>

int gl_frame_until(const char *p, size_t len, const char *d, size_t dlen,
                   size_t max, gl_frame *out) {
  const char *at = len >= dlen ? memmem(p, len, d, dlen) : NULL;
  out->off = 0;
  if (!at) {
    /* all but the last dlen - 1 bytes are payload of the frame to come */
    if (len >= dlen && len - (dlen - 1) > max) {
      out->len = out->size = 0;
      return GL_FRAME_TOO_LONG;
    }
    out->len = 0;
    out->size = len + 1;
    return GL_FRAME_NEED_MORE;
  }
  out->len = (size_t)(at - p);
  if (out->len > max) {
    out->len = out->size = 0;
    return GL_FRAME_TOO_LONG;
  }
  out->size = out->len + dlen;
  return GL_FRAME_FOUND;
}

int gl_frame_packet(const char *p, size_t len, int hdr, size_t max,
                    gl_frame *out) {
  const unsigned char *u = (const unsigned char *)p;
  size_t n = 0;
  int i;
  out->off = (size_t)hdr;
  out->len = 0;
  if (len < (size_t)hdr) {
    out->size = (size_t)hdr;
    return GL_FRAME_NEED_MORE;
  }
  for (i = 0; i < hdr; i++) n = n << 8 | u[i];
  if (n > max || n > SIZE_MAX - (size_t)hdr) { /* (a 32-bit size_t) */
    out->size = 0;
    return GL_FRAME_TOO_LONG;
  }
  out->len = n;
  out->size = (size_t)hdr + n;
  return len >= out->size ? GL_FRAME_FOUND : GL_FRAME_NEED_MORE;
}
