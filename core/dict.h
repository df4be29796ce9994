/*
 * dict.h: a dictionary shared by every thread of the process, with
 * OpenResty's ngx.shared.DICT semantics: string keys; string, integer,
 * float or boolean values; per-key time to live; atomic operations.
 *
 * Memory is bounded: keys, values and per-entry overhead count against
 * max_bytes. When a set needs room, expired entries go first, then the
 * least recently used ones (a get or a set makes an entry recent). An add or
 * an incr never evicts a live entry: it fails with GL_DICT_NOMEM instead.
 *
 * Every call takes the dictionary's mutex for its whole duration and calls
 * nothing outside this file while holding it.
 */
#ifndef GL_DICT_H
#define GL_DICT_H

#include <stddef.h>

#include "buf.h"

enum { GL_DV_NIL = 0, GL_DV_BOOL, GL_DV_INT, GL_DV_NUM, GL_DV_STR };

typedef struct gl_dval {
  int type;
  int b;
  long long i;
  double n;
  const char *s; /* GL_DV_STR: bytes (in the caller's buffer on output) */
  size_t len;
} gl_dval;

enum {
  GL_DICT_OK = 0,
  GL_DICT_NOTFOUND = 1, /* no such key (or it expired) */
  GL_DICT_EXISTS = 2,   /* add: the key is there */
  GL_DICT_NOMEM = 3,    /* no room within max_bytes */
  GL_DICT_NOTNUM = 4    /* incr: the value is not a number */
};

enum { GL_DICT_SET = 0, GL_DICT_ADD = 1 };

typedef struct gl_dict gl_dict;

/* A dictionary holding at most max_bytes. NULL when out of memory. */
gl_dict *gl_dict_new(size_t max_bytes);
void gl_dict_free(gl_dict *d);

/* Copies key's value to *out; string bytes go to tmp (out->s points there,
 * or to a static "" for an empty string: never NULL).
 * Returns GL_DICT_OK, GL_DICT_NOTFOUND or GL_DICT_NOMEM (tmp could not
 * grow). */
int gl_dict_get(gl_dict *d, const char *k, size_t kl, gl_dval *out,
                gl_buf *tmp);

/* Stores v (GL_DV_NIL deletes) with a time to live in seconds (<= 0:
 * forever). mode GL_DICT_ADD fails with GL_DICT_EXISTS when the key is
 * there. *evicted (may be NULL) tells whether live entries were evicted to
 * make room. */
int gl_dict_set(gl_dict *d, const char *k, size_t kl, const gl_dval *v,
                double ttl, int mode, int *evicted);

/* Adds step (GL_DV_INT or GL_DV_NUM) to key's number, creating it from init
 * when missing (init NULL or GL_DV_NIL: GL_DICT_NOTFOUND), to expire after
 * init_ttl seconds (0: never; an existing key keeps its own). Integers stay
 * integers when step and value are. The result goes to *out. */
int gl_dict_incr(gl_dict *d, const char *k, size_t kl, const gl_dval *step,
                 const gl_dval *init, double init_ttl, gl_dval *out);

/* Removes key; GL_DICT_OK whether or not it was there. */
int gl_dict_delete(gl_dict *d, const char *k, size_t kl);

/* Writes up to max (0: all) live keys to tmp, each as a size_t length then
 * its bytes; *count receives how many. GL_DICT_OK or GL_DICT_NOMEM. */
int gl_dict_keys(gl_dict *d, size_t max, gl_buf *tmp, size_t *count);

/* Bytes in use and the limit. */
void gl_dict_usage(gl_dict *d, size_t *used, size_t *max_bytes);

#endif
