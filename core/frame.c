#define _GNU_SOURCE /* memmem */
#include "frame.h"

#include <string.h>

int gl_frame_line(const char *p, size_t len, size_t max_line, gl_frame *out) {
  const char *nl = len ? memchr(p, '\n', len) : NULL;
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
  if (n > max) {
    out->size = 0;
    return GL_FRAME_TOO_LONG;
  }
  out->len = n;
  out->size = (size_t)hdr + n;
  return len >= out->size ? GL_FRAME_FOUND : GL_FRAME_NEED_MORE;
}
