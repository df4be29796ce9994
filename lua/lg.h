/*
 * lg.h: what the files of the Lua binding share.
 *
 * One runtime (lg_rt) per lua_State: an ev_loop, the core's connection env,
 * counters, and the scheduler's ready queue. Every Lua callback runs in a
 * fiber: a coroutine the runtime created, anchored while it lives, resumed
 * only from loop callbacks with the runtime's main thread as `from`.
 *
 * A blocking-style call (receive, accept, sleep, ...) waits through
 * lg_wait: inside a fiber it yields; in any other thread (the main chunk of a
 * plain script) it runs the loop until the wait ends. The same continuation
 * function serves both, so each call is written once.
 */
#ifndef LG_H
#define LG_H

#include <ev.h>
#include <stdatomic.h>

#include "conn.h"
#include "fail.h"
#include "gl.h"
#include "inbox.h"
#include "lauxlib.h"
#include "listener.h"
#include "lua.h"
#include "options.h"
#include "stats.h"

#define LG_SOCKET "glisten.socket"
#define LG_SERVER "glisten.server"
#define LG_LISTENER "glisten.listener"
#define LG_TIMER "glisten.timer"
#define LG_FIBER "glisten.fiber"

/* Limits that are not options (the options are in options.h). */
#define LG_HIGH_WATER (64u << 10) /* send waits while more is queued */
#define LG_LINGER 5.0             /* longest a closing socket flushes */
#define LG_SLOTS 256          /* Lua states per process; ids carry the slot */
#define LG_INBOX_MAX 65536    /* messages queued for one worker */
#define LG_FIBER_POOL 64      /* idle fibers a runtime keeps for reuse */

/* Why a wait ended. */
enum { LG_WAKE_NONE = 0, LG_WAKE_EVENT, LG_WAKE_TIMEOUT };

/* Why a connection ended: the with_close reasons. */
enum {
  LG_R_NONE = 0,
  LG_R_CLOSED,   /* "closed": the peer closed */
  LG_R_LOCAL,    /* "local": the script closed it */
  LG_R_TIMEOUT,  /* "timeout": idle timeout */
  LG_R_SHUTDOWN, /* "shutdown": server stopping */
  LG_R_ERROR     /* "error": a callback raised or the socket failed */
};

/* The kinds of error a flood of work can repeat (lg_log_flood). */
enum { LG_FLOOD_SERVE, LG_FLOOD_UNPARK, LG_FLOOD_DELIVER, LG_FLOOD_TIMER,
       LG_FLOOD_KINDS };

typedef struct lg_rt lg_rt;
typedef struct lg_fiber lg_fiber;
typedef struct lg_socket lg_socket;
typedef struct lg_server lg_server;
typedef struct lg_pool lg_pool;

/* Fibers waiting for one thing, first come first served. */
typedef struct lg_waitq {
  lg_fiber *head, *tail;
} lg_waitq;

/* A module's part in its runtime's life, registered with lg_rt_hook when
 * the module opens in a state. The runtime calls them; it never calls a
 * module by name, so a lower layer does not reach up. Any may be NULL. */
typedef struct lg_rt_hooks {
  /* lg_rt_shutdown: stop taking new work; end what runs within grace
   * seconds (0: now). */
  void (*shutdown)(lg_rt *rt, double grace);
  /* How much work a shutdown still waits for (0: none). */
  long (*busy)(lg_rt *rt);
  /* The state is closing (lua_close): release what the module holds,
   * calling no Lua. Hooks run in the reverse order of registration. */
  void (*teardown)(lg_rt *rt);
} lg_rt_hooks;
#define LG_RT_HOOKS 8

/* Called when a fiber's function returns (status LUA_OK) or raises (status
 * is the error code; the message is on top of f->th). */
typedef void lg_done_fn(lg_fiber *f, int status);

struct lg_fiber {
  lg_rt *rt;
  lua_State *th;
  int managed;  /* 0: the stack-allocated waiter of an unmanaged thread */
  int waiting;  /* suspended in lg_wait */
  int woken;    /* LG_WAKE_* of the last wait */
  int queued;   /* in the ready queue */
  int nargs;    /* values to pass at the next resume */
  lg_waitq *q;  /* the queue it waits in, or NULL */
  lg_fiber *prev, *next; /* links in q */
  lg_fiber *rnext;       /* link in the ready queue */
  ev_timer timer;        /* the wait's timeout */
  lg_done_fn *done;      /* NULL: log errors and forget */
  void *ud;              /* its user's: a served connection's socket */
};

struct lg_rt {
  lua_State *L; /* main thread */
  struct ev_loop *loop;
  gl_env env;
  gl_stats stats;
  ev_prepare prepare;
  ev_idle idle;
  lg_fiber *ready, *ready_tail;
  int in_loop; /* ev_run frames on the C stack */
  int running; /* fiber resumes on the C stack */
  int stopped; /* glisten.stop() */
  int defer;   /* > 0: wakes go through the ready queue */
  long served; /* served connections whose fiber has not finished */
  int started_work; /* a server, listener, connection, coroutine or timer
                       was ever started (the command runs the loop) */
  double shutdown_timeout; /* the command's grace on SIGINT/SIGTERM */
  lg_server *servers; /* open servers */
  int closing;        /* lua_close in progress: call no Lua */
  ev_timer drain, deadline; /* lg_rt_shutdown: is all done; the grace is up */
  const lg_rt_hooks *hooks[LG_RT_HOOKS];
  int nhooks;
  int slot;              /* in the process registry; low bits of ids */
  gl_inbox inbox;        /* messages from other states */
  gl_msg *mail, *mail_cur; /* taken from the inbox, being delivered */
  int worker_id, worker_count;
  lg_pool *pool;         /* the pool this state is a worker of, or NULL */
  int pools;             /* pools this state started that still run */
  lg_pool *pool_list;    /* those pools */
  gl_buf tmp;            /* scratch for glisten.shared */
  struct {
    double at;             /* when lg_log_flood last wrote this kind */
    unsigned long skipped; /* and how many it has left out since */
  } flood[LG_FLOOD_KINDS];
  struct gl_resolver *resolver; /* name lookups for connect, made on first use */
  atomic_int nsubs;      /* subscriptions here: publish skips states with none */
  /* The pool's hook for a control message (LG_CTL_*) from the inbox. */
  void (*control)(lg_rt *rt, int cmd, double arg);
  /* Messaging's hook: a served socket (its userdata at idx) is being
   * forgotten; end its subscriptions. */
  void (*released)(lua_State *L, int idx, lg_socket *s);
  lg_fiber *fpool;       /* idle fibers for connection callbacks */
  int nfpool;
};

struct lg_socket {
  const void *tag; /* marks a socket handle (see lg_check_socket) */
  lg_rt *rt;
  gl_conn *conn; /* NULL once closed */
  lua_Integer id;
  double timeout;      /* default for receive/send/accept; < 0: none */
  lg_waitq rq, wq;     /* waiting to read; waiting for output to drain */
  lg_fiber *owner;     /* the fiber running a served connection's callbacks;
                          NULL while none runs (idle, see server.c) */
  lg_server *server;   /* server that accepted it, or NULL */
  /* A served connection's hook for input, a message or its end while no
   * fiber runs it: runs its callbacks and returns 1, or returns 0 when it
   * is served no more (then waiting readers are woken instead). */
  int (*ready)(lg_socket *s);
  lg_socket *sprev, *snext; /* in server->socks */
  int reason;          /* LG_R_*, once known */
  const char *detail;  /* static text for reason "error" from the socket */
  int eof;             /* the peer closed its side */
  int nmail, mhead;    /* mailbox: count, index of the oldest */
  int max_mail;        /* mailbox slots */
  int started;         /* a served connection's with_init has been called */
  int idle;            /* its last run ended with nothing left to do */
  int in_close;        /* its fiber (owner) runs with_close */
  int stop;            /* shut down from its own callback: end after it */
  lua_State *writer;   /* the send that has taken part of its data and
                          waits to take the rest: no other takes any */
  int sref;            /* a served connection's state table (registry ref,
                          which anchors it until the socket is released) */
  size_t max_line, max_receive, max_output, high_water;
  size_t in_base;      /* in_max while no receive asks for more */
};

#define LG_PARK_MAX 64 /* accepted connections waiting for a free slot */

/* What the server of a pool's worker shares with the other workers: the
 * count max_connections limits, and how to wake them when a slot frees
 * (the pool, a higher layer, fills it in). */
typedef struct lg_share {
  atomic_long *count;
  void (*resume)(const struct lg_share *sh);
  lg_pool *pool;
} lg_share;

/* A server's callbacks, as registry refs (LUA_NOREF: not given). */
enum { LG_CB_HANDLER, LG_CB_INIT, LG_CB_CLOSE, LG_CB_MESSAGE, LG_NCB };

struct lg_server {
  lg_rt *rt;
  int cb[LG_NCB];
  gl_listener l;
  int open;     /* accepting (listener open) */
  int ref;      /* anchor while open or while connections remain */
  lg_opts o;
  char host[64];
  long nconns;
  lg_socket *socks; /* live connections */
  ev_timer grace;   /* close(grace) deadline */
  lg_server *next;  /* in rt->servers */
  atomic_long own_count; /* open connections, when no pool shares a count */
  atomic_long *count;    /* the count max_connections limits */
  const lg_share *share;  /* set when it serves as a pool's worker */
  int parked[LG_PARK_MAX]; /* accepted past max_connections, not yet served */
  int nparked;
};

/* state.c */
lua_State *lg_newstate(void);
void lg_closestate(lua_State *L);
int lg_setlimit(lua_State *L, size_t limit);
size_t lg_getlimit(lua_State *L);

/* sched.c */
lg_rt *lg_rt_get(lua_State *L);
lg_rt *lg_rt_open(lua_State *L);
int lg_rt_hook(lg_rt *rt, const lg_rt_hooks *h);
void lg_rt_shutdown(lg_rt *rt, double grace);
lg_fiber *lg_current(lua_State *L);
lg_fiber *lg_spawn(lua_State *L, int narg, lg_done_fn *done);
lg_fiber *lg_fiber_new(lua_State *L, lg_done_fn *done);
int lg_wait(lua_State *L, lg_waitq *q, double deadline, lua_KFunction k);
int lg_wait_in(lua_State *L, lg_fiber *f, lg_waitq *q, double deadline,
               lua_KFunction k);
int lg_woken(lua_KContext ctx);
void lg_wake(lg_fiber *f, int why);
void lg_wake_all(lg_waitq *q);
void lg_fiber_release(lg_fiber *f);
void lg_fiber_start(lg_fiber *f, int nargs);
void lg_fiber_go(lg_fiber *f, int nargs);
lg_fiber *lg_fiber_pooled(lg_rt *rt);
void lg_fiber_pool_put(lg_fiber *f);
int lg_fiber_kill(lg_fiber *f);
void lg_run(lg_rt *rt);
double lg_deadline(lg_rt *rt, double timeout);
double lg_opt_seconds(lua_State *L, int idx, double def);
double lg_check_seconds(lua_State *L, int idx);
int lg_log_error(lg_rt *rt, const char *what, lua_State *co, int status);
void lg_log_flood(lg_rt *rt, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void lg_check_loop_allowed(lua_State *L, const char *fn);
int lg_sched_open(lua_State *L);

/* socket.c */
lg_socket *lg_socket_new(lua_State *L, lg_rt *rt, gl_conn *c);
void lg_socket_attach(lg_socket *s, gl_conn *c);
void lg_socket_limits(lg_socket *s, const lg_opts *o);
void lg_socket_anchor(lua_State *L, lg_socket *s);
void lg_socket_release(lg_socket *s);
void lg_socket_take(lua_State *L, lg_socket *s);
void lg_mail_pop(lua_State *L, lg_socket *s);
void lg_push_socket(lua_State *L, lg_socket *s);
lg_socket *lg_find_socket(lua_State *L, lua_Integer id);
void lg_mail_push(lua_State *L, lg_socket *s);
lg_socket *lg_check_socket(lua_State *L, int idx);
void lg_socket_close(lg_socket *s, int reason, double linger);
void lg_socket_peer(lg_socket *s, char *buf, size_t len);
const char *lg_reason_name(int reason);
extern const gl_conn_cbs lg_socket_cbs;
void lg_socket_methods(lua_State *L, const luaL_Reg *methods);
void lg_hidden_mt(lua_State *L, const char *key, lua_CFunction gc,
                  lua_CFunction close);

/* connect.c */
int lg_connect_open(lua_State *L);
int lg_socket_open(lua_State *L);

/* server.c */
int lg_server_open(lua_State *L);
void lg_server_resume(lg_server *sv);
int lg_serve(lua_State *L, int idx, const lg_share *share);
void lg_limit_memory(lua_State *L, size_t limit);

/* value.c */
void lg_value_encode(lua_State *L, int idx);
void lg_value_decode(lua_State *L, const char *p, size_t len);

/* workers.c */
int lg_registry_add(lg_rt *rt);
void lg_registry_remove(lg_rt *rt);
void lg_registry_set_pool(lg_rt *rt, lg_pool *p);
void lg_registry_control(lg_pool *p, int cmd, double arg);
void lg_registry_each(lg_pool *p, void (*fn)(lg_rt *, void *), void *ud);
int lg_workers_open(lua_State *L);

/* shared.c */
int lg_shared_open(lua_State *L);

/* script.c */
int lg_script_load(lua_State *L, const char *path);
void lg_script_options(lua_State *L, int t, int from_table, int opts);

/* pool.c */
enum { LG_CTL_SHUTDOWN = 1, LG_CTL_RESUME };
int lg_pool_open(lua_State *L, lua_CFunction open_module);
lg_rt *lg_pool_host(lg_pool *p);

/* glisten.c */
int luaopen_glisten(lua_State *L);

#endif
