/*
 * served.h: what the files of the server layer (server.c, served.c,
 * acceptor.c, mailbox.c) call of each other; nothing above includes it.
 */
#ifndef LG_SERVED_H
#define LG_SERVED_H

#include "server.h"

/* Lets go of a server that is closed and has no connection left. */
void lg_server_unanchor(lg_server *sv);

/* The acceptor's callback for sv's listener. */
void lg_acceptor_accept(gl_listener *l, int fd);
/* Whether sv is at max_connections. */
int lg_server_full(lg_server *sv);

/* Serves fd, an accepted connection that holds a slot (and addr, its
 * place under max_connections_per_address, or NULL). */
void lg_served_start(lg_server *sv, int fd, gl_addr *addr);
/* Ends every connection of sv for a shutdown (see served.c). */
void lg_served_shutdown_all(lg_server *sv);

/* [-0, +1, -] Pops the oldest message of s's mailbox onto L. */
void lg_mail_pop(lua_State *L, lg_socket *s);

#endif
