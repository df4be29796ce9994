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
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "lg.h"

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
  int warn;   /* warnings on (lua_warning "@on" / "@off") */
  int cont;   /* in the middle of a warning made of pieces */
} heap_state;

static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n",
          msg ? msg : "error object is not a string");
  return 0; /* Lua aborts */
}

/* Warnings as the stand-alone lua prints them: off until "@on". */
static void warn(void *ud, const char *msg, int tocont) {
  heap_state *h = ud;
  if (!h->cont && *msg == '@') { /* a control message */
    if (strcmp(msg, "@on") == 0) h->warn = 1;
    else if (strcmp(msg, "@off") == 0) h->warn = 0;
    return;
  }
  if (h->warn) {
    if (!h->cont) fputs("Lua warning: ", stderr);
    fputs(msg, stderr);
    if (!tocont) fputs("\n", stderr);
  }
  h->cont = tocont;
}

/* A new state on a heap of its own, or NULL when out of memory. Close it
 * with lg_closestate. The warning switch lives in a block of the heap,
 * found through the registry. */
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

/* Closes a state made by lg_newstate and frees its heap. */
void lg_closestate(lua_State *L) {
  void *ud;
  heap_state *h;
  lua_getallocf(L, &ud);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &HEAP_KEY);
  h = lua_touserdata(L, -1);
  lua_close(L); /* may still warn, from a finalizer */
  HEAP_FN(ud, h, sizeof *h, 0);
  gl_alloc_free(ud);
}
