/*
 * alloc.h: a size-class allocator for one single-threaded heap, such as one
 * Lua state's.
 *
 * Small blocks (up to GL_ALLOC_MAX bytes) come from 64 KiB chunks, carved
 * in multiples of GL_ALLOC_GRAIN bytes; a freed small block goes onto its
 * size class's free list and is reused by the next request of that class.
 * So allocating and freeing the short-lived strings and tables of a busy
 * server costs a few instructions, with no per-block header. Larger blocks
 * go to malloc.
 *
 * The caller passes every block's size back when it frees or resizes it,
 * as lua_Alloc's contract does. Chunks are given back to the system only
 * by gl_alloc_free: a heap keeps the small blocks of its largest moment
 * for reuse, and gl_alloc_stats says how many bytes that is.
 *
 * Not thread-safe: one heap per thread at a time.
 */
#ifndef GL_ALLOC_H
#define GL_ALLOC_H

#include <stddef.h>

#define GL_ALLOC_GRAIN 16
#define GL_ALLOC_MAX 512
#define GL_ALLOC_CHUNK (64 * 1024)

typedef struct gl_alloc gl_alloc;

typedef struct gl_alloc_stats {
  size_t chunks;   /* bytes in chunks (small blocks, used or free) */
  size_t small;    /* bytes of small blocks in use, rounded to their class */
  size_t large;    /* bytes of large blocks in use (malloc's) */
} gl_alloc_stats;

/* A new, empty heap, or NULL when out of memory. */
gl_alloc *gl_alloc_new(void);

/* Frees the heap (NULL: nothing) and every chunk. Blocks still in use become invalid; large
 * ones still in use are not freed (so free them all first, as lua_close
 * does). */
void gl_alloc_free(gl_alloc *a);

/* The lua_Alloc contract, with ud a gl_alloc: nsize 0 frees ptr (osize
 * bytes; ptr may be NULL) and returns NULL; else ptr NULL allocates nsize
 * bytes (osize is then not a size and is ignored); else resizes ptr from
 * osize to nsize bytes. Returns NULL only when the request cannot be met,
 * and then ptr is unchanged. Shrinking a small block never fails. Blocks
 * are aligned to GL_ALLOC_GRAIN (small) or malloc's alignment. */
void *gl_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize);

void gl_alloc_get_stats(const gl_alloc *a, gl_alloc_stats *st);

#endif
