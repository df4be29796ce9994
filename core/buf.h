/*
 * buf.h: a byte buffer with a read offset, for one connection's input or
 * queued output.
 *
 * Storage is allocated only when bytes must be kept and released by
 * gl_buf_free, so an idle connection owns no buffer memory. Every caller
 * bounds the size it lets a buffer reach; gl_buf itself only refuses to grow
 * past what malloc gives.
 */
#ifndef GL_BUF_H
#define GL_BUF_H

#include <stddef.h>

typedef struct gl_buf {
  char *data;  /* storage, or NULL */
  size_t off;  /* first unread byte */
  size_t len;  /* unread bytes, starting at data + off */
  size_t cap;  /* size of storage */
} gl_buf;

void gl_buf_init(gl_buf *b);
void gl_buf_free(gl_buf *b);

/* Makes room for n more bytes after the unread ones, moving them to the
 * front or growing the storage. Returns GL_OK or -ENOMEM (b unchanged). */
int gl_buf_reserve(gl_buf *b, size_t n);

/* Appends n bytes. Returns GL_OK or -ENOMEM (b unchanged). */
int gl_buf_append(gl_buf *b, const void *p, size_t n);

/* Marks n unread bytes (n <= len) as read. An emptied buffer restarts at
 * offset 0. */
void gl_buf_consume(gl_buf *b, size_t n);

/* The first unread byte and the end of the unread ones; NULL for a buffer
 * with no storage, since arithmetic on a null pointer, even + 0, is
 * undefined. So a caller that may hold an empty buffer passes these only
 * where a length of 0 means the pointer is not used (lua_pushlstring does
 * not use it; memcpy may not be given NULL). */
static inline char *gl_buf_head(const gl_buf *b) {
  return b->data ? b->data + b->off : NULL;
}
static inline char *gl_buf_tail(const gl_buf *b) {
  return b->data ? b->data + b->off + b->len : NULL;
}
static inline size_t gl_buf_room(const gl_buf *b) {
  return b->cap - b->off - b->len;
}

#endif
