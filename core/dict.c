#define _POSIX_C_SOURCE 200809L
#include "dict.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gl.h"

/* An entry: one allocation holding its links, its value and its bytes. */
typedef struct entry {
  struct entry *hnext;       /* hash chain; the free list once dropped */
  struct entry *prev, *next; /* recency list: head is the most recent */
  uint64_t hash;
  double expires;            /* monotonic seconds; 0: never */
  size_t heap;               /* 1 + its slot in the expiry heap; 0: none */
  size_t kl, vl;             /* key bytes, string value bytes */
  int type;                  /* GL_DV_* */
  union {
    int b;
    long long i;
    double n;
  } u;
  char data[];               /* key bytes, then string value bytes */
} entry;

/* The expiry heap lives in blocks of this many slots, so that it grows by
 * one allocation of a fixed size and never copies its slots. */
#define HEAP_BLOCK 1024

/* Buckets moved per call while the table grows; and empty buckets skipped
 * per call, at most, ten times that (as Redis' incremental rehash). */
#define REHASH_STEP 8

/* Expired entries a write drops in passing, so that they do not wait for
 * the dictionary to fill (OpenResty's set drops up to two). */
#define REAP 2

struct gl_dict {
  pthread_mutex_t mu;
  /* tab[0]; while growing, tab[1] (twice as large) too: the buckets of
   * tab[0] below moved have gone there (bucket()). */
  entry **tab[2];
  size_t nb[2], moved;
  size_t count, used, max;
  entry *head, *tail;
  entry ***heap;        /* blocks of HEAP_BLOCK slots: a binary min-heap by
                           expires of the entries with a time to live */
  size_t nheap, nblocks, dirsize;
  entry *dead;          /* dropped under the mutex, freed after it */
  unsigned long long evicted, expired, examined;
};

/* The hash bucket's slot and the expiry heap's: an entry's share of them
 * counts against max_bytes with the entry. */
#define OVERHEAD (sizeof(entry) + 2 * sizeof(entry *))

size_t gl_dict_entry_size(size_t kl, size_t vl) {
  if (kl > SIZE_MAX / 4 || vl > SIZE_MAX / 4) return SIZE_MAX;
  return OVERHEAD + kl + vl;
}

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t hash(const char *k, size_t kl) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < kl; i++) {
    h ^= (unsigned char)k[i];
    h *= 1099511628211ull;
  }
  return h;
}

gl_dict *gl_dict_new(size_t max_bytes) {
  gl_dict *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->nb[0] = 64;
  d->tab[0] = calloc(d->nb[0], sizeof *d->tab[0]);
  if (!d->tab[0]) {
    free(d);
    return NULL;
  }
  d->max = max_bytes;
  pthread_mutex_init(&d->mu, NULL);
  return d;
}

static void free_list(entry *e) {
  while (e) {
    entry *next = e->hnext;
    free(e);
    e = next;
  }
}

void gl_dict_free(gl_dict *d) {
  entry *e, *next;
  if (!d) return;
  for (e = d->head; e; e = next) {
    next = e->next;
    free(e);
  }
  free_list(d->dead);
  free(d->tab[0]);
  free(d->tab[1]);
  for (size_t i = 0; i < d->nblocks; i++) free(d->heap[i]);
  free(d->heap);
  pthread_mutex_destroy(&d->mu);
  free(d);
}

/* Lets go of the mutex, then frees what was dropped under it. */
static void unlock(gl_dict *d) {
  entry *dead = d->dead;
  d->dead = NULL;
  pthread_mutex_unlock(&d->mu);
  free_list(dead);
}

/* ---- the expiry heap ---- */

static entry **heap_at(const gl_dict *d, size_t i) {
  return &d->heap[i / HEAP_BLOCK][i % HEAP_BLOCK];
}

static void heap_put(gl_dict *d, size_t i, entry *e) {
  *heap_at(d, i) = e;
  e->heap = i + 1;
}

static entry *heap_top(const gl_dict *d) {
  return d->nheap ? *heap_at(d, 0) : NULL;
}

/* Makes sure one more entry fits in the heap: at most one block and a
 * directory of pointers to blocks (1/HEAP_BLOCK of the slots) allocated.
 * GL_OK or GL_ERR (out of memory: the heap is unchanged). */
static int heap_reserve(gl_dict *d) {
  if (d->nheap < d->nblocks * HEAP_BLOCK) return GL_OK;
  if (d->nblocks == d->dirsize) {
    size_t n = d->dirsize ? d->dirsize * 2 : 8;
    entry ***dir = realloc(d->heap, n * sizeof *dir);
    if (!dir) return GL_ERR;
    d->heap = dir;
    d->dirsize = n;
  }
  entry **block = malloc(HEAP_BLOCK * sizeof *block);
  if (!block) return GL_ERR;
  d->heap[d->nblocks++] = block;
  return GL_OK;
}

static void sift_up(gl_dict *d, size_t i, entry *e) {
  while (i > 0) {
    entry *p = *heap_at(d, (i - 1) / 2);
    if (p->expires <= e->expires) break;
    heap_put(d, i, p);
    i = (i - 1) / 2;
  }
  heap_put(d, i, e);
}

static void sift_down(gl_dict *d, size_t i, entry *e) {
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= d->nheap) break;
    entry *ch = *heap_at(d, c);
    if (c + 1 < d->nheap && (*heap_at(d, c + 1))->expires < ch->expires)
      ch = *heap_at(d, ++c);
    if (e->expires <= ch->expires) break;
    heap_put(d, i, ch);
    i = c;
  }
  heap_put(d, i, e);
}

/* Adds e (e->expires set); heap_reserve has made room. */
static void heap_push(gl_dict *d, entry *e) {
  sift_up(d, d->nheap++, e);
}

static void heap_remove(gl_dict *d, entry *e) {
  size_t i = e->heap - 1;
  entry *last = *heap_at(d, --d->nheap);
  e->heap = 0;
  if (last != e) {
    if (i > 0 && (*heap_at(d, (i - 1) / 2))->expires > last->expires)
      sift_up(d, i, last);
    else
      sift_down(d, i, last);
  }
  /* Keep one spare block: an entry coming and going at a block's edge
   * must not allocate each time. */
  if (d->nblocks >= 2 && d->nheap + 2 * HEAP_BLOCK <= d->nblocks * HEAP_BLOCK)
    free(d->heap[--d->nblocks]);
}

/* ---- the hash table ---- */

/* The chain that holds (or would hold) an entry of hash h. */
static entry **bucket(gl_dict *d, uint64_t h) {
  size_t i = h & (d->nb[0] - 1);
  if (d->tab[1] && i < d->moved) return &d->tab[1][h & (d->nb[1] - 1)];
  return &d->tab[0][i];
}

static entry **slot(gl_dict *d, uint64_t h, const char *k, size_t kl) {
  entry **p = bucket(d, h);
  while (*p && ((*p)->hash != h || (*p)->kl != kl ||
                memcmp((*p)->data, k, kl) != 0))
    p = &(*p)->hnext;
  return p;
}

/* While the table grows, moves up to REHASH_STEP chains of tab[0] to
 * tab[1], looking at no more than 10 * REHASH_STEP buckets. */
static void rehash_step(gl_dict *d) {
  size_t chains = 0, looked = 0;
  if (!d->tab[1]) return;
  while (d->moved < d->nb[0] && chains < REHASH_STEP &&
         looked < 10 * REHASH_STEP) {
    entry *e = d->tab[0][d->moved], *next;
    d->tab[0][d->moved++] = NULL;
    looked++;
    if (e) chains++;
    for (; e; e = next) {
      next = e->hnext;
      entry **p = &d->tab[1][e->hash & (d->nb[1] - 1)];
      e->hnext = *p;
      *p = e;
    }
  }
  if (d->moved == d->nb[0]) {
    free(d->tab[0]);
    d->tab[0] = d->tab[1];
    d->nb[0] = d->nb[1];
    d->tab[1] = NULL;
    d->moved = 0;
  }
}

/* Starts growing the table; the calls that follow move its chains. Out of
 * memory, it stays as it is: longer chains, still correct. Every insert
 * moves at least one bucket, so a growth ends before the entries double
 * again. */
static void grow(gl_dict *d) {
  size_t n = d->nb[0] * 2;
  d->tab[1] = calloc(n, sizeof *d->tab[1]);
  if (!d->tab[1]) return;
  d->nb[1] = n;
  d->moved = 0;
}

/* ---- entries ---- */

static void lru_unlink(gl_dict *d, entry *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    d->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    d->tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_front(gl_dict *d, entry *e) {
  e->prev = NULL;
  e->next = d->head;
  if (d->head) d->head->prev = e;
  d->head = e;
  if (!d->tail) d->tail = e;
}

/* Unlinks e from everything; it is freed after the mutex (unlock). */
static void drop(gl_dict *d, entry *e) {
  entry **p = bucket(d, e->hash);
  while (*p != e) p = &(*p)->hnext;
  *p = e->hnext;
  lru_unlink(d, e);
  if (e->heap) heap_remove(d, e);
  d->used -= gl_dict_entry_size(e->kl, e->vl);
  d->count--;
  e->hnext = d->dead;
  d->dead = e;
}

static int expired(const entry *e, double now) {
  return e->expires != 0 && e->expires <= now;
}

/* The live entry for k, or NULL (an expired one is dropped). */
static entry *find(gl_dict *d, uint64_t h, const char *k, size_t kl,
                   double now) {
  entry *e = *slot(d, h, k, kl);
  if (e && expired(e, now)) {
    d->expired++;
    drop(d, e);
    return NULL;
  }
  return e;
}

/* Drops up to n expired entries, the soonest expired first. */
static void reap(gl_dict *d, double now, int n) {
  while (n-- > 0) {
    entry *e = heap_top(d);
    d->examined++;
    if (!e || !expired(e, now)) return;
    d->expired++;
    drop(d, e);
  }
}

/* Frees room for need more bytes: expired entries first, the soonest
 * expired first, then (with may_evict) the least recently used but keep.
 * Each round drops an entry, which frees at least OVERHEAD bytes, or
 * returns; so a call drops at most need / OVERHEAD + 1 entries and looks
 * at two per drop, whatever the number of entries held. Returns whether
 * there is room. */
static int make_room(gl_dict *d, size_t need, double now, int may_evict,
                     int *evicted, const entry *keep) {
  while (d->used + need > d->max) {
    entry *e = heap_top(d);
    d->examined++;
    if (e && expired(e, now)) { /* never keep: find dropped it if so */
      d->expired++;
      drop(d, e);
      continue;
    }
    if (!may_evict) return 0;
    e = d->tail;
    if (e && e == keep) e = e->prev;
    if (!e) return 0;
    d->examined++;
    d->evicted++;
    drop(d, e);
    if (evicted) *evicted = 1;
  }
  return 1;
}

/* A new entry holding k and v, made outside the mutex; NULL when out of
 * memory. */
static entry *make(uint64_t h, const char *k, size_t kl, const gl_dval *v) {
  size_t vl = v->type == GL_DV_STR ? v->len : 0;
  entry *e = malloc(sizeof *e + kl + vl);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  e->hash = h;
  e->kl = kl;
  e->vl = vl;
  e->type = v->type;
  switch (v->type) {
    case GL_DV_BOOL: e->u.b = v->b; break;
    case GL_DV_INT: e->u.i = v->i; break;
    case GL_DV_NUM: e->u.n = v->n; break;
    default: break;
  }
  if (kl) memcpy(e->data, k, kl);
  if (vl) memcpy(e->data + kl, v->s, vl);
  return e;
}

/* Links e in as the most recent; with a time to live, heap_reserve has
 * made room for it in the heap. */
static void insert(gl_dict *d, entry *e, double expires) {
  entry **p = bucket(d, e->hash);
  e->hnext = *p;
  *p = e;
  lru_front(d, e);
  e->expires = expires;
  if (expires) heap_push(d, e);
  d->used += gl_dict_entry_size(e->kl, e->vl);
  d->count++;
  if (!d->tab[1] && d->count > d->nb[0]) grow(d);
}

static void value_of(const entry *e, gl_dval *out) {
  memset(out, 0, sizeof *out);
  out->type = e->type;
  switch (e->type) {
    case GL_DV_BOOL: out->b = e->u.b; break;
    case GL_DV_INT: out->i = e->u.i; break;
    case GL_DV_NUM: out->n = e->u.n; break;
    case GL_DV_STR: out->s = e->data + e->kl; out->len = e->vl; break;
    default: break;
  }
}

static int copy_out(const entry *e, gl_dval *out, gl_buf *tmp) {
  value_of(e, out);
  if (e->type == GL_DV_STR) {
    tmp->off = tmp->len = 0;
    if (e->vl == 0) {
      out->s = ""; /* tmp may have no storage: its head would be NULL */
      return GL_DICT_OK;
    }
    if (gl_buf_append(tmp, e->data + e->kl, e->vl) != 0) return GL_DICT_NOMEM;
    out->s = gl_buf_head(tmp);
  }
  return GL_DICT_OK;
}

int gl_dict_get(gl_dict *d, const char *k, size_t kl, gl_dval *out,
                gl_buf *tmp) {
  int rc = GL_DICT_NOTFOUND;
  uint64_t h = hash(k, kl);
  double now = now_mono();
  pthread_mutex_lock(&d->mu);
  rehash_step(d);
  entry *e = find(d, h, k, kl, now);
  if (e) {
    lru_unlink(d, e);
    lru_front(d, e);
    rc = copy_out(e, out, tmp);
  }
  unlock(d);
  return rc;
}

int gl_dict_set(gl_dict *d, const char *k, size_t kl, const gl_dval *v,
                double ttl, int mode, int *evicted) {
  uint64_t h = hash(k, kl);
  double now = now_mono();
  int rc = GL_DICT_OK;
  size_t need = gl_dict_entry_size(kl, v->type == GL_DV_STR ? v->len : 0);
  entry *e = NULL;
  if (evicted) *evicted = 0;
  if (v->type != GL_DV_NIL && need <= d->max) e = make(h, k, kl, v);
  pthread_mutex_lock(&d->mu);
  rehash_step(d);
  reap(d, now, REAP);
  entry *old = find(d, h, k, kl, now);
  if (old && mode == GL_DICT_ADD) {
    rc = GL_DICT_EXISTS;
  } else if (v->type == GL_DV_NIL) {
    if (old) drop(d, old);
  } else {
    /* A failed set keeps the old value: room is made around it, and it
     * goes only once the new entry is in. */
    size_t freed = old ? gl_dict_entry_size(old->kl, old->vl) : 0;
    if (!e || (ttl > 0 && heap_reserve(d) != GL_OK) ||
        !make_room(d, need > freed ? need - freed : 0, now,
                   mode == GL_DICT_SET, evicted, old)) {
      rc = GL_DICT_NOMEM;
    } else {
      if (old) drop(d, old);
      insert(d, e, ttl > 0 ? now + ttl : 0);
      e = NULL;
    }
  }
  unlock(d);
  free(e); /* not stored */
  return rc;
}

int gl_dict_incr(gl_dict *d, const char *k, size_t kl, const gl_dval *step,
                 const gl_dval *init, double init_ttl, gl_dval *out) {
  uint64_t h = hash(k, kl);
  double now = now_mono();
  int rc = GL_DICT_OK;
  pthread_mutex_lock(&d->mu);
  rehash_step(d);
  reap(d, now, REAP);
  entry *e = find(d, h, k, kl, now);
  if (!e) {
    if (!init || (init->type != GL_DV_INT && init->type != GL_DV_NUM)) {
      rc = init && init->type != GL_DV_NIL ? GL_DICT_NOTNUM : GL_DICT_NOTFOUND;
      goto done;
    }
    /* Made under the mutex, unlike set's: a number's entry is small, and
     * most calls find their key. */
    if ((init_ttl > 0 && heap_reserve(d) != GL_OK) ||
        !make_room(d, gl_dict_entry_size(kl, 0), now, 0, NULL, NULL) ||
        !(e = make(h, k, kl, init))) {
      rc = GL_DICT_NOMEM;
      goto done;
    }
    insert(d, e, init_ttl > 0 ? now + init_ttl : 0);
  } else {
    lru_unlink(d, e);
    lru_front(d, e);
  }
  if (e->type != GL_DV_INT && e->type != GL_DV_NUM) {
    rc = GL_DICT_NOTNUM;
    goto done;
  }
  if (e->type == GL_DV_INT && step->type == GL_DV_INT) {
    e->u.i = (long long)((unsigned long long)e->u.i +
                         (unsigned long long)step->i);
  } else {
    double a = e->type == GL_DV_INT ? (double)e->u.i : e->u.n;
    double b = step->type == GL_DV_INT ? (double)step->i : step->n;
    e->type = GL_DV_NUM;
    e->u.n = a + b;
  }
  value_of(e, out);
done:
  unlock(d);
  return rc;
}

int gl_dict_delete(gl_dict *d, const char *k, size_t kl) {
  uint64_t h = hash(k, kl);
  pthread_mutex_lock(&d->mu);
  rehash_step(d);
  entry *e = *slot(d, h, k, kl);
  if (e) drop(d, e);
  unlock(d);
  return GL_DICT_OK;
}

int gl_dict_keys(gl_dict *d, size_t max, gl_buf *tmp, size_t *count) {
  double now = now_mono();
  int rc = GL_DICT_OK;
  *count = 0;
  tmp->off = tmp->len = 0;
  pthread_mutex_lock(&d->mu);
  for (entry *e = d->head; e && (!max || *count < max); e = e->next) {
    if (expired(e, now)) continue;
    if (gl_buf_append(tmp, &e->kl, sizeof e->kl) != 0 ||
        gl_buf_append(tmp, e->data, e->kl) != 0) {
      rc = GL_DICT_NOMEM;
      break;
    }
    (*count)++;
  }
  pthread_mutex_unlock(&d->mu);
  return rc;
}

void gl_dict_stats_get(gl_dict *d, gl_dict_stats *st) {
  pthread_mutex_lock(&d->mu);
  st->entries = d->count;
  st->expiring = d->nheap;
  st->used = d->used;
  st->max = d->max;
  st->evicted = d->evicted;
  st->expired = d->expired;
  st->examined = d->examined;
  pthread_mutex_unlock(&d->mu);
}

/* gl_dict_check's walk; the mutex is held. */
static int check(gl_dict *d, char *err, size_t errlen) {
#define BAD(...) return snprintf(err, errlen, __VA_ARGS__), GL_ERR
  size_t n = 0, used = 0, timed = 0, chained = 0;
  const entry *prev = NULL;
  for (entry *e = d->head; e; prev = e, e = e->next) {
    if (++n > d->count) BAD("the recency list is longer than count");
    if (e->prev != prev) BAD("entry %zu: prev link broken", n);
    if (e->hash != hash(e->data, e->kl)) BAD("entry %zu: wrong hash", n);
    if (*slot(d, e->hash, e->data, e->kl) != e)
      BAD("entry %zu: not found in its hash chain", n);
    used += gl_dict_entry_size(e->kl, e->vl);
    if (e->expires) {
      timed++;
      if (!e->heap || e->heap > d->nheap || *heap_at(d, e->heap - 1) != e)
        BAD("entry %zu: not at its place in the expiry heap", n);
    } else if (e->heap) {
      BAD("entry %zu: in the expiry heap without a time to live", n);
    }
  }
  if (prev != d->tail) BAD("tail is not the last entry");
  if (n != d->count) BAD("count %zu, list %zu", d->count, n);
  if (used != d->used) BAD("used %zu, entries add up to %zu", d->used, used);
  if (used > d->max) BAD("used %zu over max %zu", used, d->max);
  if (timed != d->nheap) BAD("heap %zu, timed entries %zu", d->nheap, timed);
  if (d->nheap > d->nblocks * HEAP_BLOCK) BAD("heap past its blocks");
  for (size_t i = 1; i < d->nheap; i++)
    if ((*heap_at(d, (i - 1) / 2))->expires > (*heap_at(d, i))->expires)
      BAD("heap order broken at slot %zu", i);
  for (int t = 0; t < 2; t++)
    for (size_t b = 0; d->tab[t] && b < d->nb[t]; b++)
      for (const entry *e = d->tab[t][b]; e; e = e->hnext)
        if (++chained > d->count) BAD("hash chains hold more than count");
  if (chained != d->count) BAD("hash chains hold %zu of %zu", chained, n);
  if (d->tab[1] && d->moved >= d->nb[0]) BAD("a finished growth not ended");
  return GL_OK;
#undef BAD
}

int gl_dict_check(gl_dict *d, char *err, size_t errlen) {
  pthread_mutex_lock(&d->mu);
  int rc = check(d, err, errlen);
  pthread_mutex_unlock(&d->mu);
  return rc;
}
