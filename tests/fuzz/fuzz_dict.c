/*
 * fuzz_dict.c: gl_dict (core/dict.c) driven by a stream of operations,
 * against a model.
 *
 * Input: the first byte picks max_bytes (room for 1 to 24 small entries,
 * less than one, or plenty); then operations, each a byte and its
 * arguments (bytes past the end read as 0): get, set, add, incr, delete,
 * keys, a step of the clock, a set of nil. Keys are 96 short strings, the
 * empty one included; values booleans, integers, floats (NaN, infinities,
 * -0.0) and strings of up to 255 bytes; times to live 0, negative or
 * multiples of 1/4 s. The clock is the harness's: clock_gettime is wrapped
 * at link time (-Wl,--wrap=clock_gettime), as in tests/test_dict.c, and
 * moves only by the clock operation, so expiry is exact.
 *
 * The model is a table of the 96 keys, each with its value, when it
 * expires and when it was last made recent (a get, a stored set or add, an
 * incr that finds or creates it). From it, every result is known before
 * the call: found or not and the value; EXISTS, NOTFOUND, NOTNUM; NOMEM
 * exactly when there is no room (a set only when the entry alone is larger
 * than max_bytes, an add or an incr that creates when the live entries
 * leave too little); and which entries a set evicts: the least recently
 * used live ones but the key's own, as few as make room. After every
 * operation, gl_dict_check passes, gl_dict_keys lists exactly the model's
 * live keys, most recent first, gl_dict_stats' evicted grew by the
 * evictions the model made, and its examined by no more than dict.h
 * allows a call (a few entries per entry's worth of bytes it needs, never
 * a walk). A get copies out to a scratch buffer that is sometimes new, with
 * no storage yet, and sometimes the one every call shares.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dict.h"
#include "gl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                        \
  do {                                                                  \
    if (!(c)) {                                                         \
      fprintf(stderr, "fuzz_dict: %s:%d: %s\n", __FILE__, __LINE__, #c); \
      abort();                                                          \
    }                                                                   \
  } while (0)

/* ---- the clock: quarter seconds, which a double and the nanoseconds
 * carry exactly ---- */

static uint64_t quarters;

int __real_clock_gettime(clockid_t id, struct timespec *ts);
int __wrap_clock_gettime(clockid_t id, struct timespec *ts);
int __wrap_clock_gettime(clockid_t id, struct timespec *ts) {
  if (id != CLOCK_MONOTONIC) return __real_clock_gettime(id, ts);
  ts->tv_sec = (time_t)(quarters / 4);
  ts->tv_nsec = (long)(quarters % 4) * 250000000L;
  return 0;
}

/* The time as dict.c reads it. */
static double now(void) {
  struct timespec ts;
  __wrap_clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the input ---- */

typedef struct input {
  const uint8_t *p;
  size_t n;
} input;

static unsigned byte(input *in) {
  if (!in->n) return 0;
  in->n--;
  return *in->p++;
}

/* ---- keys and values ---- */

#define NKEYS 96
#define MAX_STR 256

static struct {
  char s[32];
  size_t len;
} keys[NKEYS];

static void make_keys(void) {
  for (int i = 0; i < NKEYS; i++) {
    /* "" for 0; some long enough to weigh on the byte count */
    int n = i == 0 ? 0 : snprintf(keys[i].s, sizeof keys[i].s,
                                  i % 4 == 3 ? "%d-a-longer-key" : "%d", i);
    keys[i].len = (size_t)n;
  }
}

typedef struct val {
  gl_dval v;
  char s[MAX_STR];
} val;

static void val_copy(val *to, const gl_dval *v) {
  to->v = *v;
  if (v->type == GL_DV_STR) {
    if (v->len) memcpy(to->s, v->s, v->len);
    to->v.s = to->s;
  }
}

static int val_equal(const gl_dval *a, const gl_dval *b) {
  if (a->type != b->type) return 0;
  switch (a->type) {
    case GL_DV_BOOL: return a->b == b->b;
    case GL_DV_INT: return a->i == b->i;
    case GL_DV_NUM:
      return memcmp(&a->n, &b->n, sizeof a->n) == 0 ||
             (isnan(a->n) && isnan(b->n));
    case GL_DV_STR:
      return a->s && b->s && a->len == b->len &&
             (!a->len || memcmp(a->s, b->s, a->len) == 0);
    default: return 1;
  }
}

static const double floats[] = {0.5, -0.0, 1e300, -2.75, 3.0};

/* A value from the input: bytes for a string come from it too. */
static gl_dval value(input *in) {
  gl_dval v;
  unsigned t = byte(in), x = byte(in);
  memset(&v, 0, sizeof v);
  switch (t % 6) {
    case 0:
      v.type = GL_DV_BOOL;
      v.b = (int)(x & 1);
      break;
    case 1:
      v.type = GL_DV_INT;
      v.i = x == 255 ? INT64_MAX : x == 254 ? INT64_MIN : (long long)x - 100;
      break;
    case 2:
      v.type = GL_DV_NUM;
      v.n = x < 5 ? floats[x] : x == 5 ? NAN : x == 6 ? INFINITY
                                           : (double)x / 8;
      break;
    default: { /* x bytes, from one more byte */
      static char buf[MAX_STR];
      unsigned c = byte(in);
      v.type = GL_DV_STR;
      v.len = x;
      for (size_t i = 0; i < v.len; i++) buf[i] = (char)(c + i * (c | 1));
      v.s = buf;
    }
  }
  return v;
}

/* 0 (forever), negative (forever too), or 1/4 s to 3 1/4 s */
static double ttl(input *in) {
  unsigned x = byte(in) % 16;
  return x == 15 ? -1.0 : x * 0.25;
}

/* ---- the model ---- */

typedef struct slot {
  int present;
  val val;
  double expires; /* 0: never */
  unsigned long long stamp; /* when last made recent */
} slot;

static slot model[NKEYS];
static unsigned long long stamps;
static size_t max_bytes;

static int live(int k) {
  return model[k].present &&
         !(model[k].expires != 0 && model[k].expires <= now());
}

static size_t size_of(int k) {
  const gl_dval *v = &model[k].val.v;
  return gl_dict_entry_size(keys[k].len, v->type == GL_DV_STR ? v->len : 0);
}

static size_t live_used(void) {
  size_t used = 0;
  for (int k = 0; k < NKEYS; k++)
    if (live(k)) used += size_of(k);
  return used;
}

static void store(int k, const gl_dval *v, double t) {
  model[k].present = 1;
  val_copy(&model[k].val, v);
  model[k].expires = t > 0 ? now() + t : 0;
  model[k].stamp = ++stamps;
}

/* Evicts, least recent first, live entries but keep's until need more
 * bytes fit in max_bytes; returns how many. */
static int evict(size_t need, int keep) {
  size_t used = live_used();
  int n = 0;
  while (used + need > max_bytes) {
    int lru = -1;
    for (int k = 0; k < NKEYS; k++)
      if (k != keep && live(k) &&
          (lru < 0 || model[k].stamp < model[lru].stamp))
        lru = k;
    CHECK(lru >= 0); /* need <= max_bytes, so the rest makes room */
    used -= size_of(lru);
    model[lru].present = 0;
    n++;
  }
  return n;
}

/* ---- checks after every operation ---- */

static void check_keys(gl_dict *d, gl_buf *tmp, size_t max) {
  size_t count, off = 0, listed = 0, want = 0;
  unsigned long long last = ~0ull;
  int seen[NKEYS] = {0};
  CHECK(gl_dict_keys(d, max, tmp, &count) == GL_DICT_OK);
  for (int k = 0; k < NKEYS; k++) want += live(k);
  if (max && max < want) want = max;
  CHECK(count == want);
  for (size_t i = 0; i < count; i++) {
    size_t kl;
    int k;
    CHECK(tmp->len - off >= sizeof kl);
    memcpy(&kl, gl_buf_head(tmp) + off, sizeof kl);
    off += sizeof kl;
    CHECK(tmp->len - off >= kl);
    for (k = 0; k < NKEYS; k++)
      if (keys[k].len == kl &&
          (!kl || memcmp(keys[k].s, gl_buf_head(tmp) + off, kl) == 0))
        break;
    CHECK(k < NKEYS && live(k) && !seen[k]);
    seen[k] = 1;
    CHECK(model[k].stamp < last); /* most recent first */
    last = model[k].stamp;
    off += kl;
    listed++;
  }
  CHECK(off == tmp->len && listed == count);
}

/* What the operation under way needs room for (bytes of its entry), and
 * examined before it. */
static size_t op_need;
static unsigned long long examined;

static void check_all(gl_dict *d, gl_buf *tmp, unsigned long long evictions) {
  char err[GL_ERRLEN];
  gl_dict_stats st;
  size_t n = 0;
  if (gl_dict_check(d, err, sizeof err) != GL_OK) {
    fprintf(stderr, "fuzz_dict: gl_dict_check: %s\n", err);
    abort();
  }
  check_keys(d, tmp, 0);
  gl_dict_stats_get(d, &st);
  for (int k = 0; k < NKEYS; k++) n += live(k);
  CHECK(st.evicted == evictions);
  CHECK(st.entries >= n && st.expiring <= st.entries);
  CHECK(st.used >= live_used() && st.used <= max_bytes);
  CHECK(st.max == max_bytes);
  /* two expired in passing; two looked at per entry dropped, at most one
   * per gl_dict_entry_size(0, 0) bytes needed, plus one; and the last */
  CHECK(st.examined - examined <=
        2 + 2 * (op_need / gl_dict_entry_size(0, 0) + 2));
  examined = st.examined;
}

/* ---- the operations ---- */

static unsigned long long evictions;

/* tmp: the shared scratch buffer, or NULL for a new one */
static void op_get(gl_dict *d, gl_buf *tmp, int k) {
  gl_dval out;
  gl_buf fresh;
  int rc;
  gl_buf_init(&fresh);
  rc = gl_dict_get(d, keys[k].s, keys[k].len, &out, tmp ? tmp : &fresh);
  if (live(k)) {
    CHECK(rc == GL_DICT_OK);
    CHECK(val_equal(&out, &model[k].val.v));
    model[k].stamp = ++stamps;
  } else {
    CHECK(rc == GL_DICT_NOTFOUND);
    model[k].present = 0;
  }
  gl_buf_free(&fresh);
}

static void op_set(gl_dict *d, int k, const gl_dval *v, double t, int mode) {
  size_t need = gl_dict_entry_size(keys[k].len,
                                   v->type == GL_DV_STR ? v->len : 0);
  int evicted = -1, want = GL_DICT_OK, n = 0;
  int rc;
  op_need = need;
  rc = gl_dict_set(d, keys[k].s, keys[k].len, v, t, mode, &evicted);
  if (!live(k)) model[k].present = 0;
  if (model[k].present && mode == GL_DICT_ADD) {
    want = GL_DICT_EXISTS;
  } else if (v->type == GL_DV_NIL) {
    model[k].present = 0;
  } else if (need > max_bytes) {
    want = GL_DICT_NOMEM;
  } else {
    size_t freed = model[k].present ? size_of(k) : 0;
    size_t more = need > freed ? need - freed : 0;
    if (mode == GL_DICT_SET)
      n = evict(more, k);
    else if (live_used() + more > max_bytes)
      want = GL_DICT_NOMEM;
    if (want == GL_DICT_OK) store(k, v, t);
  }
  CHECK(rc == want);
  CHECK(evicted == (n > 0));
  evictions += (unsigned)n;
}

static void op_incr(gl_dict *d, int k, const gl_dval *step,
                    const gl_dval *init, double t) {
  gl_dval out, *mv;
  int want = GL_DICT_OK;
  int rc;
  op_need = gl_dict_entry_size(keys[k].len, 0);
  rc = gl_dict_incr(d, keys[k].s, keys[k].len, step, init, t, &out);
  if (!live(k)) {
    model[k].present = 0;
    if (!init || (init->type != GL_DV_INT && init->type != GL_DV_NUM))
      want = init && init->type != GL_DV_NIL ? GL_DICT_NOTNUM
                                             : GL_DICT_NOTFOUND;
    else if (live_used() + gl_dict_entry_size(keys[k].len, 0) > max_bytes)
      want = GL_DICT_NOMEM;
    else
      store(k, init, t);
  } else {
    model[k].stamp = ++stamps;
  }
  mv = &model[k].val.v;
  if (want == GL_DICT_OK && mv->type != GL_DV_INT && mv->type != GL_DV_NUM)
    want = GL_DICT_NOTNUM;
  CHECK(rc == want);
  if (want != GL_DICT_OK) return;
  if (mv->type == GL_DV_INT && step->type == GL_DV_INT) {
    mv->i = (long long)((unsigned long long)mv->i +
                        (unsigned long long)step->i);
  } else {
    double a = mv->type == GL_DV_INT ? (double)mv->i : mv->n;
    double b = step->type == GL_DV_INT ? (double)step->i : step->n;
    mv->type = GL_DV_NUM;
    mv->n = a + b;
  }
  CHECK(val_equal(&out, mv));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  input in = {data, size};
  unsigned sel;
  gl_dict *d;
  gl_buf tmp;
  size_t e0;
  if (!keys[1].len) make_keys();
  memset(model, 0, sizeof model);
  stamps = evictions = examined = 0;
  quarters = 4000;
  e0 = gl_dict_entry_size(0, 0);
  sel = byte(&in);
  if (sel < 0xc0) /* room for 1 to 24 small entries, and some bytes */
    max_bytes = e0 * (1 + sel % 24) + sel / 24 * 8;
  else if (sel < 0xe0) /* not even one */
    max_bytes = e0 / 2;
  else
    max_bytes = (size_t)1 << 20;
  d = gl_dict_new(max_bytes);
  CHECK(d);
  gl_buf_init(&tmp);
  while (in.n) {
    unsigned op = byte(&in);
    int k = (int)(byte(&in) % NKEYS);
    op_need = 0;
    switch (op % 10) {
      case 0:
        op_get(d, NULL, k);
        break;
      case 1:
        op_get(d, &tmp, k);
        break;
      case 2:
      case 3: {
        gl_dval v = value(&in);
        op_set(d, k, &v, ttl(&in), GL_DICT_SET);
        break;
      }
      case 4: {
        gl_dval v = value(&in);
        op_set(d, k, &v, ttl(&in), GL_DICT_ADD);
        break;
      }
      case 5: { /* a set or an add of nil: a delete */
        gl_dval nil = {GL_DV_NIL, 0, 0, 0, NULL, 0};
        op_set(d, k, &nil, 0, op & 0x10 ? GL_DICT_ADD : GL_DICT_SET);
        break;
      }
      case 6: {
        unsigned how = byte(&in);
        gl_dval step = value(&in), init = value(&in);
        gl_dval nil = {GL_DV_NIL, 0, 0, 0, NULL, 0};
        double t = ttl(&in);
        if (step.type != GL_DV_INT && step.type != GL_DV_NUM) {
          step.type = GL_DV_INT; /* a step is a number (shared.c checks) */
          step.i = 1;
        }
        op_incr(d, k, &step, how % 3 == 0 ? NULL : how % 3 == 1 ? &nil : &init,
                t);
        break;
      }
      case 7:
        CHECK(gl_dict_delete(d, keys[k].s, keys[k].len) == GL_DICT_OK);
        model[k].present = 0;
        break;
      case 8:
        check_keys(d, &tmp, (size_t)k % 8);
        break;
      case 9:
        quarters += (uint64_t)k % 16;
        break;
    }
    check_all(d, &tmp, evictions);
  }
  gl_buf_free(&tmp);
  gl_dict_free(d);
  return 0;
}
