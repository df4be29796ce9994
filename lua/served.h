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
 * place under max_connections_per_address, or NULL): through its prelude
 * first when sv has one (a PROXY header, TLS), else at once. */
void lg_served_start(lg_server *sv, int fd, gl_addr *addr);
/* Serves c, through its prelude now, with the PROXY header it came with
 * (a gl_proxyio_hdr, which the socket now owns) or NULL. c's callbacks
 * become the socket's. */
void lg_served_adopt(lg_server *sv, gl_conn *c, void *proxy, gl_addr *addr);
/* Gives back a slot under max_connections (and addr, when not NULL),
 * waking whoever waits for one, here or on another worker. */
void lg_server_give_slot(lg_server *sv, gl_addr *addr);
/* A place under max_connections_per_address for the client named by key
 * (an IP address as text, or "uid:N"): *addr is its entry, NULL when sv has
 * no cap. Returns 0 when that client is at its cap (or, unable to tell,
 * out of memory). With proxy_protocol the acceptor takes none: the prelude
 * takes it for the client the header names. */
int lg_server_take_address(lg_server *sv, const char *key, gl_addr **addr);

/* The prelude (prelude.c): what a connection goes through before its
 * script sees it. Starts it for fd; at its end lg_served_adopt, or the
 * connection closes, counted and logged, and its slot is given back. */
void lg_prelude_start(lg_server *sv, int fd, gl_addr *addr);
/* Closes every connection of sv still in its prelude. */
void lg_prelude_close_all(lg_server *sv);
/* Ends every connection of sv for a shutdown (see served.c). */
void lg_served_shutdown_all(lg_server *sv);

/* [-0, +1, -] Pops the oldest message of s's mailbox onto L. */
void lg_mail_pop(lua_State *L, lg_socket *s);

#endif
