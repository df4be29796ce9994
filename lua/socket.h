/*
 * socket.h: the "glisten.socket" object (socket.c), with LuaSocket's
 * conventions: misuse raises; I/O failure returns nil and a word of
 * fail.h.
 *
 * A socket of a served connection has an owner (the fiber running its
 * callbacks) and a ready hook, set by the layer that serves it (served.c):
 * the socket calls the hook, never the server.
 */
#ifndef LG_SOCKET_H
#define LG_SOCKET_H

#include "fiber.h"
#include "options.h"
#include "tls.h"

#define LG_SOCKET "glisten.socket"
#define LG_HIGH_WATER (64u << 10) /* send waits while more is queued */

/* Why a connection ended: the with_close reasons. */
enum {
  LG_R_NONE = 0,
  LG_R_CLOSED,   /* "closed": the peer closed */
  LG_R_LOCAL,    /* "local": the script closed it */
  LG_R_TIMEOUT,  /* "timeout": idle timeout */
  LG_R_SHUTDOWN, /* "shutdown": server stopping */
  LG_R_ERROR     /* "error": a callback raised or the socket failed */
};

typedef struct lg_socket lg_socket;
struct lg_server;

struct lg_socket {
  const void *tag; /* marks a socket handle (see lg_check_socket) */
  lg_rt *rt;
  gl_conn *conn; /* NULL once closed */
  lua_Integer id;
  double timeout;      /* default for receive/send/accept; < 0: none */
  lg_waitq rq, wq;     /* waiting to read; waiting for output to drain */
  int reason;          /* LG_R_*, once known */
  const char *detail;  /* static text for reason "error" from the socket */
  int eof;             /* the peer closed its side */
  int packet;          /* how receive() and handler cut input into
                          messages: LG_PACKET_* or a length's size */
  lua_State *writer;   /* the send that has taken part of its data and
                          waits to take the rest: no other takes any */
  size_t max_line, max_receive, max_output, high_water;
  size_t in_base;      /* in_max while no receive asks for more */
  size_t need;         /* a served connection waiting for the rest of a
                          message: input shorter than this cannot hold it,
                          so it is not woken for less (0: any input) */
  void *proxy;         /* the PROXY header it came with (a
                          gl_proxyio_hdr, freed with s), or NULL */
  char *why;           /* a TLS failure's words (s->detail points here;
                          freed with s), or NULL */
  char *host;          /* connect's host, for starttls's server name
                          (freed with s), or NULL */
  int inbound;         /* accepted (served, or from listener:accept):
                          starttls makes it the TLS server */
  /* A served socket's TLS server settings for starttls, set by the layer
   * that serves it: a context with a reference for the caller, and in *ud
   * what its hooks get (gl_tls_set_ud); NULL when its server has none. */
  gl_tls *(*upgrade)(lg_socket *s, void **ud);
  /* A served connection's (served.c), all 0 / NULL for another socket: */
  struct lg_server *server; /* the server that serves it */
  lg_fiber *owner;     /* the fiber running its callbacks; NULL while
                          none runs (it is idle) */
  /* Input, a message or its end arrived while no fiber runs it: runs its
   * callbacks and returns 1, or returns 0 when it is served no more (then
   * waiting readers are woken instead). */
  int (*ready)(lg_socket *s);
  lg_socket *sprev, *snext; /* in its server's list */
  int sref;            /* its state table (registry ref, which anchors it
                          until the socket is released); LUA_NOREF */
  int started;         /* with_init has been called */
  int idle;            /* its last run ended with nothing left to do */
  int in_close;        /* its fiber (owner) runs with_close */
  int stop;            /* shut down from its own callback: end after it */
  int reserve;         /* its with_close holds a memory reserve (state.h) */
  void *addr;          /* its place under max_connections_per_address */
  int nmail, mhead;    /* mailbox (mailbox.c): count, index of the oldest */
  int max_mail;        /* mailbox slots */
};

/* The core's callbacks for a socket's connection. */
extern const gl_conn_cbs lg_socket_cbs;

/* [-0, +1, m] Wraps c (which may be NULL, to be attached later with
 * lg_socket_attach) in a new socket object, pushed. */
lg_socket *lg_socket_new(lua_State *L, lg_rt *rt, gl_conn *c);

/* Sets s's limits from o (before lg_socket_attach). */
void lg_socket_limits(lg_socket *s, const lg_opts *o);

/* Connects s to c after its limits are set; starts reading. */
void lg_socket_attach(lg_socket *s, gl_conn *c);

/* [-0, +0, m] Anchors the handle of the socket object on top of L, where
 * lg_find_socket finds it, until lg_socket_release. */
void lg_socket_anchor(lua_State *L, lg_socket *s);

/* Forgets an anchored socket: ends its state table and tells the release
 * hook (lg_socket_on_release). */
void lg_socket_release(lg_socket *s);

/* [-0, +0, m] Sets rt's release hook: fn(L, idx, s) runs for an anchored
 * socket (its handle at idx) as it is forgotten. One hook a runtime. */
void lg_socket_on_release(lua_State *L,
                          void (*fn)(lua_State *L, int idx, lg_socket *s));

/* Closes s: reason (LG_R_*) is kept unless one is known already; queued
 * output is flushed for at most linger seconds (0: dropped). Waiters are
 * woken and see "closed". */
void lg_socket_close(lg_socket *s, int reason, double linger);

/* Input, a message or the end arrived for s: runs its ready hook, or wakes
 * its readers. s may be freed by what runs: do not read it after. */
void lg_socket_notify(lg_socket *s);

/* [-0, +1, -] Pushes s's handle (s must be anchored). */
void lg_push_socket(lua_State *L, lg_socket *s);

/* [-0, +0, -] The anchored socket with that id in this state, or NULL. */
lg_socket *lg_find_socket(lua_State *L, lua_Integer id);

/* [-0, +0, v] Checks that the value at idx is a socket object and replaces
 * it there with its handle, so continuations find the handle with
 * lua_touserdata; raises otherwise. */
lg_socket *lg_check_socket(lua_State *L, int idx);

/* [-0, +(0|1), m] Takes the next message of s's buffered input, cut as
 * its packet mode says, and pushes it: returns 1. Returns 0 with nothing
 * pushed when no whole message is buffered yet (s then reads enough to
 * hold one); at the end of input (s->eof), the rest of an unended line is
 * a last line, and the rest of a packet is left. Returns -1 when the
 * message at the start is longer than max_line (a line) or max_receive (a
 * packet's declared length): the input is left as it is. */
int lg_socket_next(lua_State *L, lg_socket *s);

/* The peer's address as text, as logs name it ("127.0.0.1:5000",
 * "unix:PATH pid N uid N"; "closed" when there is none). */
void lg_socket_peer(lg_socket *s, char *buf, size_t len);

/* The path of an address written "unix:PATH" (as listen, connect and the
 * command take a Unix socket), or NULL when addr is not one. */
const char *lg_unix_path(const char *addr);

/* The with_close word of reason (LG_R_*). */
const char *lg_reason_name(int reason);

/* [-0, +0, m] Adds methods to the socket type, for a module above this one
 * (messaging adds subscribe and unsubscribe). */
void lg_socket_methods(lua_State *L, const luaL_Reg *methods);

/* [-0, +0, m] Registers the socket type. */
int lg_socket_open(lua_State *L);

#endif
