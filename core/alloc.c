/*
 * alloc.c: see alloc.h. A block of class c is (c + 1) * GL_ALLOC_GRAIN
 * bytes; a free one holds the next free block of its class in its first
 * word.
 */
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#define NCLASS (GL_ALLOC_MAX / GL_ALLOC_GRAIN)

typedef struct chunk {
  struct chunk *next;
  /* GL_ALLOC_GRAIN-aligned blocks follow the header */
} chunk;

#define CHUNK_HEAD                                                          \
  ((sizeof(chunk) + GL_ALLOC_GRAIN - 1) / GL_ALLOC_GRAIN * GL_ALLOC_GRAIN)

struct gl_alloc {
  void *free[NCLASS];
  char *next, *end; /* the unused rest of the newest chunk */
  chunk *chunks;
  gl_alloc_stats st;
};

gl_alloc *gl_alloc_new(void) { return calloc(1, sizeof(gl_alloc)); }

void gl_alloc_free(gl_alloc *a) {
  chunk *c, *n;
  if (!a) return;
  for (c = a->chunks; c; c = n) {
    n = c->next;
    free(c);
  }
  free(a);
}

static inline size_t class_of(size_t n) { return (n - 1) / GL_ALLOC_GRAIN; }

static inline void push_free(gl_alloc *a, void *p, size_t c) {
  *(void **)p = a->free[c];
  a->free[c] = p;
}

/* A block of class c from a chunk; NULL when no chunk can be had. The rest
 * of a chunk too small for the request goes to the free list it fits. */
static void *carve(gl_alloc *a, size_t c) {
  size_t sz = (c + 1) * GL_ALLOC_GRAIN;
  char *p;
  if ((size_t)(a->end - a->next) < sz) {
    chunk *k = malloc(GL_ALLOC_CHUNK);
    if (!k) return NULL;
    size_t rest = (size_t)(a->end - a->next);
    if (rest) push_free(a, a->next, class_of(rest));
    k->next = a->chunks;
    a->chunks = k;
    a->next = (char *)k + CHUNK_HEAD;
    a->end = (char *)k + GL_ALLOC_CHUNK;
    a->st.chunks += GL_ALLOC_CHUNK;
  }
  p = a->next;
  a->next += sz;
  return p;
}

static inline void *small_alloc(gl_alloc *a, size_t n) {
  size_t c = class_of(n);
  void *p = a->free[c];
  if (p)
    a->free[c] = *(void **)p;
  else if (!(p = carve(a, c)))
    return NULL;
  a->st.small += (c + 1) * GL_ALLOC_GRAIN;
  return p;
}

static inline void small_free(gl_alloc *a, void *p, size_t n) {
  size_t c = class_of(n);
  push_free(a, p, c);
  a->st.small -= (c + 1) * GL_ALLOC_GRAIN;
}

static inline void block_free(gl_alloc *a, void *p, size_t n) {
  if (n <= GL_ALLOC_MAX) {
    small_free(a, p, n);
  } else {
    free(p);
    a->st.large -= n;
  }
}

/* The common cases come first: a new small block, a small block freed. */
void *gl_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize) {
  gl_alloc *a = ud;
  void *q;
  if (!ptr) {
    if (nsize - 1 < GL_ALLOC_MAX) return small_alloc(a, nsize);
    if (nsize == 0) return NULL;
    if ((q = malloc(nsize))) a->st.large += nsize;
    return q;
  }
  if (nsize == 0) {
    block_free(a, ptr, osize);
    return NULL;
  }
  if (nsize <= GL_ALLOC_MAX) {
    if (osize <= GL_ALLOC_MAX && class_of(osize) == class_of(nsize))
      return ptr;
    q = small_alloc(a, nsize);
    if (!q) {
      /* A small block can keep its place when shrinking (its tail is lost
       * until gl_alloc_free: it is freed later as the smaller class); a
       * large one cannot. */
      if (osize > GL_ALLOC_MAX || nsize > osize) return NULL;
      a->st.small -= (class_of(osize) - class_of(nsize)) * GL_ALLOC_GRAIN;
      return ptr;
    }
  } else {
    if (osize > GL_ALLOC_MAX) { /* large to large: malloc's job */
      q = realloc(ptr, nsize);
      if (q) a->st.large = a->st.large - osize + nsize;
      return q;
    }
    if (!(q = malloc(nsize))) return NULL;
    a->st.large += nsize;
  }
  /* between the small and the large, or between small classes: move */
  memcpy(q, ptr, osize < nsize ? osize : nsize);
  block_free(a, ptr, osize);
  return q;
}

void gl_alloc_get_stats(const gl_alloc *a, gl_alloc_stats *st) { *st = a->st; }
