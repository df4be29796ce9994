/*
 * dict.c: the cost of glisten.shared's dictionary (core/dict.c) per
 * operation, as it fills and once full, at 1k, 10k, 100k and 1M entries.
 *
 *   build/bench_dict [--quick]
 *
 * Every entry has a 16-byte key and an integer value, so a dictionary
 * sized for N entries holds exactly N. A quarter of them expire in an hour
 * (they sit in the expiry heap, none expires during the run).
 *
 * filling: from empty to N entries, in rounds of 256 sets of new keys, 256
 *   gets and 256 incrs of random keys already there (mean over the fill).
 * full: at N entries, at the cap, the same rounds: every set of a new key
 *   makes room, by dropping an expired entry (one set in 8 has a 1 ms time
 *   to live, so there are some) or by evicting the least recently used;
 *   gets and incrs go to random keys among the N/2 set last, and one incr
 *   in 8 creates a key, which takes an expired entry's room or fails with
 *   "no memory" (incr never evicts).
 * reference: the same three operations on a dictionary of 1k entries far
 *   from its cap (set replaces a random key), measured first and last: each
 *   figure is also given as a ratio to the first, so that a slow moment of
 *   a shared machine shows rather than passes for a slower dictionary.
 *
 * Each operation is timed alone (the clock read is measured and printed;
 * it is inside every figure); a figure is the mean, with the 99th
 * percentile and the longest (which catches the machine's preemptions as
 * well as the dictionary's own pauses). One thread, no contention: the
 * lock is taken and released each time. A fill always goes to N entries;
 * a full phase and a reference stop after 200,000 sets (and as many gets
 * and incrs) or once each operation has had 2 s of its own calls (--quick:
 * 20,000 and 0.5 s), so even a dictionary that takes a second per set
 * ends by itself. The whole run takes under half a minute here.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dict.h"

#define ROUND 256
#define KEYLEN 16

enum { SET, GET, INCR, NOPS };

static size_t max_rounds = 200000 / ROUND;
static double max_seconds = 2.0;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long rng = 0x9e3779b97f4a7c15ull;
static size_t below(size_t n) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (size_t)((rng * 2685821657736338717ull) % n);
}

static void key_of(char *k, size_t i) {
  snprintf(k, KEYLEN + 1, "k%015zu", i);
}

/* The durations of one operation in one phase, in µs. */
typedef struct series {
  float *t;
  size_t n, cap;
  double sum;
} series;

static void record(series *s, double us) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4096;
    float *t = realloc(s->t, cap * sizeof *t);
    if (!t) {
      fprintf(stderr, "bench_dict: out of memory\n");
      exit(1);
    }
    s->t = t;
    s->cap = cap;
  }
  s->t[s->n++] = (float)us;
  s->sum += us;
}

static int by_value(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

typedef struct figure {
  double mean, p99, max;
  size_t n;
} figure;

static figure summarize(series *s) {
  figure f = {0, 0, 0, s->n};
  if (s->n) {
    qsort(s->t, s->n, sizeof *s->t, by_value);
    f.mean = s->sum / (double)s->n;
    f.p99 = s->t[(s->n * 99) / 100];
    f.max = s->t[s->n - 1];
  }
  free(s->t);
  memset(s, 0, sizeof *s);
  return f;
}

typedef struct phase {
  series s[NOPS];
  size_t evicted, nomem, missing;
} phase;

/* Whether operation o has used up its time in this phase: each has
 * max_seconds of its own calls, so a dictionary that takes milliseconds
 * per set still ends, and its gets and incrs are still measured. */
static int spent(const phase *p, int o) {
  return p->s[o].sum >= max_seconds * 1e6;
}

static gl_buf tmp;

static double timed_set(gl_dict *d, size_t i, double ttl, int *evicted,
                        int *rc) {
  char k[KEYLEN + 1];
  gl_dval v = {GL_DV_INT, 0, (long long)i, 0, NULL, 0};
  key_of(k, i);
  double t0 = now_s();
  *rc = gl_dict_set(d, k, KEYLEN, &v, ttl, GL_DICT_SET, evicted);
  return now_s() - t0;
}

static double timed_get(gl_dict *d, size_t i, int *rc) {
  char k[KEYLEN + 1];
  gl_dval out;
  key_of(k, i);
  double t0 = now_s();
  *rc = gl_dict_get(d, k, KEYLEN, &out, &tmp);
  return now_s() - t0;
}

static double timed_incr(gl_dict *d, size_t i, int create, int *rc) {
  char k[KEYLEN + 1];
  gl_dval step = {GL_DV_INT, 0, 1, 0, NULL, 0}, init = step, out;
  key_of(k, i);
  double t0 = now_s();
  *rc = gl_dict_incr(d, k, KEYLEN, &step, create ? &init : NULL, 0, &out);
  return now_s() - t0;
}

static void fail_if(int bad, const char *what) {
  if (bad) {
    fprintf(stderr, "bench_dict: %s\n", what);
    exit(1);
  }
}

/* One round: sets sets of new keys from *next, then ROUND gets and ROUND
 * incrs of keys in [lo, *next). full: some sets expire soon, some incrs
 * create. */
static void round_of(gl_dict *d, phase *p, size_t *next, size_t lo,
                     size_t sets, int full) {
  int rc, ev;
  for (size_t j = 0; j < sets && !(full && spent(p, SET)); j++) {
    size_t i = (*next)++;
    double ttl = full ? (i % 8 == 0 ? 0.001 : 0) : (i % 4 == 0 ? 3600 : 0);
    record(&p->s[SET], 1e6 * timed_set(d, i, ttl, &ev, &rc));
    fail_if(rc != GL_DICT_OK, "a set failed");
    fail_if(ev && !full, "a set evicted while filling");
    p->evicted += (size_t)ev;
  }
  for (int j = 0; j < ROUND && !(full && spent(p, GET)); j++) {
    record(&p->s[GET], 1e6 * timed_get(d, lo + below(*next - lo), &rc));
    p->missing += rc == GL_DICT_NOTFOUND;
  }
  for (int j = 0; j < ROUND && !(full && spent(p, INCR)); j++) {
    int create = full && j % 8 == 0;
    size_t i = create ? (*next)++ : lo + below(*next - lo);
    record(&p->s[INCR], 1e6 * timed_incr(d, i, create, &rc));
    p->nomem += rc == GL_DICT_NOMEM;
    p->missing += rc == GL_DICT_NOTFOUND;
  }
}

static void print_row(const char *size, const char *state, phase *p,
                      const figure *ref) {
  printf("%-8s %-8s", size, state);
  for (int o = 0; o < NOPS; o++) {
    figure f = summarize(&p->s[o]);
    char ratio[32] = "";
    if (ref) snprintf(ratio, sizeof ratio, " %5.1fx", f.mean / ref[o].mean);
    printf(" | %7.3f%s %7.2f %8.1f", f.mean, ratio, f.p99, f.max);
  }
  printf(" | %zu evicted, %zu no memory, %zu not found\n", p->evicted,
         p->nomem, p->missing);
}

/* The reference: 1k entries, cap far away; set replaces a random key. */
static void reference(figure *ref, const char *label, const figure *first) {
  size_t n = 1000;
  gl_dict *d = gl_dict_new(1000 * n * gl_dict_entry_size(KEYLEN, 0));
  phase p;
  int rc, ev;
  fail_if(!d, "out of memory");
  memset(&p, 0, sizeof p);
  for (size_t i = 0; i < n; i++) {
    timed_set(d, i, i % 4 == 0 ? 3600 : 0, &ev, &rc);
    fail_if(rc != GL_DICT_OK, "a set failed");
  }
  for (size_t r = 0; r < max_rounds; r++) {
    for (int j = 0; j < ROUND; j++) {
      size_t i = below(n);
      record(&p.s[SET], 1e6 * timed_set(d, i, i % 4 == 0 ? 3600 : 0, &ev,
                                        &rc));
    }
    for (int j = 0; j < ROUND; j++)
      record(&p.s[GET], 1e6 * timed_get(d, below(n), &rc));
    for (int j = 0; j < ROUND; j++)
      record(&p.s[INCR], 1e6 * timed_incr(d, below(n), 0, &rc));
  }
  if (first) {
    print_row("1k", label, &p, first);
  } else {
    for (int o = 0; o < NOPS; o++) ref[o] = summarize(&p.s[o]);
    if (label) {
      printf("%-8s %-8s", "1k", label);
      for (int o = 0; o < NOPS; o++)
        printf(" | %7.3f %s %7.2f %8.1f", ref[o].mean, "  1.0x", ref[o].p99,
               ref[o].max);
      printf(" |\n");
    }
  }
  gl_dict_free(d);
}

static void measure(size_t n, const char *size, const figure *ref) {
  gl_dict *d = gl_dict_new(n * gl_dict_entry_size(KEYLEN, 0));
  size_t next = 0, r = 0;
  phase p;
  fail_if(!d, "out of memory");
  memset(&p, 0, sizeof p);
  /* filling: to n entries, whatever the time it takes */
  while (next < n)
    round_of(d, &p, &next, 0, n - next < ROUND ? n - next : ROUND, 0);
  print_row(size, "filling", &p, ref);
  gl_dict_stats st;
  gl_dict_stats_get(d, &st);
  fail_if(st.entries != n, "the fill did not end at n entries");
  memset(&p, 0, sizeof p);
  for (r = 0; r < max_rounds &&
              !(spent(&p, SET) && spent(&p, GET) && spent(&p, INCR)); r++)
    round_of(d, &p, &next, next - n / 2, ROUND, 1);
  print_row(size, "full", &p, ref);
  gl_dict_free(d);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--quick") == 0) {
    max_rounds = 20000 / ROUND;
    max_seconds = 0.5;
  } else if (argc > 1) {
    fprintf(stderr, "usage: bench_dict [--quick]\n");
    return 2;
  }
  gl_buf_init(&tmp);
  double c0 = now_s(), c1 = c0;
  for (int i = 0; i < 1000000; i++) c1 = now_s();
  double clock_us = (c1 - c0) * 1e6 / 1000000; /* one read */
  printf("glisten.shared's dictionary: microseconds per operation, one "
         "thread\nmean (and ratio to the first reference), 99th "
         "percentile, longest; a clock read (%.3f us) is inside each\n"
         "reference: the same operations on 1k entries far from the cap, "
         "run first and last\n\n",
         clock_us);
  printf("%-8s %-8s | %-28s | %-28s | %-28s |\n", "entries", "state",
         "set: mean ratio p99 max", "get: mean ratio p99 max",
         "incr: mean ratio p99 max");
  figure ref[NOPS];
  reference(ref, NULL, NULL); /* a first run warms up, and is not shown */
  reference(ref, "ref", NULL);
  static const struct {
    size_t n;
    const char *label;
  } sizes[] = {{1000, "1k"}, {10000, "10k"}, {100000, "100k"},
               {1000000, "1M"}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    measure(sizes[i].n, sizes[i].label, ref);
  reference(ref, "ref", ref);
  gl_buf_free(&tmp);
  return 0;
}
