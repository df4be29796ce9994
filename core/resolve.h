/*
 * resolve.h: name lookups that do not block the loop.
 *
 * getaddrinfo can take seconds (a slow DNS server, timeouts), so a lookup
 * runs on a thread of its own and its result comes back to the loop through
 * an ev_async; the loop keeps serving meanwhile. At most GL_LOOKUP_THREADS
 * lookups of one resolver run at a time; the rest wait their turn in order.
 * Numeric addresses need no lookup: gl_sock_numeric resolves them at once.
 */
#ifndef GL_RESOLVE_H
#define GL_RESOLVE_H

#include <ev.h>
#include <netdb.h>
#include <pthread.h>

#define GL_LOOKUP_THREADS 16

typedef struct gl_resolver gl_resolver;
typedef struct gl_lookup gl_lookup;

/* Called on the loop's thread when q has finished: q->addrs holds the
 * addresses (owned by q), or q->err says why there are none. q is freed
 * when the callback returns. */
typedef void gl_lookup_cb(gl_lookup *q);

struct gl_lookup {
  struct addrinfo *addrs; /* the result, or NULL */
  char err[160];          /* why there is no result */
  void *data;             /* the caller's */
  /* private */
  gl_resolver *r;
  gl_lookup_cb *cb;
  gl_lookup *next;
  int state, cancelled, joinable;
  int queued; /* still WAITING; only the loop's thread reads or writes it */
  int port;
  pthread_t th;
  char host[]; /* NUL-terminated */
};

/* A resolver for loop (one thread's loop), or NULL when out of memory.
 * The loop keeps running while a lookup that was not cancelled is in
 * flight, and not because of an idle resolver. */
gl_resolver *gl_resolver_new(struct ev_loop *loop);

/* Cancels every lookup, waits for the threads still inside getaddrinfo
 * (which can take as long as the system's resolver timeout), and frees r.
 * No callback runs. */
void gl_resolver_free(gl_resolver *r);

/* Starts looking up host (a name; port goes into the addresses) for
 * SOCK_STREAM addresses of any family. Returns the lookup, whose callback
 * runs later on the loop, never from inside this call; or NULL when out of
 * memory. A lookup that cannot get a thread is reported through its
 * callback, with the reason in err. */
gl_lookup *gl_lookup_start(gl_resolver *r, const char *host, int port,
                           gl_lookup_cb *cb, void *data);

/* Cancels q: its callback will not run, and it is freed (now or when its
 * thread finishes). q must not be used afterwards. */
void gl_lookup_cancel(gl_lookup *q);

#endif
