/*
 * inbox.h: a queue of messages from any thread to one worker's loop.
 *
 * Producers push under a mutex and wake the loop with ev_async (which
 * libev makes safe to call from any thread); the owner takes everything
 * queued at once on its loop and handles it without the lock. The queue is
 * bounded by count: a push to a full inbox fails, so a stuck worker cannot
 * make the others grow memory without bound.
 */
#ifndef GL_INBOX_H
#define GL_INBOX_H

#include <ev.h>
#include <pthread.h>
#include <stddef.h>

typedef struct gl_msg {
  struct gl_msg *next;
  int kind;            /* the owner's */
  long long target;    /* the owner's: a connection id, say */
  size_t len;          /* bytes in data */
  char data[];
} gl_msg;

typedef struct gl_inbox gl_inbox;
typedef void gl_inbox_fn(gl_inbox *in);

struct gl_inbox {
  pthread_mutex_t mu;
  gl_msg *head, *tail;
  size_t count, max;
  struct ev_loop *loop;
  ev_async async;
  gl_inbox_fn *on_mail; /* runs on the owner's loop when mail arrived */
  void *data;           /* the owner's */
};

/* A message with room for len bytes of data, or NULL. */
gl_msg *gl_msg_new(int kind, long long target, size_t len);

/* Prepares in on loop (call on the owner's thread) and starts its watcher.
 * The watcher does not keep the loop running by itself. */
void gl_inbox_init(gl_inbox *in, struct ev_loop *loop, size_t max,
                   gl_inbox_fn *on_mail, void *data);

/* From any thread: queues m (the inbox owns it then) and wakes the owner.
 * Returns 0, or -ENOBUFS when full (m is freed). */
int gl_inbox_push(gl_inbox *in, gl_msg *m);

/* On the owner's thread: takes every queued message, oldest first; the
 * caller frees each with free(). */
gl_msg *gl_inbox_take(gl_inbox *in);

/* On the owner's thread: calls on_mail again on a later turn of the loop,
 * after what else is ready (for an owner that handles its mail in parts). */
void gl_inbox_wake(gl_inbox *in);

/* On the owner's thread: stops the watcher and frees what is queued. */
void gl_inbox_close(gl_inbox *in);

#endif
