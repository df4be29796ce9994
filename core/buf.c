#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gl.h"

void gl_buf_init(gl_buf *b) { memset(b, 0, sizeof *b); }

void gl_buf_free(gl_buf *b) {
  free(b->data);
  gl_buf_init(b);
}

int gl_buf_reserve(gl_buf *b, size_t n) {
  if (gl_buf_room(b) >= n) return GL_OK;
  if (b->cap - b->len >= n && b->len <= b->cap / 2) {
    /* Enough space in front: slide the unread bytes down instead of growing. */
    memmove(b->data, b->data + b->off, b->len);
    b->off = 0;
    return GL_OK;
  }
  if (n > (size_t)-1 / 2 - b->len) return -ENOMEM;
  size_t need = b->len + n;
  size_t cap = b->cap ? b->cap : 512;
  while (cap < need) cap *= 2;
  char *p = malloc(cap);
  if (!p) return -ENOMEM;
  if (b->len) memcpy(p, b->data + b->off, b->len);
  free(b->data);
  b->data = p;
  b->off = 0;
  b->cap = cap;
  return GL_OK;
}

int gl_buf_append(gl_buf *b, const void *p, size_t n) {
  if (n == 0) return GL_OK;
  int rc = gl_buf_reserve(b, n);
  if (rc != GL_OK) return rc;
  memcpy(gl_buf_tail(b), p, n);
  b->len += n;
  return GL_OK;
}

void gl_buf_consume(gl_buf *b, size_t n) {
  if (n >= b->len) {
    b->off = 0;
    b->len = 0;
  } else {
    b->off += n;
    b->len -= n;
  }
}
