/*
 * state.c: the Lua states glisten-lua creates (the command's, and each
 * worker's), on a gl_alloc heap of their own.
 *
 * A served connection makes and drops a string per message; a size-class
 * heap (core/alloc.c) gives and takes those in a few instructions where
 * malloc takes a hundred or more, and without malloc's per-block header.
 * States are single-threaded, and so is a heap. Under AddressSanitizer the
 * heap passes through to malloc, so the checker still sees every block.
 *
 * A state made by a host that loads glisten as a module keeps the host's
 * allocator.
 *
 * lg_setlimit caps the bytes such a state may hold (max_memory): past it,
 * an allocation that grows fails, Lua collects in full and tries again, and
 * then raises "not enough memory" in whatever asked. The count is Lua's
 * own (every block's size, as lua_Alloc passes it), so it costs one
 * comparison per allocation, and nothing while no limit is set.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "state.h"

#if defined(__SANITIZE_ADDRESS__)
/* malloc's blocks, which the checker sees (it cannot see into chunks) */
static void *system_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}
#define HEAP_NEW() NULL
#define HEAP_FN system_alloc
#define SYSTEM_HEAP 1
#else
#define HEAP_NEW() gl_alloc_new()
#define HEAP_FN gl_alloc_fn
#define SYSTEM_HEAP 0
#endif

static char HEAP_KEY;

typedef struct heap_state {
  int warn;     /* warnings on (lua_warning "@on" / "@off") */
  int cont;     /* in the middle of a warning made of pieces */
  void *heap;   /* HEAP_FN's ud */
  size_t limit; /* bytes the state may hold; 0: no limit */
  size_t used;  /* bytes it holds, while a limit is set */
  int reserved; /* lg_reserve calls in force: the limit is LG_RESERVE more */
} heap_state;

/* HEAP_FN with a cap on what the blocks add up to; ud is the heap_state.
 * Freeing and shrinking never fail. */
static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  heap_state *h = ud;
  size_t old = ptr ? osize : 0, cap = h->limit + (h->reserved ? LG_RESERVE : 0);
  void *p;
  if (nsize > old && (h->used > cap || nsize - old > cap - h->used))
    return NULL;
  p = HEAP_FN(h->heap, ptr, osize, nsize);
  if (p || nsize == 0) h->used = h->used - old + nsize;
  return p;
}

/* Writes s to stderr escaped (gl_log_escape): a script's text can neither
 * start a line nor send the terminal its control sequences. */
static void put_escaped(const char *s) {
  char out[1024];
  size_t len = strlen(s);
  while (len) {
    size_t took = gl_log_escape(out, sizeof out, s, len);
    fputs(out, stderr);
    s += took;
    len -= took;
  }
}

static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fputs("PANIC: unprotected error in call to Lua API (", stderr);
  put_escaped(msg ? msg : "error object is not a string");
  fputs(")\n", stderr);
  return 0; /* Lua aborts */
}

/* Warnings as the stand-alone lua prints them (off until "@on"), a
 * warning's pieces escaped, on one line. */
static void warn(void *ud, const char *msg, int tocont) {
  heap_state *h = ud;
  if (!h->cont && *msg == '@') { /* a control message */
    if (strcmp(msg, "@on") == 0) h->warn = 1;
    else if (strcmp(msg, "@off") == 0) h->warn = 0;
    return;
  }
  if (h->warn) {
    if (!h->cont) fputs("Lua warning: ", stderr);
    put_escaped(msg);
    if (!tocont) fputs("\n", stderr);
  }
  h->cont = tocont;
}

lua_State *lg_newstate(void) {
  gl_alloc *a = HEAP_NEW();
  heap_state *h;
  lua_State *L;
  if (!a && !SYSTEM_HEAP) return NULL;
  h = HEAP_FN(a, NULL, 0, sizeof *h);
  if (!h) {
    gl_alloc_free(a);
    return NULL;
  }
  memset(h, 0, sizeof *h);
  h->heap = a;
  L = lua_newstate(HEAP_FN, a);
  if (!L) {
    HEAP_FN(a, h, sizeof *h, 0);
    gl_alloc_free(a);
    return NULL;
  }
  lua_atpanic(L, panic);
  lua_setwarnf(L, warn, h);
  lua_pushlightuserdata(L, h);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &HEAP_KEY);
  return L;
}

/* The heap_state of a state made by lg_newstate, or NULL. */
static heap_state *heap_of(lua_State *L) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  heap_state *h;
  if (f != HEAP_FN && f != limited_alloc) return NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &HEAP_KEY);
  h = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return h;
}

void lg_closestate(lua_State *L) {
  heap_state *h = heap_of(L);
  void *heap = h->heap;
  lua_close(L); /* may still warn, from a finalizer */
  HEAP_FN(heap, h, sizeof *h, 0);
  gl_alloc_free(heap);
}

size_t lg_getlimit(lua_State *L) {
  heap_state *h = heap_of(L);
  return h ? h->limit : 0;
}

int lg_setlimit(lua_State *L, size_t limit) {
  heap_state *h = heap_of(L);
  size_t used;
  if (!h) return -1;
  if (!limit) {
    lua_setallocf(L, HEAP_FN, h->heap);
    h->limit = 0;
    return 0;
  }
  used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 +
         (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
  if (used > limit) return -2;
  h->used = used;
  h->limit = limit;
  lua_setallocf(L, limited_alloc, h);
  return 0;
}

int lg_reserve(lua_State *L, int on) {
  heap_state *h = heap_of(L);
  if (!h || !h->limit) return 0;
  h->reserved += on ? 1 : -1;
  return 1;
}
