#define _POSIX_C_SOURCE 200809L
#include "dict.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct entry {
  struct entry *hnext;      /* hash chain */
  struct entry *prev, *next; /* LRU list: head is the most recent */
  double expires;           /* monotonic seconds; 0: never */
  size_t size;              /* what it counts against max_bytes */
  gl_dval v;                /* v.s points into data after the key */
  size_t kl;
  char data[];              /* key bytes, then string value bytes */
} entry;

struct gl_dict {
  pthread_mutex_t mu;
  entry **buckets;
  size_t nbuckets, count;
  size_t used, max;
  entry *head, *tail;
};

#define OVERHEAD (sizeof(entry) + sizeof(entry *))

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
  d->nbuckets = 64;
  d->buckets = calloc(d->nbuckets, sizeof *d->buckets);
  if (!d->buckets) {
    free(d);
    return NULL;
  }
  d->max = max_bytes;
  pthread_mutex_init(&d->mu, NULL);
  return d;
}

void gl_dict_free(gl_dict *d) {
  entry *e, *next;
  if (!d) return;
  for (e = d->head; e; e = next) {
    next = e->next;
    free(e);
  }
  free(d->buckets);
  pthread_mutex_destroy(&d->mu);
  free(d);
}

static entry **slot(gl_dict *d, const char *k, size_t kl) {
  entry **p = &d->buckets[hash(k, kl) & (d->nbuckets - 1)];
  while (*p && ((*p)->kl != kl || memcmp((*p)->data, k, kl) != 0))
    p = &(*p)->hnext;
  return p;
}

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

static void drop(gl_dict *d, entry *e) {
  entry **p = slot(d, e->data, e->kl);
  *p = e->hnext;
  lru_unlink(d, e);
  d->used -= e->size;
  d->count--;
  free(e);
}

/* The live entry for k, or NULL (an expired one is dropped). */
static entry *find(gl_dict *d, const char *k, size_t kl, double now) {
  entry *e = *slot(d, k, kl);
  if (e && e->expires && e->expires <= now) {
    drop(d, e);
    return NULL;
  }
  return e;
}

static void grow(gl_dict *d) {
  size_t n = d->nbuckets * 2;
  entry **b = calloc(n, sizeof *b);
  if (!b) return; /* longer chains, still correct */
  for (size_t i = 0; i < d->nbuckets; i++) {
    entry *e = d->buckets[i], *next;
    for (; e; e = next) {
      next = e->hnext;
      entry **p = &b[hash(e->data, e->kl) & (n - 1)];
      e->hnext = *p;
      *p = e;
    }
  }
  free(d->buckets);
  d->buckets = b;
  d->nbuckets = n;
}

/* Frees room for need bytes: expired entries first, then (with may_evict)
 * the least recently used. Returns whether there is room. */
static int make_room(gl_dict *d, size_t need, double now, int may_evict,
                     int *evicted, const entry *keep) {
  entry *e, *prev;
  if (d->used + need <= d->max) return 1;
  for (e = d->tail; e && d->used + need > d->max; e = prev) {
    prev = e->prev;
    if (e != keep && e->expires && e->expires <= now) drop(d, e);
  }
  for (e = d->tail; may_evict && e && d->used + need > d->max; e = prev) {
    prev = e->prev;
    if (e == keep) continue;
    drop(d, e);
    if (evicted) *evicted = 1;
  }
  return d->used + need <= d->max;
}

static entry *make(const char *k, size_t kl, const gl_dval *v) {
  size_t vl = v->type == GL_DV_STR ? v->len : 0;
  entry *e = malloc(sizeof *e + kl + vl);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  e->kl = kl;
  memcpy(e->data, k, kl);
  e->v = *v;
  if (v->type == GL_DV_STR) {
    memcpy(e->data + kl, v->s, vl);
    e->v.s = e->data + kl;
  }
  e->size = OVERHEAD + kl + vl;
  return e;
}

static void insert(gl_dict *d, entry *e) {
  entry **p = slot(d, e->data, e->kl);
  e->hnext = *p;
  *p = e;
  lru_front(d, e);
  d->used += e->size;
  d->count++;
  if (d->count > d->nbuckets) grow(d);
}

static int copy_out(const entry *e, gl_dval *out, gl_buf *tmp) {
  *out = e->v;
  if (e->v.type == GL_DV_STR) {
    tmp->off = tmp->len = 0;
    if (e->v.len == 0) {
      out->s = ""; /* tmp may have no storage: its head would be NULL */
      return GL_DICT_OK;
    }
    if (gl_buf_append(tmp, e->v.s, e->v.len) != 0) return GL_DICT_NOMEM;
    out->s = gl_buf_head(tmp);
  }
  return GL_DICT_OK;
}

int gl_dict_get(gl_dict *d, const char *k, size_t kl, gl_dval *out,
                gl_buf *tmp) {
  int rc = GL_DICT_NOTFOUND;
  pthread_mutex_lock(&d->mu);
  entry *e = find(d, k, kl, now_mono());
  if (e) {
    lru_unlink(d, e);
    lru_front(d, e);
    rc = copy_out(e, out, tmp);
  }
  pthread_mutex_unlock(&d->mu);
  return rc;
}

int gl_dict_set(gl_dict *d, const char *k, size_t kl, const gl_dval *v,
                double ttl, int mode, int *evicted) {
  double now = now_mono();
  int rc = GL_DICT_OK;
  if (evicted) *evicted = 0;
  pthread_mutex_lock(&d->mu);
  entry *old = find(d, k, kl, now);
  if (old && mode == GL_DICT_ADD) {
    rc = GL_DICT_EXISTS;
  } else if (v->type == GL_DV_NIL) {
    if (old) drop(d, old);
  } else {
    /* A failed set keeps the old value: room is made around it, and it
     * goes only once the new entry exists. */
    size_t need = OVERHEAD + kl + (v->type == GL_DV_STR ? v->len : 0);
    size_t freed = old ? old->size : 0;
    entry *e = NULL;
    if (need > d->max ||
        !make_room(d, need > freed ? need - freed : 0, now,
                   mode == GL_DICT_SET, evicted, old) ||
        !(e = make(k, kl, v))) {
      rc = GL_DICT_NOMEM;
    } else {
      if (old) drop(d, old);
      e->expires = ttl > 0 ? now + ttl : 0;
      insert(d, e);
    }
  }
  pthread_mutex_unlock(&d->mu);
  return rc;
}

int gl_dict_incr(gl_dict *d, const char *k, size_t kl, const gl_dval *step,
                 const gl_dval *init, double init_ttl, gl_dval *out) {
  double now = now_mono();
  int rc = GL_DICT_OK;
  pthread_mutex_lock(&d->mu);
  entry *e = find(d, k, kl, now);
  if (!e) {
    if (!init || (init->type != GL_DV_INT && init->type != GL_DV_NUM)) {
      rc = init && init->type != GL_DV_NIL ? GL_DICT_NOTNUM : GL_DICT_NOTFOUND;
      goto done;
    }
    size_t need = OVERHEAD + kl;
    if (!make_room(d, need, now, 0, NULL, NULL) || !(e = make(k, kl, init))) {
      rc = GL_DICT_NOMEM;
      goto done;
    }
    e->expires = init_ttl > 0 ? now + init_ttl : 0;
    insert(d, e);
  } else {
    lru_unlink(d, e);
    lru_front(d, e);
  }
  if (e->v.type != GL_DV_INT && e->v.type != GL_DV_NUM) {
    rc = GL_DICT_NOTNUM;
    goto done;
  }
  if (e->v.type == GL_DV_INT && step->type == GL_DV_INT) {
    e->v.i = (long long)((unsigned long long)e->v.i + (unsigned long long)step->i);
  } else {
    double a = e->v.type == GL_DV_INT ? (double)e->v.i : e->v.n;
    double b = step->type == GL_DV_INT ? (double)step->i : step->n;
    e->v.type = GL_DV_NUM;
    e->v.n = a + b;
  }
  *out = e->v;
done:
  pthread_mutex_unlock(&d->mu);
  return rc;
}

int gl_dict_delete(gl_dict *d, const char *k, size_t kl) {
  pthread_mutex_lock(&d->mu);
  entry *e = *slot(d, k, kl);
  if (e) drop(d, e);
  pthread_mutex_unlock(&d->mu);
  return GL_DICT_OK;
}

int gl_dict_keys(gl_dict *d, size_t max, gl_buf *tmp, size_t *count) {
  double now = now_mono();
  int rc = GL_DICT_OK;
  *count = 0;
  tmp->off = tmp->len = 0;
  pthread_mutex_lock(&d->mu);
  for (entry *e = d->head; e && (!max || *count < max); e = e->next) {
    if (e->expires && e->expires <= now) continue;
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

void gl_dict_usage(gl_dict *d, size_t *used, size_t *max_bytes) {
  pthread_mutex_lock(&d->mu);
  *used = d->used;
  *max_bytes = d->max;
  pthread_mutex_unlock(&d->mu);
}
