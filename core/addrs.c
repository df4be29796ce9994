/*
 * addrs.c: open connections counted by client address (addrs.h).
 *
 * A chained hash table (FNV-1a over the key) that doubles when it holds
 * more entries than buckets; an entry lives while its count is above 0.
 */
#include "addrs.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 64

struct gl_addr {
  gl_addr *next;
  unsigned hash;
  long count;
  size_t klen;
  char key[KEY_MAX];
};

struct gl_addrs {
  pthread_mutex_t mu;
  gl_addr **b; /* buckets */
  size_t nb, n;
};

static unsigned hash(const char *k, size_t n) {
  unsigned h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 16777619u;
  return h;
}

gl_addrs *gl_addrs_new(void) {
  gl_addrs *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->nb = 64;
  t->b = calloc(t->nb, sizeof *t->b);
  if (!t->b) {
    free(t);
    return NULL;
  }
  pthread_mutex_init(&t->mu, NULL);
  return t;
}

void gl_addrs_free(gl_addrs *t) {
  if (!t) return;
  for (size_t i = 0; i < t->nb; i++)
    for (gl_addr *e = t->b[i], *next; e; e = next) {
      next = e->next;
      free(e);
    }
  free(t->b);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

/* Doubles the buckets; under mu. Keeps the old ones when out of memory. */
static void grow(gl_addrs *t) {
  size_t nb = t->nb * 2;
  gl_addr **b = calloc(nb, sizeof *b);
  if (!b) return;
  for (size_t i = 0; i < t->nb; i++)
    for (gl_addr *e = t->b[i], *next; e; e = next) {
      next = e->next;
      e->next = b[e->hash & (nb - 1)];
      b[e->hash & (nb - 1)] = e;
    }
  free(t->b);
  t->b = b;
  t->nb = nb;
}

static gl_addr *find(gl_addrs *t, const char *key, size_t klen, unsigned h) {
  for (gl_addr *e = t->b[h & (t->nb - 1)]; e; e = e->next)
    if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
      return e;
  return NULL;
}

gl_addr *gl_addrs_take(gl_addrs *t, const char *key, size_t klen, long max,
                       int *full) {
  unsigned h;
  gl_addr *e;
  *full = 0;
  if (klen > KEY_MAX) klen = KEY_MAX;
  h = hash(key, klen);
  pthread_mutex_lock(&t->mu);
  e = find(t, key, klen, h);
  if (e && e->count >= max) {
    *full = 1;
    e = NULL;
  } else if (e) {
    e->count++;
  } else if ((e = malloc(sizeof *e))) {
    e->hash = h;
    e->count = 1;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->next = t->b[h & (t->nb - 1)];
    t->b[h & (t->nb - 1)] = e;
    if (++t->n > t->nb) grow(t);
  }
  pthread_mutex_unlock(&t->mu);
  return e;
}

void gl_addrs_give(gl_addrs *t, gl_addr *e) {
  pthread_mutex_lock(&t->mu);
  if (--e->count == 0) {
    gl_addr **p = &t->b[e->hash & (t->nb - 1)];
    while (*p != e) p = &(*p)->next;
    *p = e->next;
    t->n--;
    free(e);
  }
  pthread_mutex_unlock(&t->mu);
}

long gl_addrs_count(gl_addrs *t, const char *key, size_t klen) {
  long n;
  if (klen > KEY_MAX) klen = KEY_MAX;
  pthread_mutex_lock(&t->mu);
  gl_addr *e = find(t, key, klen, hash(key, klen));
  n = e ? e->count : 0;
  pthread_mutex_unlock(&t->mu);
  return n;
}
