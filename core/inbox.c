#include "inbox.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

gl_msg *gl_msg_new(int kind, long long target, size_t len) {
  gl_msg *m = malloc(sizeof *m + len);
  if (!m) return NULL;
  m->next = NULL;
  m->kind = kind;
  m->target = target;
  m->len = len;
  return m;
}

static void on_async(EV_P_ ev_async *w, int revents) {
  gl_inbox *in = w->data;
  (void)loop;
  (void)revents;
  in->on_mail(in);
}

void gl_inbox_init(gl_inbox *in, struct ev_loop *loop, size_t max,
                   gl_inbox_fn *on_mail, void *data) {
  memset(in, 0, sizeof *in);
  pthread_mutex_init(&in->mu, NULL);
  in->max = max;
  in->loop = loop;
  in->on_mail = on_mail;
  in->data = data;
  ev_async_init(&in->async, on_async);
  in->async.data = in;
  ev_async_start(loop, &in->async);
  ev_unref(loop);
}

int gl_inbox_push(gl_inbox *in, gl_msg *m) {
  pthread_mutex_lock(&in->mu);
  if (in->count >= in->max) {
    pthread_mutex_unlock(&in->mu);
    free(m);
    return -ENOBUFS;
  }
  m->next = NULL;
  if (in->tail)
    in->tail->next = m;
  else
    in->head = m;
  in->tail = m;
  in->count++;
  pthread_mutex_unlock(&in->mu);
  ev_async_send(in->loop, &in->async);
  return 0;
}

gl_msg *gl_inbox_take(gl_inbox *in) {
  gl_msg *m;
  pthread_mutex_lock(&in->mu);
  m = in->head;
  in->head = in->tail = NULL;
  in->count = 0;
  pthread_mutex_unlock(&in->mu);
  return m;
}

void gl_inbox_wake(gl_inbox *in) { ev_async_send(in->loop, &in->async); }

void gl_inbox_close(gl_inbox *in) {
  gl_msg *m = gl_inbox_take(in), *next;
  for (; m; m = next) {
    next = m->next;
    free(m);
  }
  if (ev_is_active(&in->async)) {
    ev_ref(in->loop);
    ev_async_stop(in->loop, &in->async);
  }
  pthread_mutex_destroy(&in->mu);
}
