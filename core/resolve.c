/*
 * resolve.c: see resolve.h.
 *
 * A lookup is WAITING (queued, no thread yet), RUNNING (its thread is in
 * getaddrinfo) or DONE (its thread has finished; it waits on the running
 * list to be joined and reported on the loop). Only the loop's thread
 * starts, cancels, joins and frees lookups; a lookup's thread only fills in
 * its result and marks it DONE, under the resolver's mutex, and the loop
 * reads state only under it (queued is the loop's own copy of WAITING).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "resolve.h"

enum { WAITING, RUNNING, DONE };

struct gl_resolver {
  struct ev_loop *loop;
  ev_async async;
  pthread_mutex_t mu;                 /* guards state once a thread runs */
  gl_lookup *waiting, **waiting_tail; /* no thread yet, in order */
  gl_lookup *running;                 /* given a thread (or failed to get one) */
  int nrunning;
  int held; /* lookups in flight that keep the loop running */
};

static void hold(gl_resolver *r) {
  if (r->held++ == 0) ev_ref(r->loop);
}

static void release(gl_resolver *r) {
  if (--r->held == 0) ev_unref(r->loop);
}

static void *lookup_main(void *arg) {
  gl_lookup *q = arg;
  gl_resolver *r = q->r;
  struct addrinfo hints, *res = NULL;
  char service[16];
  int rc;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  snprintf(service, sizeof service, "%d", q->port);
  rc = getaddrinfo(q->host, service, &hints, &res);
  pthread_mutex_lock(&r->mu);
  if (rc == 0) {
    q->addrs = res;
  } else {
    snprintf(q->err, sizeof q->err, "cannot resolve %s: %s", q->host,
             rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
  }
  q->state = DONE;
  pthread_mutex_unlock(&r->mu);
  ev_async_send(r->loop, &r->async);
  return NULL;
}

static void lookup_free(gl_lookup *q) {
  if (q->addrs) freeaddrinfo(q->addrs);
  free(q);
}

/* Gives waiting lookups threads while fewer than GL_LOOKUP_THREADS run. One
 * that cannot get a thread is DONE at once, with the reason, and reported
 * like any other. */
static void start_waiting(gl_resolver *r) {
  while (r->waiting && r->nrunning < GL_LOOKUP_THREADS) {
    gl_lookup *q = r->waiting;
    r->waiting = q->next;
    if (!r->waiting) r->waiting_tail = &r->waiting;
    q->next = r->running;
    r->running = q;
    r->nrunning++;
    q->queued = 0;
    q->state = RUNNING;
    int rc = pthread_create(&q->th, NULL, lookup_main, q);
    if (rc == 0) {
      q->joinable = 1;
    } else {
      snprintf(q->err, sizeof q->err, "cannot resolve %s: %s", q->host,
               strerror(rc));
      q->state = DONE;
      ev_async_send(r->loop, &r->async);
    }
  }
}

/* The first DONE lookup on the running list, unlinked, or NULL. */
static gl_lookup *take_done(gl_resolver *r) {
  gl_lookup *q = NULL, **p;
  pthread_mutex_lock(&r->mu);
  for (p = &r->running; *p; p = &(*p)->next)
    if ((*p)->state == DONE) {
      q = *p;
      *p = q->next;
      r->nrunning--;
      break;
    }
  pthread_mutex_unlock(&r->mu);
  return q;
}

/* On the loop: joins and reports every finished lookup. */
static void on_async(EV_P_ ev_async *w, int revents) {
  gl_resolver *r = w->data;
  gl_lookup *q;
  (void)loop;
  (void)revents;
  while ((q = take_done(r))) {
    if (q->joinable) pthread_join(q->th, NULL);
    if (!q->cancelled) {
      release(r);
      q->cb(q);
    }
    lookup_free(q);
  }
  start_waiting(r);
}

gl_resolver *gl_resolver_new(struct ev_loop *loop) {
  gl_resolver *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->loop = loop;
  r->waiting_tail = &r->waiting;
  pthread_mutex_init(&r->mu, NULL);
  ev_async_init(&r->async, on_async);
  r->async.data = r;
  ev_async_start(loop, &r->async);
  ev_unref(loop); /* an idle resolver does not keep the loop running */
  return r;
}

void gl_resolver_free(gl_resolver *r) {
  gl_lookup *q, *next;
  if (!r) return;
  for (q = r->waiting; q; q = next) {
    next = q->next;
    lookup_free(q);
  }
  for (q = r->running; q; q = next) {
    next = q->next;
    if (q->joinable) pthread_join(q->th, NULL);
    lookup_free(q);
  }
  if (r->held == 0) ev_ref(r->loop); /* undo the unref, for the stop */
  ev_async_stop(r->loop, &r->async);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

gl_lookup *gl_lookup_start(gl_resolver *r, const char *host, int port,
                           gl_lookup_cb *cb, void *data) {
  size_t n = strlen(host);
  gl_lookup *q = calloc(1, sizeof *q + n + 1);
  if (!q) return NULL;
  memcpy(q->host, host, n + 1);
  q->port = port < 0 || port > 65535 ? 0 : port;
  q->r = r;
  q->cb = cb;
  q->data = data;
  q->state = WAITING;
  q->queued = 1;
  *r->waiting_tail = q;
  r->waiting_tail = &q->next;
  hold(r);
  start_waiting(r);
  return q;
}

void gl_lookup_cancel(gl_lookup *q) {
  gl_resolver *r = q->r;
  release(r);
  if (q->queued) { /* no thread has seen it: free it now */
    for (gl_lookup **p = &r->waiting; *p; p = &(*p)->next)
      if (*p == q) {
        *p = q->next;
        if (r->waiting_tail == &q->next) r->waiting_tail = p;
        break;
      }
    lookup_free(q);
    return;
  }
  q->cancelled = 1; /* freed by on_async once its thread is done */
}
