/*
 * dict.h: a dictionary shared by every thread of the process, with
 * OpenResty's ngx.shared.DICT semantics: string keys; string, integer,
 * float or boolean values; per-key time to live; atomic operations.
 *
 * Memory is bounded: keys, values and per-entry overhead (what
 * gl_dict_entry_size says) count against max_bytes. When a set needs room,
 * expired entries go first, then the least recently used ones (a get or a
 * set makes an entry recent). An add or an incr never evicts a live entry:
 * it fails with GL_DICT_NOMEM instead.
 *
 * Every call takes the dictionary's mutex and calls nothing outside this
 * file while holding it. How long it holds it does not depend on the
 * number of entries (but for the logarithm an expiry heap costs), except
 * in gl_dict_keys, which walks the entries it returns, and gl_dict_check:
 * expired entries are found at the top of a heap ordered by expiry and
 * the least recently used at the tail of a list, never by a walk; a write
 * drops at most two expired entries in passing and, to make room, at most
 * one entry per gl_dict_entry_size(0, 0) bytes it needs, plus one; a
 * growing hash table moves a few chains per call. Hashing the key, copying
 * a set's value and freeing dropped entries happen outside the mutex.
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

/* What an entry with kl key bytes and vl string value bytes (0 for other
 * types) counts against max_bytes. */
size_t gl_dict_entry_size(size_t kl, size_t vl);

/* Copies key's value to *out; string bytes go to tmp (out->s points there,
 * or to a static "" for an empty string: never NULL). Returns GL_DICT_OK,
 * GL_DICT_NOTFOUND or GL_DICT_NOMEM (tmp could not grow). */
int gl_dict_get(gl_dict *d, const char *k, size_t kl, gl_dval *out,
                gl_buf *tmp);

/* Stores v (GL_DV_NIL deletes) with a time to live in seconds (<= 0:
 * forever). mode GL_DICT_ADD fails with GL_DICT_EXISTS when the key is
 * there. *evicted (may be NULL) tells whether live entries were evicted to
 * make room. A set that fails keeps the old value. */
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

/* Writes up to max (0: all) live keys to tmp, most recently used first,
 * each as a size_t length then its bytes; *count receives how many.
 * GL_DICT_OK or GL_DICT_NOMEM. Walks the entries from the most recent
 * under the mutex: keys(0) takes time in proportion to the entries held. */
int gl_dict_keys(gl_dict *d, size_t max, gl_buf *tmp, size_t *count);

typedef struct gl_dict_stats {
  size_t entries;  /* held, including expired ones not dropped yet */
  size_t expiring; /* of which with a time to live (in the expiry heap) */
  size_t used;     /* bytes counted against max_bytes */
  size_t max;      /* max_bytes */
  unsigned long long evicted;  /* live entries dropped to make room */
  unsigned long long expired;  /* expired entries dropped */
  unsigned long long examined; /* entries looked at to expire or evict */
} gl_dict_stats;

/* Counters and sizes, for tests and figures: the work of one call is the
 * difference of two readings of examined. */
void gl_dict_stats_get(gl_dict *d, gl_dict_stats *st);

/* For tests: walks every entry and checks the invariants (hash chains, the
 * recency list, the expiry heap, the byte count). GL_OK, or GL_ERR with the
 * first broken one written to err. Takes time in proportion to the
 * entries. */
int gl_dict_check(gl_dict *d, char *err, size_t errlen);

#endif
