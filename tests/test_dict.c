/*
 * test_dict.c: gl_dict, the dictionary behind glisten.shared.
 *
 * The clock is the test's: clock_gettime is wrapped at link time
 * (-Wl,--wrap=clock_gettime) and CLOCK_MONOTONIC reads `now`, which only
 * the test moves. So expiry is exact and no test depends on how fast the
 * machine is. The work a call does is read from gl_dict_stats' `examined`
 * (entries looked at to expire or evict), never from a clock.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "dict.h"
#include "gl.h"

/* ---- the test's clock ---- */

static double now = 1000.0;

int __real_clock_gettime(clockid_t id, struct timespec *ts);
int __wrap_clock_gettime(clockid_t id, struct timespec *ts);
int __wrap_clock_gettime(clockid_t id, struct timespec *ts) {
  if (id != CLOCK_MONOTONIC) return __real_clock_gettime(id, ts);
  ts->tv_sec = (time_t)now;
  ts->tv_nsec = (long)((now - (double)ts->tv_sec) * 1e9);
  return 0;
}

/* Times the test uses are multiples of 1/4 s, which the clock's
 * nanoseconds and a double carry exactly. */
static void advance(double s) { now += s; }

/* ---- helpers ---- */

static void check(gl_dict *d) {
  char err[GL_ERRLEN];
  if (gl_dict_check(d, err, sizeof err) != GL_OK) fail_msg("%s", err);
}

static gl_dval str(const char *s) {
  gl_dval v = {GL_DV_STR, 0, 0, 0, s, strlen(s)};
  return v;
}

static gl_dval num_int(long long i) {
  gl_dval v = {GL_DV_INT, 0, i, 0, NULL, 0};
  return v;
}

static int set(gl_dict *d, const char *k, gl_dval v, double ttl, int *ev) {
  return gl_dict_set(d, k, strlen(k), &v, ttl, GL_DICT_SET, ev);
}

static int add(gl_dict *d, const char *k, gl_dval v, double ttl) {
  return gl_dict_set(d, k, strlen(k), &v, ttl, GL_DICT_ADD, NULL);
}

static int has(gl_dict *d, const char *k) {
  gl_buf tmp;
  gl_dval out;
  gl_buf_init(&tmp);
  int rc = gl_dict_get(d, k, strlen(k), &out, &tmp);
  gl_buf_free(&tmp);
  return rc == GL_DICT_OK;
}

static unsigned long long examined(gl_dict *d) {
  gl_dict_stats st;
  gl_dict_stats_get(d, &st);
  return st.examined;
}

static gl_dict_stats stats(gl_dict *d) {
  gl_dict_stats st;
  gl_dict_stats_get(d, &st);
  return st;
}

/* xorshift64*: the same sequence on every machine. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 2685821657736338717ull;
}
static size_t below(size_t n) { return (size_t)(rnd() % n); }

/* ---- semantics ---- */

static void test_values_keep_their_types(void **state) {
  (void)state;
  gl_dict *d = gl_dict_new(1 << 20);
  gl_buf tmp;
  gl_dval out, v;
  gl_buf_init(&tmp);
  assert_int_equal(set(d, "s", str("text"), 0, NULL), GL_DICT_OK);
  assert_int_equal(set(d, "i", num_int(-42), 0, NULL), GL_DICT_OK);
  v = (gl_dval){GL_DV_NUM, 0, 0, 1.5, NULL, 0};
  assert_int_equal(set(d, "f", v, 0, NULL), GL_DICT_OK);
  v = (gl_dval){GL_DV_BOOL, 0, 0, 0, NULL, 0};
  assert_int_equal(set(d, "b", v, 0, NULL), GL_DICT_OK);
  assert_int_equal(gl_dict_get(d, "s", 1, &out, &tmp), GL_DICT_OK);
  assert_int_equal(out.type, GL_DV_STR);
  assert_int_equal(out.len, 4);
  assert_memory_equal(out.s, "text", 4);
  assert_int_equal(gl_dict_get(d, "i", 1, &out, &tmp), GL_DICT_OK);
  assert_int_equal(out.type, GL_DV_INT);
  assert_true(out.i == -42);
  assert_int_equal(gl_dict_get(d, "f", 1, &out, &tmp), GL_DICT_OK);
  assert_int_equal(out.type, GL_DV_NUM);
  assert_true(out.n == 1.5);
  assert_int_equal(gl_dict_get(d, "b", 1, &out, &tmp), GL_DICT_OK);
  assert_int_equal(out.type, GL_DV_BOOL);
  assert_int_equal(out.b, 0);
  assert_int_equal(gl_dict_get(d, "x", 1, &out, &tmp), GL_DICT_NOTFOUND);
  /* nil deletes; delete says OK whether or not the key was there */
  v = (gl_dval){GL_DV_NIL, 0, 0, 0, NULL, 0};
  assert_int_equal(set(d, "s", v, 0, NULL), GL_DICT_OK);
  assert_false(has(d, "s"));
  assert_int_equal(gl_dict_delete(d, "i", 1), GL_DICT_OK);
  assert_int_equal(gl_dict_delete(d, "i", 1), GL_DICT_OK);
  assert_false(has(d, "i"));
  check(d);
  gl_buf_free(&tmp);
  gl_dict_free(d);
}

/* An empty string comes back as a valid pointer and length 0, from a
 * scratch buffer that has no storage yet (whose head is NULL) and from one
 * that has. */
static void test_empty_string(void **state) {
  (void)state;
  gl_dict *d = gl_dict_new(1 << 20);
  gl_buf tmp;
  gl_dval out;
  gl_buf_init(&tmp);
  assert_int_equal(set(d, "e", str(""), 0, NULL), GL_DICT_OK);
  assert_int_equal(gl_dict_get(d, "e", 1, &out, &tmp), GL_DICT_OK);
  assert_int_equal(out.type, GL_DV_STR);
  assert_int_equal(out.len, 0);
  assert_non_null(out.s);
  assert_int_equal(set(d, "s", str("abc"), 0, NULL), GL_DICT_OK);
  assert_int_equal(gl_dict_get(d, "s", 1, &out, &tmp), GL_DICT_OK);
  assert_int_equal(gl_dict_get(d, "e", 1, &out, &tmp), GL_DICT_OK);
  assert_int_equal(out.len, 0);
  assert_non_null(out.s);
  /* keys of an empty dictionary: nothing written, nothing read */
  gl_dict_delete(d, "e", 1);
  gl_dict_delete(d, "s", 1);
  size_t n = 1;
  gl_buf_free(&tmp);
  assert_int_equal(gl_dict_keys(d, 0, &tmp, &n), GL_DICT_OK);
  assert_int_equal(n, 0);
  assert_int_equal(tmp.len, 0);
  gl_buf_free(&tmp);
  gl_dict_free(d);
}

static void test_add_incr_ttl(void **state) {
  (void)state;
  gl_dict *d = gl_dict_new(1 << 20);
  gl_dval out, step = num_int(1), init = num_int(10);
  assert_int_equal(add(d, "k", num_int(1), 0), GL_DICT_OK);
  assert_int_equal(add(d, "k", num_int(2), 0), GL_DICT_EXISTS);
  assert_int_equal(gl_dict_incr(d, "n", 1, &step, NULL, 0, &out),
                   GL_DICT_NOTFOUND);
  assert_int_equal(gl_dict_incr(d, "n", 1, &step, &init, 2, &out), GL_DICT_OK);
  assert_true(out.type == GL_DV_INT && out.i == 11);
  /* an existing key keeps its own time to live */
  assert_int_equal(gl_dict_incr(d, "n", 1, &step, &init, 100, &out),
                   GL_DICT_OK);
  assert_true(out.i == 12);
  gl_dval half = {GL_DV_NUM, 0, 0, 0.5, NULL, 0};
  assert_int_equal(gl_dict_incr(d, "n", 1, &half, NULL, 0, &out), GL_DICT_OK);
  assert_true(out.type == GL_DV_NUM && out.n == 12.5);
  set(d, "t", str("text"), 0, NULL);
  assert_int_equal(gl_dict_incr(d, "t", 1, &step, NULL, 0, &out),
                   GL_DICT_NOTNUM);
  set(d, "short", str("v"), 1, NULL);
  advance(2.5);
  assert_false(has(d, "n"));     /* its init_ttl of 2 s has passed */
  assert_false(has(d, "short"));
  assert_true(has(d, "k"));
  assert_int_equal(add(d, "short", str("again"), 0), GL_DICT_OK);
  check(d);
  gl_dict_free(d);
}

/* ---- when full ---- */

/* A dictionary with room for exactly n entries of a 2-byte key and an
 * 8-byte string. */
static gl_dict *room_for(size_t n) {
  return gl_dict_new(n * gl_dict_entry_size(2, 8));
}

static void test_full_lru_order(void **state) {
  (void)state;
  gl_dict *d = room_for(4);
  int ev = 0;
  const char *k[] = {"k0", "k1", "k2", "k3", "k4", "k5"};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(set(d, k[i], str("12345678"), 0, &ev), GL_DICT_OK);
    assert_false(ev);
  }
  assert_true(has(d, "k0")); /* recency now: k0 k3 k2 k1 */
  assert_int_equal(set(d, "k4", str("12345678"), 0, &ev), GL_DICT_OK);
  assert_true(ev);           /* forcible */
  assert_false(has(d, "k1")); /* the least recently used went */
  assert_true(has(d, "k0"));
  /* a set of an existing key makes it recent (now k0 k4 k3 k2 before) */
  assert_int_equal(set(d, "k2", str("abcdefgh"), 0, &ev), GL_DICT_OK);
  assert_false(ev);
  assert_int_equal(set(d, "k5", str("12345678"), 0, &ev), GL_DICT_OK);
  assert_true(ev);
  assert_false(has(d, "k3"));
  assert_true(has(d, "k2") && has(d, "k4") && has(d, "k0") && has(d, "k5"));
  /* add and incr never evict a live entry */
  assert_int_equal(add(d, "k1", str("12345678"), 0), GL_DICT_NOMEM);
  gl_dval out, one = num_int(1);
  assert_int_equal(gl_dict_incr(d, "k1", 2, &one, &one, 0, &out),
                   GL_DICT_NOMEM);
  assert_int_equal(stats(d).entries, 4);
  /* a value larger than the dictionary fails and the old one stays */
  char big[500];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = 0;
  assert_int_equal(set(d, "k0", str(big), 0, &ev), GL_DICT_NOMEM);
  assert_true(has(d, "k0"));
  check(d);
  gl_dict_free(d);
}

/* Expired entries go before any live one, wherever they are in the recency
 * order: here the expired ones are the most recently used, and more of
 * them than a write drops in passing. */
static void test_full_expired_first(void **state) {
  (void)state;
  gl_dict *d = room_for(6);
  int ev = 0;
  char big[512];
  /* a value whose entry takes the room of three */
  size_t bl = 3 * gl_dict_entry_size(2, 8) - gl_dict_entry_size(2, 0);
  memset(big, 'b', bl);
  big[bl] = 0;
  set(d, "a0", str("12345678"), 0, &ev);
  set(d, "a1", str("12345678"), 0, &ev);
  set(d, "t0", str("12345678"), 2, &ev);
  set(d, "t1", str("12345678"), 2, &ev);
  set(d, "t2", str("12345678"), 2, &ev);
  set(d, "t3", str("12345678"), 5, &ev);
  advance(3); /* t0, t1, t2 have expired, t3 not */
  assert_int_equal(set(d, "n0", str(big), 0, &ev), GL_DICT_OK);
  assert_false(ev);
  assert_int_equal(stats(d).expired, 3);
  assert_true(has(d, "a0") && has(d, "a1") && has(d, "t3"));
  advance(3); /* t3 has expired */
  /* add and incr may take the room of an expired entry */
  assert_int_equal(add(d, "n1", str("12345678"), 0), GL_DICT_OK);
  assert_true(has(d, "a0") && has(d, "a1") && has(d, "n0"));
  assert_int_equal(stats(d).evicted, 0);
  /* nothing expired now: set evicts the least recently used, n1 (the
   * reads above made the others more recent) */
  assert_int_equal(set(d, "n2", str("12345678"), 0, &ev), GL_DICT_OK);
  assert_true(ev);
  assert_false(has(d, "n1"));
  assert_true(has(d, "a0"));
  assert_int_equal(stats(d).evicted, 1);
  check(d);
  gl_dict_free(d);
}

/* ---- bounded work ---- */

#define FULL_N 100000 /* entries held when full */

static void key_of(char *k, size_t i) { snprintf(k, 16, "%08zx", i); }

/* Fills d to FULL_N entries of an 8-byte key and value: one in four expires
 * at `soon`, one in four at 1e6 s from now, the rest never. Checks the
 * structure now and then, which also covers the table while it grows. */
static gl_dict *full(double soon) {
  gl_dict *d = gl_dict_new(FULL_N * gl_dict_entry_size(8, 8));
  char k[16];
  int ev = 0;
  for (size_t i = 0; i < FULL_N; i++) {
    double ttl = i % 4 == 1 ? soon : i % 4 == 3 ? 1e6 : 0;
    key_of(k, i);
    assert_int_equal(set(d, k, str("12345678"), ttl, &ev), GL_DICT_OK);
    assert_false(ev);
    if (i % 9973 == 0) check(d); /* finds every entry by its key */
  }
  check(d);
  assert_int_equal(stats(d).entries, FULL_N);
  return d;
}

/* The most a write may look at: two per entry it drops to make room (at
 * most one per gl_dict_entry_size(0, 0) bytes it needs, plus one), one
 * more when it finds no room, and two for the expired entries a write
 * drops in passing. */
static unsigned long long bound(size_t need) {
  return 2 * (need / gl_dict_entry_size(0, 0) + 1) + 1 + 2;
}

static void test_full_set_looks_at_few(void **state) {
  (void)state;
  gl_dict *d = full(10);
  size_t need = gl_dict_entry_size(8, 8);
  char k[16];
  int ev = 0;
  advance(20); /* a quarter has expired, spread through the recency order */
  /* Sets of new keys: first the expired entries make room (none live goes),
   * then the least recently used; each looks at a few entries. */
  for (size_t i = FULL_N; i < FULL_N + FULL_N / 2; i++) {
    unsigned long long before = examined(d);
    key_of(k, i);
    assert_int_equal(set(d, k, str("12345678"), 0, &ev), GL_DICT_OK);
    unsigned long long seen = examined(d) - before;
    if (seen > bound(need))
      fail_msg("set %zu looked at %llu entries", i, seen);
    if (i < FULL_N + FULL_N / 4) assert_false(ev);
  }
  gl_dict_stats st = stats(d);
  assert_int_equal(st.expired, FULL_N / 4);
  assert_int_equal(st.evicted, FULL_N / 4);
  assert_int_equal(st.entries, FULL_N);
  /* The 25,000 oldest live keys went, in the order they were set: three in
   * four were live (i % 4 != 1), so up to key 33,332, the 25,000th. */
  key_of(k, 0);
  assert_false(has(d, k));
  key_of(k, 33332);
  assert_false(has(d, k));
  key_of(k, 33334);
  assert_true(has(d, k));
  key_of(k, 33335); /* expires in 1e6 s */
  assert_true(has(d, k));
  /* A value a hundred entries large: a hundred evictions, no walk. */
  char big[100 * 96];
  memset(big, 'v', sizeof big - 1);
  big[sizeof big - 1] = 0;
  need = gl_dict_entry_size(3, sizeof big - 1);
  unsigned long long before = examined(d);
  assert_int_equal(set(d, "big", str(big), 0, &ev), GL_DICT_OK);
  assert_true(ev);
  assert_true(examined(d) - before <= bound(need));
  /* add, incr and get when full, nothing expired: a look or two */
  gl_dval one = num_int(1), out;
  gl_buf tmp;
  gl_buf_init(&tmp);
  before = examined(d);
  assert_int_equal(add(d, "new", str("12345678"), 0), GL_DICT_NOMEM);
  assert_int_equal(gl_dict_incr(d, "new", 3, &one, &one, 0, &out),
                   GL_DICT_NOMEM);
  assert_int_equal(gl_dict_get(d, "new", 3, &out, &tmp), GL_DICT_NOTFOUND);
  assert_true(examined(d) - before <= 2 * 3);
  gl_buf_free(&tmp);
  check(d);
  gl_dict_free(d);
}

/* ---- a model ---- */

/* The reference: every key's value, its expiry and a recency stamp, in
 * arrays, with eviction done the plain way (find the smallest stamp). */
#define MK 96      /* keys */
#define MVAL 300   /* longest string value */
#define MOPS 30000 /* operations */

typedef struct mval {
  int present;
  gl_dval v;
  char s[MVAL];
  double expires;
  unsigned long long stamp;
} mval;

static mval model[MK];
static unsigned long long clock_stamp;
static size_t model_max;
static unsigned long long model_evicted;

static void mkey(char *k, size_t i) {
  /* lengths from 2 to 12: entries of different sizes */
  snprintf(k, 16, "%c%.*s", (char)('a' + i % 26), (int)(1 + i % 11),
           &"0123456789ab"[i / 26]);
}

static int mlive(size_t i) {
  mval *m = &model[i];
  if (m->present && m->expires != 0 && m->expires <= now) m->present = 0;
  return m->present;
}

static size_t msize(size_t i) {
  char k[16];
  mkey(k, i);
  return gl_dict_entry_size(strlen(k),
                            model[i].v.type == GL_DV_STR ? model[i].v.len : 0);
}

static size_t mused(void) {
  size_t u = 0;
  for (size_t i = 0; i < MK; i++)
    if (mlive(i)) u += msize(i);
  return u;
}

/* Evicts the least recently used live entry but keep; 0 if none. */
static int mevict(size_t keep) {
  size_t best = MK;
  for (size_t i = 0; i < MK; i++)
    if (i != keep && mlive(i) &&
        (best == MK || model[i].stamp < model[best].stamp))
      best = i;
  if (best == MK) return 0;
  model[best].present = 0;
  model_evicted++;
  return 1;
}

static void mstore(size_t i, const gl_dval *v, double ttl) {
  mval *m = &model[i];
  m->present = 1;
  m->v = *v;
  if (v->type == GL_DV_STR) {
    memcpy(m->s, v->s, v->len);
    m->v.s = m->s;
  }
  m->expires = ttl > 0 ? now + ttl : 0;
  m->stamp = ++clock_stamp;
}

static int mset(size_t i, const gl_dval *v, double ttl, int mode, int *ev) {
  char k[16];
  mkey(k, i);
  *ev = 0;
  int old = mlive(i);
  if (old && mode == GL_DICT_ADD) return GL_DICT_EXISTS;
  if (v->type == GL_DV_NIL) {
    model[i].present = 0;
    return GL_DICT_OK;
  }
  size_t need = gl_dict_entry_size(strlen(k),
                                   v->type == GL_DV_STR ? v->len : 0);
  if (need > model_max) return GL_DICT_NOMEM;
  size_t freed = old ? msize(i) : 0;
  while (mused() - freed + need > model_max) {
    if (mode == GL_DICT_ADD || !mevict(i)) return GL_DICT_NOMEM;
    *ev = 1;
  }
  mstore(i, v, ttl);
  return GL_DICT_OK;
}

static int mincr(size_t i, const gl_dval *step, const gl_dval *init,
                 double ttl, gl_dval *out) {
  char k[16];
  mkey(k, i);
  mval *m = &model[i];
  if (mlive(i)) {
    m->stamp = ++clock_stamp;
  } else {
    if (!init || (init->type != GL_DV_INT && init->type != GL_DV_NUM))
      return init && init->type != GL_DV_NIL ? GL_DICT_NOTNUM
                                             : GL_DICT_NOTFOUND;
    if (mused() + gl_dict_entry_size(strlen(k), 0) > model_max)
      return GL_DICT_NOMEM;
    mstore(i, init, ttl);
  }
  if (m->v.type != GL_DV_INT && m->v.type != GL_DV_NUM) return GL_DICT_NOTNUM;
  if (m->v.type == GL_DV_INT && step->type == GL_DV_INT) {
    m->v.i = (long long)((unsigned long long)m->v.i +
                         (unsigned long long)step->i);
  } else {
    double a = m->v.type == GL_DV_INT ? (double)m->v.i : m->v.n;
    double b = step->type == GL_DV_INT ? (double)step->i : step->n;
    m->v.type = GL_DV_NUM;
    m->v.n = a + b;
  }
  *out = m->v;
  return GL_DICT_OK;
}

static gl_dval random_value(char *buf) {
  gl_dval v;
  memset(&v, 0, sizeof v);
  switch (below(10)) {
    case 0: v.type = GL_DV_NIL; break;
    case 1: v.type = GL_DV_BOOL; v.b = (int)below(2); break;
    case 2: v.type = GL_DV_INT; v.i = (long long)rnd(); break;
    case 3: v.type = GL_DV_INT; v.i = (long long)below(100); break;
    case 4: v.type = GL_DV_NUM; v.n = (double)below(1000) / 8; break;
    default:
      v.type = GL_DV_STR;
      v.len = below(8) == 0 ? 0 : below(MVAL);
      for (size_t j = 0; j < v.len; j++) buf[j] = (char)rnd();
      v.s = buf;
  }
  return v;
}

static gl_dval random_number(void) {
  gl_dval v;
  memset(&v, 0, sizeof v);
  if (below(4) == 0) {
    v.type = GL_DV_NUM;
    v.n = (double)below(64) / 4 - 8;
  } else {
    v.type = GL_DV_INT;
    v.i = (long long)below(20) - 10;
  }
  return v;
}

static double random_ttl(void) {
  static const double t[] = {0, 0, 0, 0, 0.25, 1, 2, 5};
  return t[below(sizeof t / sizeof t[0])];
}

static void assert_same_value(const gl_dval *a, const gl_dval *b, int op) {
  if (a->type != b->type) fail_msg("op %d: type %d, model %d", op, a->type,
                                   b->type);
  switch (a->type) {
    case GL_DV_BOOL: assert_int_equal(a->b, b->b); break;
    case GL_DV_INT:
      if (a->i != b->i) fail_msg("op %d: %lld, model %lld", op, a->i, b->i);
      break;
    case GL_DV_NUM:
      if (a->n != b->n) fail_msg("op %d: %g, model %g", op, a->n, b->n);
      break;
    case GL_DV_STR:
      assert_int_equal(a->len, b->len);
      assert_non_null(a->s);
      if (a->len) assert_memory_equal(a->s, b->s, a->len);
      break;
    default: break;
  }
}

/* The dictionary's keys, most recent first, against the model's. */
static void assert_same_keys(gl_dict *d, size_t max, int op) {
  size_t order[MK], n = 0, got;
  for (size_t i = 0; i < MK; i++)
    if (mlive(i)) order[n++] = i;
  for (size_t a = 1; a < n; a++) /* by stamp, newest first */
    for (size_t b = a; b > 0 && model[order[b]].stamp >
                                    model[order[b - 1]].stamp; b--) {
      size_t t = order[b];
      order[b] = order[b - 1];
      order[b - 1] = t;
    }
  if (max && n > max) n = max;
  gl_buf tmp;
  gl_buf_init(&tmp);
  assert_int_equal(gl_dict_keys(d, max, &tmp, &got), GL_DICT_OK);
  if (got != n) fail_msg("op %d: %zu keys, model %zu", op, got, n);
  const char *p = gl_buf_head(&tmp);
  for (size_t i = 0; i < n; i++) {
    char k[16];
    size_t kl;
    mkey(k, order[i]);
    memcpy(&kl, p, sizeof kl);
    p += sizeof kl;
    if (kl != strlen(k) || memcmp(p, k, kl) != 0)
      fail_msg("op %d: key %zu is %.*s, model %s", op, i, (int)kl, p, k);
    p += kl;
  }
  gl_buf_free(&tmp);
}

/* Random gets, sets, adds, incrs, deletes and the passing of time, from a
 * fixed seed, on a dictionary that holds about half the keys at once:
 * every result, the forcible flag, the count of evictions and the order of
 * the keys must be the model's. */
static void test_model(void **state) {
  (void)state;
  rng = 0x2545f4914f6cdd1dull;
  memset(model, 0, sizeof model);
  clock_stamp = 0;
  model_evicted = 0;
  model_max = 20 * gl_dict_entry_size(8, MVAL / 2);
  gl_dict *d = gl_dict_new(model_max);
  gl_buf tmp;
  char buf[MVAL], k[16];
  gl_buf_init(&tmp);
  for (int op = 0; op < MOPS; op++) {
    size_t i = below(MK);
    mkey(k, i);
    size_t kl = strlen(k);
    gl_dval out, mout, v;
    int rc, mrc, ev, mev;
    size_t what = below(16);
    switch (what) {
      case 0: case 1: case 2: case 3: case 4: /* get */
        rc = gl_dict_get(d, k, kl, &out, &tmp);
        mrc = mlive(i) ? GL_DICT_OK : GL_DICT_NOTFOUND;
        if (rc != mrc) fail_msg("op %d: get %s: %d, model %d", op, k, rc, mrc);
        if (rc == GL_DICT_OK) {
          model[i].stamp = ++clock_stamp;
          assert_same_value(&out, &model[i].v, op);
        }
        break;
      case 5: case 6: case 7: case 8: case 9: /* set */
      case 10:                                /* add */
      {
        int mode = what == 10 ? GL_DICT_ADD : GL_DICT_SET;
        double ttl = random_ttl();
        v = random_value(buf);
        rc = gl_dict_set(d, k, kl, &v, ttl, mode, &ev);
        mrc = mset(i, &v, ttl, mode, &mev);
        if (rc != mrc) fail_msg("op %d: set %s: %d, model %d", op, k, rc, mrc);
        if (rc == GL_DICT_OK && ev != mev)
          fail_msg("op %d: set %s: forcible %d, model %d", op, k, ev, mev);
        break;
      }
      case 11: case 12: /* incr */
      {
        gl_dval step = random_number(), init = random_number();
        const gl_dval *pi = &init;
        double ttl = random_ttl();
        if (below(4) == 0) pi = NULL;
        else if (below(8) == 0) init = str("not a number");
        rc = gl_dict_incr(d, k, kl, &step, pi, ttl, &out);
        mrc = mincr(i, &step, pi, ttl, &mout);
        if (rc != mrc)
          fail_msg("op %d: incr %s: %d, model %d", op, k, rc, mrc);
        if (rc == GL_DICT_OK) assert_same_value(&out, &mout, op);
        break;
      }
      case 13: /* delete */
        assert_int_equal(gl_dict_delete(d, k, kl), GL_DICT_OK);
        model[i].present = 0;
        break;
      case 14: /* time passes */
        advance((double)below(9) / 4);
        break;
      default: /* keys */
        assert_same_keys(d, below(2) ? 0 : 1 + below(MK / 2), op);
    }
    if (op % 64 == 0) {
      check(d);
      assert_same_keys(d, 0, op);
    }
  }
  check(d);
  assert_same_keys(d, 0, MOPS);
  gl_dict_stats st = stats(d);
  assert_int_equal(st.evicted, model_evicted);
  assert_true(model_evicted > 1000); /* the run spent much time full */
  assert_true(st.expired > 1000);
  gl_buf_free(&tmp);
  gl_dict_free(d);
}

/* ---- threads ---- */

#define THREADS 4
#define THREAD_OPS 20000

/* One thread's share: sets, gets, deletes and incrs on a small dictionary
 * that evicts all the time, and an incr of one counter in another. cmocka
 * may not assert off the main thread, so a thread counts what is wrong. */
typedef struct churner {
  gl_dict *small, *count;
  uint64_t seed;
  int wrong;
} churner;

static void *churn(void *arg) {
  churner *c = arg;
  gl_buf tmp;
  char k[16], val[256];
  gl_dval zero = num_int(0), one = num_int(1), out, v;
  gl_buf_init(&tmp);
  memset(val, 'v', sizeof val);
  for (int i = 0; i < THREAD_OPS; i++) {
    c->seed = c->seed * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t r = c->seed >> 16;
    snprintf(k, sizeof k, "key%u", (unsigned)(r % 200));
    size_t kl = strlen(k);
    if (gl_dict_incr(c->count, "n", 1, &one, &zero, 0, &out) != GL_DICT_OK)
      c->wrong++;
    switch ((r >> 8) % 4) {
      case 0: case 1:
        v = (gl_dval){GL_DV_STR, 0, 0, 0, val, (size_t)((r >> 12) % 256)};
        if (gl_dict_set(c->small, k, kl, &v, (r >> 20) % 2 ? 3600 : 0,
                        GL_DICT_SET, NULL) != GL_DICT_OK)
          c->wrong++;
        break;
      case 2: {
        int rc = gl_dict_get(c->small, k, kl, &out, &tmp);
        if (rc == GL_DICT_OK && out.type == GL_DV_STR &&
            (out.len > 255 || (out.len && memcmp(out.s, val, out.len))))
          c->wrong++;
        else if (rc != GL_DICT_OK && rc != GL_DICT_NOTFOUND)
          c->wrong++;
        break;
      }
      default:
        if ((r >> 12) % 2)
          gl_dict_delete(c->small, k, kl);
        else
          gl_dict_incr(c->small, k, kl, &one, &zero, 0, &out);
    }
  }
  gl_buf_free(&tmp);
  return NULL;
}

/* Threads at once: every call stays whole (the counter is exact, values
 * come back as they were set) and the structure holds. */
static void test_threads(void **state) {
  (void)state;
  gl_dict *small = gl_dict_new(40 * gl_dict_entry_size(6, 128));
  gl_dict *count = gl_dict_new(1 << 20);
  pthread_t t[THREADS];
  churner c[THREADS];
  for (int i = 0; i < THREADS; i++) {
    c[i] = (churner){small, count, 0x853c49e6748fea9bull + (uint64_t)i, 0};
    assert_int_equal(pthread_create(&t[i], NULL, churn, &c[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(c[i].wrong, 0);
  }
  gl_dval out, zero = num_int(0);
  assert_int_equal(gl_dict_incr(count, "n", 1, &zero, NULL, 0, &out),
                   GL_DICT_OK);
  assert_true(out.i == THREADS * THREAD_OPS);
  assert_true(stats(small).evicted > 1000);
  check(small);
  check(count);
  gl_dict_free(small);
  gl_dict_free(count);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_values_keep_their_types),
      cmocka_unit_test(test_empty_string),
      cmocka_unit_test(test_add_incr_ttl),
      cmocka_unit_test(test_full_lru_order),
      cmocka_unit_test(test_full_expired_first),
      cmocka_unit_test(test_full_set_looks_at_few),
      cmocka_unit_test(test_model),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
