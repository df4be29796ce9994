/*
 * socket.c: the "glisten.socket" object, with LuaSocket's conventions:
 * misuse raises; I/O failure returns nil, "closed" | "timeout" | message.
 *
 * What Lua sees is a table, { <handle>, id = <integer> }, whose metatable's
 * __index is the table of methods, as OpenResty's sockets are: a method
 * call costs two table lookups, and `sock.id` is a plain field. The handle,
 * at [1], is a full userdata holding the lg_socket; every method checks and
 * takes it (lg_check_socket), and its __gc closes the connection once
 * nothing can reach it. Lua code cannot forge a handle.
 *
 * The handle is anchored in the registry table CONNS (by id) while a served
 * connection is open and until its with_close has run; glisten.post finds
 * it there. Closing clears the pointer to the core connection.
 *
 * The handle's user values: 1 the mailbox (mailbox.c), 2 the topics it
 * subscribes to (messages.c). A served connection's state table is held by
 * a registry ref (s->sref), its callbacks by its server's (server.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frame.h"
#include "gl.h"
#include "log.h"
#include "sock.h"
#include "socket.h"

static char CONNS_KEY, HANDLE_MT_KEY;

/* The sockets' part of a runtime: who hears of a socket being forgotten. */
typedef struct sockets {
  void (*released)(lua_State *L, int idx, lg_socket *s);
} sockets;

static const lg_rt_hooks socket_hooks = {NULL, NULL, NULL};
static atomic_llong next_seq = 1; /* ids: (seq << 8) | the runtime's slot */

static const char *const reason_names[] = {"", "closed", "local", "timeout",
                                           "shutdown", "error"};

const char *lg_reason_name(int reason) { return reason_names[reason]; }

/* --- core callbacks ------------------------------------------------------ */

void lg_socket_notify(lg_socket *s) {
  /* Decide before waking: a fiber resumed at once may drop the socket and
   * the collector free it, so s must not be read afterwards. An idle
   * served socket stays anchored (CONNS) while its hook runs. */
  if (!s->owner && s->ready && s->ready(s)) return;
  lg_wake_all(&s->rq);
}

static void on_data(gl_conn *c) {
  lg_socket *s = c->data;
  if (!s) return;
  /* the rest of a message: not there yet */
  if (c->in.len < s->need && !(c->flags & GL_CONN_EOF) && !s->owner) return;
  if (c->flags & GL_CONN_EOF) {
    const char *t = gl_tls_error(c); /* a TLS stream cut without close_notify */
    s->eof = 1;
    if (t && !s->why && (s->why = strdup(t))) s->detail = s->why;
  }
  lg_socket_notify(s);
}

static void on_drain(gl_conn *c) {
  lg_socket *s = c->data;
  if (s) lg_wake_all(&s->wq);
}

static void forget(lg_socket *s) {
  lua_State *L = s->rt->L;
  if (s->rt->closing) return;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CONNS_KEY);
  lua_pushnil(L);
  lua_rawseti(L, -2, s->id);
  lua_pop(L, 1);
}

static void on_close(gl_conn *c) {
  lg_socket *s = c->data;
  if (!s) return;
  s->conn = NULL;
  c->data = NULL;
  if (!s->reason) {
    switch (c->reason) {
      case GL_CLOSE_PEER: s->reason = LG_R_CLOSED; break;
      case GL_CLOSE_TIMEOUT: s->reason = LG_R_TIMEOUT; break;
      case GL_CLOSE_ERROR: {
        const char *t = gl_tls_error(c); /* TLS's words, when it failed */
        s->reason = LG_R_ERROR;
        s->detail = strerror(c->err);
        if (t && !s->why && (s->why = strdup(t))) s->detail = s->why;
        break;
      }
      default: s->reason = LG_R_LOCAL; break;
    }
  }
  /* one fiber at a time may be resumed here: queue all but the last wake */
  lg_defer_begin(s->rt);
  lg_wake_all(&s->wq);
  lg_defer_end(s->rt);
  lg_socket_notify(s);
}

const gl_conn_cbs lg_socket_cbs = {on_data, on_drain, on_close};

/* --- life ---------------------------------------------------------------- */

lg_socket *lg_socket_new(lua_State *L, lg_rt *rt, gl_conn *c) {
  lg_socket *s;
  lua_createtable(L, 1, 1);
  s = lua_newuserdatauv(L, sizeof *s, 2);
  memset(s, 0, sizeof *s);
  s->tag = &HANDLE_MT_KEY;
  s->rt = rt;
  s->id = (lua_Integer)(atomic_fetch_add(&next_seq, 1) * LG_SLOTS + rt->slot);
  s->timeout = -1;
  s->sref = LUA_NOREF;
  s->high_water = LG_HIGH_WATER;
  lg_socket_limits(s, &lg_defaults);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &HANDLE_MT_KEY);
  lua_setmetatable(L, -2);
  lua_rawseti(L, -2, 1);
  lua_pushinteger(L, s->id);
  lua_setfield(L, -2, "id");
  luaL_setmetatable(L, LG_SOCKET);
  if (c) lg_socket_attach(s, c);
  return s;
}

/* The handle goes in CONNS. Only served connections are anchored: a socket
 * from connect or accept that the script drops is collected and closed, as
 * in LuaSocket. */
void lg_socket_anchor(lua_State *L, lg_socket *s) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CONNS_KEY);
  lua_rawgeti(L, -2, 1);
  lua_rawseti(L, -2, s->id);
  lua_pop(L, 1);
}

void lg_socket_limits(lg_socket *s, const lg_opts *o) {
  s->max_line = o->max_line;
  s->max_receive = o->max_receive;
  s->max_output = o->max_output;
  s->max_mail = o->max_mailbox;
  s->packet = o->packet;
}

void lg_socket_attach(lg_socket *s, gl_conn *c) {
  s->conn = c;
  c->data = s;
  if (s->high_water > s->max_output) s->high_water = s->max_output;
  s->in_base = GL_READ_CHUNK;
  if (s->in_base < s->max_line + 2) s->in_base = s->max_line + 2;
  c->in_max = s->in_base;
  c->out_max = s->max_output;
  c->low_water = s->high_water;
  c->linger = LG_LINGER;
  gl_conn_read(c, 1);
}

void lg_socket_close(lg_socket *s, int reason, double linger) {
  gl_conn *c = s->conn;
  if (!s->reason) s->reason = reason;
  if (!c) return;
  s->conn = NULL;
  c->data = NULL;
  gl_conn_close(c, GL_CLOSE_LOCAL, linger);
  lg_defer_begin(s->rt);
  lg_wake_all(&s->wq);
  lg_defer_end(s->rt);
  lg_socket_notify(s);
}

void lg_push_socket(lua_State *L, lg_socket *s) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CONNS_KEY);
  lua_rawgeti(L, -1, s->id);
  lua_remove(L, -2);
}

void lg_socket_release(lg_socket *s) {
  lua_State *L = s->rt->L;
  sockets *m = lg_rt_state(s->rt, &socket_hooks);
  if (s->rt->closing) return;
  if (s->sref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, s->sref);
  s->sref = LUA_NOREF;
  lg_push_socket(L, s);
  if (!lua_isnil(L, -1) && m->released) m->released(L, -1, s);
  lua_pop(L, 1);
  forget(s);
}

void lg_socket_on_release(lua_State *L,
                          void (*fn)(lua_State *L, int idx, lg_socket *s)) {
  sockets *m = lg_rt_state(lg_rt_get(L), &socket_hooks);
  m->released = fn;
}

void lg_socket_peer(lg_socket *s, char *buf, size_t len) {
  if (!s->conn || gl_sock_peer_text(s->conn->fd, buf, len) != GL_OK)
    snprintf(buf, len, "closed");
}

const char *lg_unix_path(const char *addr) {
  return strncmp(addr, "unix:", 5) == 0 ? addr + 5 : NULL;
}


/* [-0, +1, v] Checks that the value at idx is a socket object and pushes
 * its handle; raises otherwise. A handle is a full userdata of a socket's
 * size whose tag is the address of HANDLE_MT_KEY: only lg_socket_new makes
 * those, and Lua code cannot forge a userdata's contents. Cheaper than
 * luaL_checkudata, which hashes the type name. */
static lg_socket *push_handle(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TTABLE) {
    if (lua_rawgeti(L, idx, 1) == LUA_TUSERDATA) {
      lg_socket *s = lua_touserdata(L, -1);
      if (lua_rawlen(L, -1) == sizeof *s && s->tag == &HANDLE_MT_KEY)
        return s;
    }
    if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING &&
        strcmp(lua_tostring(L, -1), LG_SOCKET) == 0)
      luaL_argerror(L, idx, LG_SOCKET " expected, got one whose handle "
                            "([1]) was changed");
  }
  luaL_typeerror(L, idx, LG_SOCKET);
  return NULL;
}

lg_socket *lg_check_socket(lua_State *L, int idx) {
  lg_socket *s;
  idx = lua_absindex(L, idx);
  s = push_handle(L, idx);
  lua_replace(L, idx);
  return s;
}

static int handle_gc(lua_State *L) {
  lg_socket *s = lua_touserdata(L, 1);
  if (!s || lua_rawlen(L, 1) != sizeof *s || s->tag != &HANDLE_MT_KEY)
    return 0; /* not a handle: someone called __gc by hand */
  if (s->conn) {
    gl_conn *c = s->conn;
    s->conn = NULL;
    c->data = NULL;
    if (s->rt->loop) gl_conn_close(c, GL_CLOSE_LOCAL, s->rt->closing ? 0 : LG_LINGER);
  }
  lg_waitq_orphan(&s->rq);
  lg_waitq_orphan(&s->wq);
  free(s->proxy);
  free(s->why);
  free(s->host);
  s->proxy = NULL;
  s->why = s->host = NULL;
  s->detail = NULL;
  return 0;
}

/* [-0, +2, -] nil and why the socket is unusable: its error when it
 * failed, else "closed". */
static void push_closed(lua_State *L, lg_socket *s) {
  if (s->reason == LG_R_ERROR && s->detail)
    lg_fail(L, LG_FAIL_MESSAGE, s->detail);
  else
    lg_fail(L, LG_FAIL_CLOSED, NULL);
}

/* --- receive ------------------------------------------------------------- */

enum { RCV_ANY, RCV_LINE, RCV_LINE_EOL, RCV_ALL, RCV_N, RCV_UNTIL };

static int pattern(lua_State *L, int idx, size_t *n) {
  const char *p;
  if (lua_isnoneornil(L, idx)) return RCV_ANY;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer v = luaL_checkinteger(L, idx);
    luaL_argcheck(L, v >= 0, idx, "byte count must be >= 0");
    *n = (size_t)v;
    return RCV_N;
  }
  p = luaL_checkstring(L, idx);
  if (*p == '*') p++;
  if (p[0] && !p[1]) {
    if (p[0] == 'l') return RCV_LINE;
    if (p[0] == 'L') return RCV_LINE_EOL;
    if (p[0] == 'a') return RCV_ALL;
  }
  return luaL_argerror(L, idx, "invalid pattern (expected \"*l\", \"*a\" or a count)");
}

static void want_input(lg_socket *s, size_t n) {
  gl_conn *c = s->conn;
  c->in_max = n > s->in_base ? n : s->in_base;
  gl_conn_update(c);
}

static void take(lua_State *L, lg_socket *s, size_t push, size_t consume) {
  gl_conn *c = s->conn;
  lua_pushlstring(L, gl_buf_head(&c->in), push);
  gl_conn_consume(c, consume);
  if (c->in_max != s->in_base) want_input(s, 0);
}

/* The next message under s's packet mode, as lg_socket_next says; but
 * for last_line 0 (receive), at the end of input too a message must be
 * whole. */
static int next_message(lua_State *L, lg_socket *s, int last_line) {
  gl_conn *c = s->conn;
  const char *p = gl_buf_head(&c->in);
  size_t len = c->in.len;
  gl_frame f;
  int r;
  switch (s->packet) {
    case LG_PACKET_RAW:
      if (!len) return 0;
      take(L, s, len, len);
      return 1;
    case LG_PACKET_LINE:
      r = gl_frame_line(p, len, s->max_line, &f);
      break;
    default:
      r = gl_frame_packet(p, len, s->packet, s->max_receive, &f);
      break;
  }
  if (r == GL_FRAME_FOUND) {
    lua_pushlstring(L, p + f.off, f.len);
    gl_conn_consume(c, f.size);
    s->need = 0;
    if (c->in_max != s->in_base) want_input(s, 0);
    return 1;
  }
  if (r == GL_FRAME_TOO_LONG) return -1;
  s->need = f.size;
  /* room for the whole message: a line fits in_base (frame.h) */
  if (f.size > c->in_max) want_input(s, f.size);
  if (!last_line || !s->eof || s->packet != LG_PACKET_LINE || !len) return 0;
  take(L, s, len, len); /* a last, unended line */
  return 1;
}

int lg_socket_next(lua_State *L, lg_socket *s) {
  if (s->packet == LG_PACKET_RAW) { /* the common case, first */
    size_t n = s->conn->in.len;
    if (!n) return 0;
    take(L, s, n, n);
    return 1;
  }
  return next_message(L, s, 1);
}

/* [-0, +(0|1|2|3), m] Completes a receive if it can: pushes its results and
 * returns their count, or returns 0 to wait for more input. */
static int try_receive(lua_State *L, lg_socket *s, int mode, size_t n,
                       const char *delim, int timed_out) {
  gl_conn *c = s->conn;
  const char *p;
  size_t len;
  gl_frame f;
  if (!c) {
    push_closed(L, s);
    lua_pushliteral(L, "");
    return 3;
  }
  p = gl_buf_head(&c->in);
  len = c->in.len;
  switch (mode) {
    case RCV_LINE:
    case RCV_LINE_EOL:
      switch (gl_frame_line(p, len, s->max_line, &f)) {
        case GL_FRAME_FOUND:
          take(L, s, mode == RCV_LINE_EOL ? f.size : f.len, f.size);
          return 1;
        case GL_FRAME_TOO_LONG:
          return lg_fail(L, LG_FAIL_TOO_LONG, NULL);
      }
      /* room for the longest line and its "\r\n" (frame.h) */
      want_input(s, s->max_line + 2);
      break;
    case RCV_UNTIL: /* n: the delimiter's length */
      switch (gl_frame_until(p, len, delim, n, s->max_line, &f)) {
        case GL_FRAME_FOUND:
          take(L, s, f.len, f.size);
          return 1;
        case GL_FRAME_TOO_LONG:
          return lg_fail(L, LG_FAIL_TOO_LONG, NULL);
      }
      want_input(s, s->max_line + n); /* frame.h */
      break;
    case RCV_N:
      if (len >= n) {
        take(L, s, n, n);
        return 1;
      }
      want_input(s, n);
      break;
    case RCV_ANY:
      switch (next_message(L, s, 0)) {
        case 1: return 1;
        case -1: return lg_fail(L, LG_FAIL_TOO_LONG, NULL);
      }
      break;
    case RCV_ALL:
      if (s->eof) {
        take(L, s, len, len);
        return 1;
      }
      if (len > s->max_receive) { /* the bytes stay, as for a long line */
        return lg_fail(L, LG_FAIL_TOO_LONG, NULL);
      }
      want_input(s, s->max_receive + 1);
      break;
  }
  if (s->eof || timed_out) {
    lg_fail(L, s->eof ? LG_FAIL_CLOSED : LG_FAIL_TIMEOUT, NULL);
    take(L, s, len, len);
    return 3;
  }
  return 0;
}

/* The fiber L runs in, for a reader of s that check_reader let through: a
 * served socket's owner (lg_current without the lookup), else as
 * lg_current says. */
static lg_fiber *reader(lua_State *L, lg_socket *s) {
  return s->server ? s->owner : lg_current(L);
}

static int receive_k(lua_State *L, int status, lua_KContext ctx);

/* A receive of mode (n: its count) until it completes: stack as for
 * receive_k; why: how the last wait ended. */
static int receive_run(lua_State *L, lg_socket *s, int mode, size_t n,
                       int why) {
  for (;;) {
    int r = try_receive(L, s, mode, n, NULL, why == LG_WAKE_TIMEOUT);
    if (r) return r;
    why = lg_wait_in(L, reader(L, s), &s->rq, lua_tonumber(L, 4), receive_k);
  }
}

static int receive_k(lua_State *L, int status, lua_KContext ctx) {
  size_t n = 0;
  int mode = pattern(L, 2, &n);
  (void)status;
  return receive_run(L, lua_touserdata(L, 1), mode, n, lg_woken(ctx));
}

/* [-0, +0, v] Raises unless L may receive on s now. */
static void check_reader(lua_State *L, lg_socket *s) {
  /* L runs in the owner's fiber: its thread (lg_current, without the
   * lookup) */
  if (s->server && (!s->owner || s->owner->th != L))
    luaL_error(L, "socket %d is a served connection: only its own "
                  "callbacks can receive on it", (int)s->id);
  if (!lg_waitq_empty(&s->rq))
    luaL_error(L, "socket %d is already being read by another coroutine",
               (int)s->id);
  s->need = 0; /* any input may be what this receive waits for */
}

static int sock_receive(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  size_t n = 0;
  int mode = pattern(L, 2, &n);
  double t = lg_opt_seconds(L, 3, s->timeout);
  check_reader(L, s);
  lua_settop(L, 3);
  lua_pushnumber(L, lg_deadline(s->rt, t));
  return receive_run(L, s, mode, n, LG_WAKE_NONE);
}

static int until_k(lua_State *L, int status, lua_KContext ctx) {
  lg_socket *s = lua_touserdata(L, 1);
  size_t n;
  const char *delim = lua_tolstring(L, 2, &n);
  double deadline = lua_tonumber(L, 4);
  int why = lg_woken(ctx), r;
  (void)status;
  for (;;) {
    r = try_receive(L, s, RCV_UNTIL, n, delim, why == LG_WAKE_TIMEOUT);
    if (r) return r;
    why = lg_wait_in(L, reader(L, s), &s->rq, deadline, until_k);
  }
}

/* sock:receive_until(delimiter [, timeout]): the bytes before the
 * delimiter, which is taken too; bounded by max_line. */
static int sock_receive_until(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  size_t n;
  double t;
  luaL_checklstring(L, 2, &n);
  luaL_argcheck(L, n > 0, 2, "empty delimiter");
  t = lg_opt_seconds(L, 3, s->timeout);
  check_reader(L, s);
  lua_settop(L, 3);
  lua_pushnumber(L, lg_deadline(s->rt, t));
  return until_k(L, LUA_OK, 0);
}

/* sock:setpacket(mode): how receive() and handler cut the input from now
 * on. What is buffered is cut under the new mode: nothing is lost or
 * taken twice. */
static int sock_setpacket(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  int mode = lg_opts_packet(L, 2);
  if (mode == -2)
    return luaL_argerror(L, 2, "packet mode must be \"raw\", \"line\", 1, 2 or 4");
  s->packet = mode;
  s->need = 0;
  /* an idle connection may hold a whole message under the new mode */
  if (s->conn && s->conn->in.len && !s->owner && s->server)
    lg_socket_notify(s);
  lua_pushinteger(L, 1);
  return 1;
}

/* --- send ---------------------------------------------------------------- */

/* [-0, +3, m] The results of a send that failed with rc (a negative
 * errno) after taking `taken` bytes. No memory for the queue raises, after
 * closing the socket: its output can no longer be kept whole. */
static int send_failed(lua_State *L, lg_socket *s, long rc, lua_Integer taken) {
  if (rc == -ENOMEM) {
    s->detail = "not enough memory";
    GL_STAT_ADD(s->rt->stats.errors, 1);
    lg_socket_close(s, LG_R_ERROR, 0);
    return lg_nomem(L);
  }
  /* the peer is gone (the socket stays readable) or the socket failed */
  push_closed(L, s);
  lua_pushinteger(L, taken);
  return 3;
}

/* The turn of a send that has taken part of its data (s->writer): a
 * to-be-closed value on its stack, so the turn ends however the send does,
 * its coroutine cut short included, and the sends waiting behind it go on. */
typedef struct send_turn {
  lg_socket *s;
  lua_State *L;
} send_turn;

static char SEND_TURN_MT_KEY;

static int send_turn_close(lua_State *L) {
  send_turn *t = lua_touserdata(L, 1);
  if (t->s && t->s->writer == t->L) {
    t->s->writer = NULL;
    lg_wake_all(&t->s->wq);
  }
  t->s = NULL;
  return 0;
}

/* [-0, +1, m] Gives s's turn to the send running on L, until the
 * to-be-closed value it pushes is closed. */
static void take_turn(lua_State *L, lg_socket *s) {
  send_turn *t = lua_newuserdatauv(L, sizeof *t, 0);
  t->s = s;
  t->L = L;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SEND_TURN_MT_KEY);
  lua_setmetatable(L, -2);
  lua_toclose(L, -1);
  s->writer = L;
}

/* Stack: the handle, data, first byte, next byte to take, last byte,
 * deadline, [the turn]. Takes data in pieces as the queue drains, so a send
 * of any size holds at most max_output bytes of it queued; the rest stays in
 * the Lua string until the peer has read enough. Once it has taken a part,
 * no other send takes anything until it ends, so sends never interleave. */
static int send_k(lua_State *L, int status, lua_KContext ctx) {
  lg_socket *s = lua_touserdata(L, 1);
  const char *data = lua_tostring(L, 2);
  lua_Integer i0 = lua_tointeger(L, 3), i = lua_tointeger(L, 4),
              j = lua_tointeger(L, 5);
  double deadline = lua_tonumber(L, 6);
  int why = lg_woken(ctx);
  (void)status;
  for (;;) {
    gl_conn *c = s->conn;
    /* done; but nothing to send is still refused by a closed socket */
    if (i > j && (i > i0 || (c && !(c->flags & GL_CONN_WSHUT)))) {
      lua_pushinteger(L, j >= i0 ? j - i0 + 1 : 0);
      return 1;
    }
    if (!c || (c->flags & GL_CONN_WSHUT)) { /* closed, or shut down */
      push_closed(L, s);
      lua_pushinteger(L, i - i0);
      return 3;
    }
    if (i > i0 && !s->writer) /* a part is taken: our turn until done */
      take_turn(L, s); /* 7 */
    if (gl_conn_queued(c) <= s->high_water &&
        (!s->writer || s->writer == L)) {
      long r = gl_conn_write_some(c, data + i - 1, (size_t)(j - i + 1));
      if (r < 0) return send_failed(L, s, r, i - i0);
      if (r > 0) {
        i += r;
        lua_pushinteger(L, i);
        lua_replace(L, 4);
        continue;
      }
      /* nothing taken: the queue is at max_output, which is at or below
       * high_water; wait for the kernel to take some, as below */
    }
    /* more than high_water queued, a full queue, or another send's turn:
     * wait */
    if (why == LG_WAKE_TIMEOUT) {
      lg_fail(L, LG_FAIL_TIMEOUT, NULL);
      lua_pushinteger(L, i - i0);
      return 3;
    }
    why = lg_wait(L, &s->wq, deadline, send_k);
  }
}

/* The most pieces of a table one send writes with one call; a longer
 * table is joined first. */
#define SEND_PIECES 64

/* [-0, +0, v] The bytes of piece k (the value on top) of a send's table
 * (tbl) or arguments: a string, or a number, which is converted where it
 * lies. Raises naming the table's piece, or the argument. */
static const char *piece(lua_State *L, int tbl, int k, size_t *len) {
  int t = lua_type(L, -1);
  if (t != LUA_TSTRING && t != LUA_TNUMBER) {
    if (!tbl) luaL_typeerror(L, k + 1, "string");
    luaL_argerror(L, 2, lua_pushfstring(L, "piece %d of the table is %s, "
                  "not a string or a number", k, luaL_typename(L, -1)));
  }
  return lua_tolstring(L, -1, len);
}

/* [-0, +1, -] Pushes piece k of a send: of the table at 2, or argument
 * k + 1 when the pieces are the arguments. */
static void push_piece(lua_State *L, int tbl, int k) {
  if (tbl)
    lua_rawgeti(L, 2, k);
  else
    lua_pushvalue(L, k + 1);
}

/* Writes the n pieces at iov as one stream when the socket can take it
 * now: returns the bytes taken (all, or fewer when the queue filled) or a
 * negative errno; or SEND_LATER when it cannot try now (closed, more than
 * high_water queued, or another send's turn). */
#define SEND_LATER LONG_MIN
static long try_writev(lg_socket *s, const struct iovec *iov, int n) {
  if (!s->conn || s->writer || gl_conn_queued(s->conn) > s->high_water)
    return SEND_LATER;
  return n == 1 ? gl_conn_write_some(s->conn, iov[0].iov_base, iov[0].iov_len)
                : gl_conn_writev_some(s->conn, iov, n);
}

/* The rest of a send of pieces that was not taken whole at once: joins them
 * (piece raises on one that is neither a string nor a number) and goes on
 * as a send of the joined string from byte taken + 1. Stack: the handle at
 * 1, the pieces: the table at 2 (tbl), or the arguments 2..n+1. */
static int send_joined(lua_State *L, lg_socket *s, int tbl, int n,
                       long taken) {
  luaL_Buffer b;
  size_t len;
  int k;
  luaL_buffinit(L, &b);
  for (k = 1; k <= n; k++) {
    push_piece(L, tbl, k);
    piece(L, tbl, k, &len);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_replace(L, 2);
  lua_settop(L, 2);
  lua_pushinteger(L, 1);         /* 3: the first byte (for the count) */
  lua_pushinteger(L, taken + 1); /* 4: the next byte to take */
  lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 2));
  lua_pushnumber(L, lg_deadline(s->rt, s->timeout));
  return send_k(L, LUA_OK, 0);
}

/* sock:send(pieces) and sock:send(s1, s2, ...): the strings (or numbers)
 * pieces[1..#pieces], or the arguments, in order, as one send of what
 * table.concat would make of them, without making it: when the socket can
 * take them now, one vectored write (gl_conn_writev_some) sends them all.
 * Otherwise send_joined goes on with the rest. Stack: the handle at 1. */
static int send_pieces(lua_State *L, lg_socket *s, int tbl, int n) {
  struct iovec iov[SEND_PIECES];
  long r = SEND_LATER;
  size_t total = 0;
  int k, top = lua_gettop(L);
  if (n <= SEND_PIECES) {
    if (tbl) luaL_checkstack(L, n, "too many pieces");
    for (k = 1; k <= n; k++) { /* each stays on the stack while written */
      size_t len;
      const char *p;
      if (!tbl && lua_type(L, k + 1) == LUA_TSTRING) {
        p = lua_tolstring(L, k + 1, &len);
      } else {
        push_piece(L, tbl, k);
        p = piece(L, tbl, k, &len);
      }
      iov[k - 1].iov_base = (void *)p;
      iov[k - 1].iov_len = len;
      total += len;
    }
    r = n ? try_writev(s, iov, n) : SEND_LATER; /* none: as send("") */
    lua_settop(L, top);
    if (r == (long)total) {
      lua_pushinteger(L, (lua_Integer)total);
      return 1;
    }
    if (r < 0 && r != SEND_LATER) return send_failed(L, s, r, 0);
  }
  return send_joined(L, s, tbl, n, r == SEND_LATER ? 0 : r);
}

/* sock:send(data [, i [, j]]): bytes i..j of data (as string.sub); or
 * sock:send(pieces) (a table) and sock:send(s1, s2, ...) (send_pieces). */
static int sock_send(lua_State *L) {
  lg_socket *s;
  size_t len;
  const char *data;
  lua_Integer first = 1, i = 1, j;
  int top = lua_gettop(L);
  /* the common cases: all of data, or two or more strings, to an open
   * socket with little queued */
  if (top == 2 && (data = lua_tolstring(L, 2, &len)) != NULL) {
    s = push_handle(L, 1); /* 3, left there: the results go on top */
    if (s->conn && gl_conn_queued(s->conn) <= s->high_water && !s->writer) {
      long r = gl_conn_write_some(s->conn, data, len);
      if (r == (long)len) {
        lua_pushinteger(L, (lua_Integer)len);
        return 1;
      }
      if (r < 0) return send_failed(L, s, r, 0);
      i = r + 1; /* the queue is full: the rest waits */
    }
    lua_replace(L, 1);
    j = (lua_Integer)len;
  } else if (lua_type(L, 3) == LUA_TSTRING) { /* pieces, not a byte range */
    int n = top - 1, most = n < SEND_PIECES ? n : SEND_PIECES, k;
    struct iovec iov[SEND_PIECES];
    size_t total = 0;
    s = push_handle(L, 1); /* n + 2, left there: the result goes on top */
    for (k = 0; k < most; k++) { /* a number: converted */
      iov[k].iov_base = (void *)lua_tolstring(L, k + 2, &iov[k].iov_len);
      if (!iov[k].iov_base) break; /* neither: raises below */
      total += iov[k].iov_len;
    }
    if (k == n) {
      long r = try_writev(s, iov, n);
      if (r == (long)total) {
        lua_pushinteger(L, (lua_Integer)total);
        return 1;
      }
      lua_replace(L, 1);
      if (r < 0 && r != SEND_LATER) return send_failed(L, s, r, 0);
      return send_joined(L, s, 0, n, r == SEND_LATER ? 0 : r);
    }
    lua_replace(L, 1);
    return send_pieces(L, s, 0, n);
  } else {
    s = lg_check_socket(L, 1);
    if (lua_type(L, 2) == LUA_TTABLE) {
      luaL_argcheck(L, lua_gettop(L) == 2, 3,
                    "no byte range with a table of pieces");
      return send_pieces(L, s, 1, (int)lua_rawlen(L, 2));
    }
    data = luaL_checklstring(L, 2, &len);
    i = luaL_optinteger(L, 3, 1);
    j = luaL_optinteger(L, 4, -1);
    if (i < 0) i = (lua_Integer)len + i + 1;
    if (i < 1) i = 1;
    if (j < 0) j = (lua_Integer)len + j + 1;
    if (j > (lua_Integer)len) j = (lua_Integer)len;
    first = i;
  }
  lua_settop(L, 2);
  lua_pushinteger(L, first); /* 3: the first byte (for the count) */
  lua_pushinteger(L, i);     /* 4: the next byte to take */
  lua_pushinteger(L, j);
  lua_pushnumber(L, lg_deadline(s->rt, s->timeout));
  return send_k(L, LUA_OK, 0);
}

/* --- sendfile ------------------------------------------------------------ */

/* The most of a file one resume takes before the loop gets a turn: the
 * kernel may go on taking it as fast as a peer on another CPU reads. */
#define SENDFILE_BURST (1u << 20)

/* A file being sent: a to-be-closed value on the send's stack, so its
 * descriptor is closed however the send ends, its coroutine cut short
 * included. The descriptor is the send's own: one it opened, or a copy of
 * a Lua file's, which the script may close meanwhile. */
typedef struct send_file {
  int fd;           /* -1 once closed */
  off_t off;        /* the next byte of the file to send */
  lua_Integer left; /* bytes still to send; < 0: until the file ends */
  lua_Integer sent; /* bytes taken */
  double deadline;
} send_file;

static char SEND_FILE_MT_KEY;

static int send_file_close(lua_State *L) {
  send_file *f = lua_touserdata(L, 1);
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
  return 0;
}

/* [-0, +3, m] nil, "PATH: MESSAGE" (the path at 2, if a string) or the
 * system's message for errno e, and the bytes taken. */
static int file_failed(lua_State *L, int e, lua_Integer sent) {
  if (lua_type(L, 2) == LUA_TSTRING)
    lua_pushfstring(L, "%s: %s", lua_tostring(L, 2), strerror(e));
  else
    lua_pushstring(L, strerror(e));
  lg_fail(L, LG_FAIL_MESSAGE, lua_tostring(L, -1));
  lua_remove(L, -3);
  lua_pushinteger(L, sent);
  return 3;
}

/* Stack: the handle, the file (a path or a Lua file), the send_file,
 * [the turn]. Goes as send_k does, taking a step of the file at a time
 * (gl_conn_sendfile: sendfile(2) while nothing is queued, else a chunk
 * through the queue), with the same waits: while more than high_water is
 * queued, the socket is full, or another send has the turn. Once a part is
 * taken, the turn is this send's until the file is sent. */
static int sendfile_k(lua_State *L, int status, lua_KContext ctx) {
  lg_socket *s = lua_touserdata(L, 1);
  send_file *f = lua_touserdata(L, 3);
  size_t burst = 0; /* taken since this resume */
  int why = lg_woken(ctx);
  (void)status;
  for (;;) {
    gl_conn *c = s->conn;
    if (f->left == 0) { /* a turn, if any, ends as this returns */
      lua_pushinteger(L, f->sent);
      return 1;
    }
    if (!c || (c->flags & GL_CONN_WSHUT)) { /* closed, or shut down */
      push_closed(L, s);
      lua_pushinteger(L, f->sent);
      return 3;
    }
    if (gl_conn_queued(c) <= s->high_water &&
        (!s->writer || s->writer == L)) {
      size_t n = f->left < 0 || f->left > (lua_Integer)SENDFILE_BURST
                     ? SENDFILE_BURST
                     : (size_t)f->left;
      int ferr = 0;
      long r = gl_conn_sendfile(c, f->fd, &f->off, n, &ferr);
      if (r == GL_FILE_END) {
        f->left = 0;
        continue;
      }
      if (r == GL_FILE_ERROR) return file_failed(L, ferr, f->sent);
      if (r < 0) return send_failed(L, s, r, f->sent);
      if (r > 0) {
        if (!s->writer) take_turn(L, s); /* 4: a part is taken */
        f->sent += r;
        if (f->left > 0) f->left -= r;
        burst += (size_t)r;
        if (burst < SENDFILE_BURST || f->left == 0) continue;
        gl_conn_want_drain(c); /* the others first: back at writability */
      }
      /* else nothing taken: the socket is full or the queue at max_output;
       * on_drain follows */
    }
    if (why == LG_WAKE_TIMEOUT) {
      lg_fail(L, LG_FAIL_TIMEOUT, NULL);
      lua_pushinteger(L, f->sent);
      return 3;
    }
    why = lg_wait(L, &s->wq, f->deadline, sendfile_k);
  }
}

/* sock:sendfile(file [, offset [, count]]): count bytes (default: to the
 * end) of file, a path or an open Lua file, from offset (default 0). The
 * results are send's: the bytes taken, or nil, err, n. */
static int sock_sendfile(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  lua_Integer off = luaL_optinteger(L, 3, 0), count = -1;
  luaL_Stream *fh = NULL;
  send_file *f;
  struct stat st;
  luaL_argcheck(L, off >= 0, 3, "offset must be >= 0");
  if (!lua_isnoneornil(L, 4)) {
    count = luaL_checkinteger(L, 4);
    luaL_argcheck(L, count >= 0, 4, "byte count must be >= 0");
  }
  if (lua_type(L, 2) == LUA_TSTRING) {
    size_t len;
    const char *path = lua_tolstring(L, 2, &len);
    /* the system would read a shorter path: "a\0.txt" as "a" */
    luaL_argcheck(L, strlen(path) == len, 2, "path contains a zero byte");
  } else {
    fh = luaL_testudata(L, 2, LUA_FILEHANDLE);
    if (!fh) return luaL_typeerror(L, 2, "string or file");
    if (!fh->closef) return luaL_argerror(L, 2, "attempt to use a closed file");
  }
  lua_settop(L, 2);
  f = lua_newuserdatauv(L, sizeof *f, 0); /* 3 */
  f->fd = -1;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SEND_FILE_MT_KEY);
  lua_setmetatable(L, 3);
  lua_toclose(L, 3);
  if (fh) {
    fflush(fh->f); /* what was written through it is in the file */
    f->fd = fcntl(fileno(fh->f), F_DUPFD_CLOEXEC, 0);
  } else {
    /* O_NONBLOCK: opening a FIFO must not wait for a writer */
    do {
      f->fd = open(lua_tostring(L, 2),
                   O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    } while (f->fd < 0 && errno == EINTR);
  }
  if (f->fd < 0) return file_failed(L, errno, 0);
  if (count < 0 && fstat(f->fd, &st) == 0 && S_ISREG(st.st_mode))
    count = st.st_size > off ? (lua_Integer)(st.st_size - off) : 0;
  f->off = (off_t)off;
  f->left = count;
  f->sent = 0;
  f->deadline = lg_deadline(s->rt, s->timeout);
  return sendfile_k(L, LUA_OK, 0);
}

/* --- the rest of the methods ----------------------------------------- */

static int sock_close(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  lg_socket_close(s, LG_R_LOCAL, LG_LINGER);
  lua_pushinteger(L, 1);
  return 1;
}

/* sock:shutdown("send"): ends the sending side (gl_conn_shutdown) once
 * what is queued is written; reading goes on. Returns 1, or nil and why
 * when the socket is closed or its peer gone. Sends waiting on the queue
 * are woken: theirs is refused from now on. */
static int sock_shutdown(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  const char *how = luaL_checkstring(L, 2);
  int r;
  if (strcmp(how, "send") != 0)
    return luaL_argerror(L, 2, lua_pushfstring(L, "\"send\" expected, got "
                         "'%s' (close() ends both ways)", how));
  if (!s->conn) {
    push_closed(L, s);
    return 2;
  }
  r = gl_conn_shutdown(s->conn);
  lg_defer_begin(s->rt);
  lg_wake_all(&s->wq);
  lg_defer_end(s->rt);
  if (r < 0) {
    push_closed(L, s);
    return 2;
  }
  lua_pushinteger(L, 1);
  return 1;
}

static int sock_settimeout(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  if (lua_isnoneornil(L, 2)) {
    s->timeout = -1;
  } else {
    double t = lg_opt_seconds(L, 2, -1);
    s->timeout = t < 0 ? -1 : t;
  }
  lua_pushinteger(L, 1);
  return 1;
}

static int sock_tostring(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  char peer[GL_NAMELEN + 48];
  lg_socket_peer(s, peer, sizeof peer);
  lua_pushfstring(L, "glisten.socket %I (%s)", (LUAI_UACINT)s->id, peer);
  return 1;
}

/* --- what a served connection's run takes --------------------------------- */


lg_socket *lg_find_socket(lua_State *L, lua_Integer id) {
  lg_socket *s;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CONNS_KEY);
  lua_rawgeti(L, -1, id);
  s = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return s;
}

static const luaL_Reg sock_methods[] = {{"send", sock_send},
                                        {"sendfile", sock_sendfile},
                                        {"receive", sock_receive},
                                        {"receive_until", sock_receive_until},
                                        {"setpacket", sock_setpacket},
                                        {"shutdown", sock_shutdown},
                                        {"close", sock_close},
                                        {"settimeout", sock_settimeout},
                                        {NULL, NULL}};

void lg_socket_methods(lua_State *L, const luaL_Reg *methods) {
  luaL_getmetatable(L, LG_SOCKET);
  lua_getfield(L, -1, "__index");
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 2);
}

/* connect.c adds connect to the module table; sockopt.c the methods of
 * names and options. */
int lg_socket_open(lua_State *L) {
  int first;
  lg_rt_attach(L, &socket_hooks, sizeof(sockets), &first);
  static const luaL_Reg meta[] = {{"__tostring", sock_tostring},
                                  {NULL, NULL}};
  lg_class(L, LG_SOCKET, meta, sock_methods);
  lg_hidden_mt(L, &HANDLE_MT_KEY, handle_gc, NULL);
  lg_hidden_mt(L, &SEND_TURN_MT_KEY, NULL, send_turn_close); /* a send's turn */
  lg_hidden_mt(L, &SEND_FILE_MT_KEY, send_file_close, send_file_close);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CONNS_KEY);
  return 0;
}
