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
