/*
 * acceptor.c: a server's accepting, held to max_connections. The count is
 * the server's own, or its pool's (lg_share), so the limit holds across
 * workers.
 */
#include <string.h>
#include <unistd.h>

#include "served.h"

/* Takes a slot under max_connections (counted across a pool). */
static int claim(lg_server *sv) {
  long max = sv->o.max_connections;
  if (!max) return 1;
  /* compare-and-swap: the count never passes max, not even for a moment,
   * so a failed claim cannot hide a free slot from another worker */
  long c = atomic_load(sv->count);
  while (c < max)
    if (atomic_compare_exchange_weak(sv->count, &c, c + 1)) return 1;
  return 0;
}

int lg_server_full(lg_server *sv) {
  return sv->o.max_connections &&
         atomic_load(sv->count) >= sv->o.max_connections;
}

/* Past max_connections the server stops accepting; a connection accepted
 * meanwhile (by a race between workers) is held, not dropped, and served
 * when a slot frees. */
void lg_acceptor_accept(gl_listener *l, int fd) {
  lg_server *sv = l->data;
  if (sv->nheld || !claim(sv)) {
    if (sv->nheld < LG_HOLD_MAX) {
      sv->held[sv->nheld++] = fd;
    } else {
      close(fd); /* cannot happen: accepting pauses first */
      GL_STAT_ADD(sv->rt->stats.errors, 1);
    }
    gl_listener_pause(&sv->l, 1);
    /* a slot freed meanwhile on another worker sent its resume before we
     * paused: look again */
    if (!lg_server_full(sv)) lg_server_resume(sv);
    return;
  }
  lg_served_start(sv, fd);
  if (lg_server_full(sv)) gl_listener_pause(&sv->l, 1);
}

void lg_server_resume(lg_server *sv) {
  if (!sv->open) {
    while (sv->nheld) close(sv->held[--sv->nheld]);
    return;
  }
  while (sv->nheld && claim(sv)) {
    int fd = sv->held[0];
    memmove(sv->held, sv->held + 1, (size_t)--sv->nheld * sizeof(int));
    lg_served_start(sv, fd);
  }
  if (!sv->nheld && !lg_server_full(sv)) gl_listener_pause(&sv->l, 0);
}
