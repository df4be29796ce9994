/*
 * addrs.h: open connections counted by client address, for a cap per
 * address (max_connections_per_address). Any thread may use one table (a
 * pool's workers share it); a mutex guards it. It holds an entry per
 * address that has a connection open, and no more.
 */
#ifndef GL_ADDRS_H
#define GL_ADDRS_H

#include <stddef.h>

typedef struct gl_addrs gl_addrs;
typedef struct gl_addr gl_addr; /* one address's count; opaque */

/* A new, empty table, or NULL when out of memory. */
gl_addrs *gl_addrs_new(void);

/* Frees t and its entries (none may be given back after). */
void gl_addrs_free(gl_addrs *t);

/* Takes a place for the address key (klen bytes, at most 64) when fewer
 * than max are taken: returns its entry, to give back with gl_addrs_give.
 * NULL when max are taken (*full set) or out of memory (*full clear). */
gl_addr *gl_addrs_take(gl_addrs *t, const char *key, size_t klen, long max,
                       int *full);

/* Gives back a place gl_addrs_take returned. */
void gl_addrs_give(gl_addrs *t, gl_addr *e);

/* Places taken for key now (0: none). */
long gl_addrs_count(gl_addrs *t, const char *key, size_t klen);

#endif
