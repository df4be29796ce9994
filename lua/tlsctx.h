/*
 * tlsctx.h: TLS for the binding (tlsctx.c): contexts made from the tls
 * option table (options.h's tls.* rows) for serve and connect, and what a
 * socket tells of its TLS session (sock:tlsinfo) and of the PROXY header
 * it came with (sock:proxyinfo).
 */
#ifndef LG_TLSCTX_H
#define LG_TLSCTX_H

#include "socket.h"
#include "tls.h"

/* [-0, +0, e] A context made from the tls option at tls_idx: a table of
 * the tls.* fields, or true (every field at its default; a client only).
 * server: for serving (cert and key required), else for connect. Raises
 * on misuse (a field of the wrong kind, an unknown verify word); returns
 * NULL with a message in err when a file or a setting is refused (which
 * file, what is wrong). */
gl_tls *lg_tls_make(lua_State *L, int tls_idx, int server, char *err,
                    size_t errlen);

/* A server's functions of tls.sni and tls.alpn in one state, which the
 * context's hooks call (through gl_tls_set_ud on each connection). */
typedef struct lg_tls_fns lg_tls_fns;

/* [-0, +0, m] The functions of the tls table at tls_idx (a server's; a
 * function it does not have is not called). Freed with lg_tls_fns_free,
 * once no connection may still call it. */
lg_tls_fns *lg_tls_fns_new(lua_State *L, int tls_idx);
/* [-0, +0, m] Makes f the functions of another tls table, in place, so
 * connections already in their handshake call the new ones. */
void lg_tls_fns_set(lua_State *L, lg_tls_fns *f, int tls_idx);
void lg_tls_fns_free(lg_tls_fns *f);

/* [-0, +1, e] A client's context for the tls option at tls_idx (a table,
 * or true), made once per table and kept while it lives; the box that
 * holds it is pushed. Returns NULL, with nil and "tls: ..." pushed
 * instead, when it cannot be made. */
gl_tls *lg_tls_client(lua_State *L, int tls_idx);

/* The name a client sends and verifies for host: tls.server_name when the
 * tls table at tls_idx has one, else host when it is a name, not an
 * address; NULL for none. Points into the table or host. */
const char *lg_tls_server_name(lua_State *L, int tls_idx, const char *host);

/* [-0, +0, m] Adds tlsinfo and proxyinfo to the socket type. */
void lg_tls_methods(lua_State *L);

#endif
