/*
 * main.c: the glisten-lua command.
 *
 *   glisten-lua [options] SCRIPT [PORT | unix:PATH]
 *
 * Loads SCRIPT, serves its handler (a returned table's or the globals'),
 * prints "listening on HOST:PORT" (or "unix:PATH") on stderr, and runs until SIGINT/SIGTERM,
 * then shuts down with grace. Exit codes: 0 after a graceful shutdown, 1
 * when the script fails to load or a port cannot be bound, 2 for bad
 * arguments.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "glisten.h"
#include "lualib.h"
#include "options.h"
#include "script.h"
#include "server.h"
#include "socket.h"
#include "state.h"

static const char USAGE_HEAD[] =
    "usage: glisten-lua [options] SCRIPT [PORT | unix:PATH]\n"
    "\n"
    "Serves SCRIPT, which returns a table of callbacks or defines them as\n"
    "globals: handler(msg, state), with_init(state),\n"
    "with_close(state, reason [, detail]), with_message(value, state).\n"
    "A script without handler may start its own servers, connections,\n"
    "coroutines or timers; the command then runs until they are done.\n"
    "\n"
    "options (each but -w also a field of the script's table; flags win):\n";
static const char USAGE_TAIL[] =
    "  --check                    load the script, report errors, and exit\n"
    "  --options-markdown         print the options as the docs' table\n"
    "  --options-man              print the options as the man page's entries\n"
    "  --help                     show this help\n"
    "  --version                  show the version\n";

static const char *progname = "glisten-lua";

static void usage(FILE *f) {
  fputs(USAGE_HEAD, f);
  lg_opts_describe(f, LG_OPTS_HELP);
  fputs(USAGE_TAIL, f);
}

static void die_usage(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", progname);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  usage(stderr);
  exit(2);
}

/* Stores the value v the command line gave the option flag (as typed) in
 * the table on top. */
static void put_option(lua_State *L, const lg_option *r, const char *flag,
                       const char *v) {
  const char *need = lg_opts_parse_flag(L, r, v);
  if (need) die_usage("%s needs %s", flag, need);
}

/* [-0, +0, e] Validates the command's options (table at 1) into the
 * lg_opts at 2; caps this state's memory from here on when it is the one
 * worker (a pool's workers cap their own). Everything that allocates in
 * this state after the cap runs in a protected call (start, serve). */
static int check_opts(lua_State *L) {
  lg_opts *o = lua_touserdata(L, 2);
  lg_opts_read(L, 1, o, 0);
  if (o->max_memory && o->workers <= 1) lg_limit_memory(L, o->max_memory);
  return 0;
}

/* [-1, +0, e] Validates the options glisten.serve would get. */
static int serve_opts_valid(lua_State *L) {
  lg_opts o;
  lg_opts_read(L, 1, &o, LG_IN_SERVE);
  return 0;
}

/* --- shutdown on signals ---------------------------------------------- */

/* Once the command serves, SIGINT and SIGTERM have a handler of their own,
 * which runs whatever the loop is doing, so no script can hold it up: the
 * first signal wakes the main loop to start the graceful shutdown and arms
 * an alarm at grace + LG_LINGER + STOP_MARGIN seconds; a second signal, or
 * the alarm (the shutdown has not ended: a worker stuck where it cannot be
 * preempted), exits at once with status 1. Before the command serves, a
 * signal ends it as it would any program. The handlers call only what may
 * be called from one (write, alarm, _exit, ev_async_send). */
#define STOP_MARGIN 3

static struct {
  ev_async stop;        /* in the main loop: start the shutdown */
  struct ev_loop *loop; /* the main loop, once serving */
  lg_rt *rt;
  volatile sig_atomic_t signo; /* the first signal, once one came */
  double grace; /* of a shutdown on SIGINT/SIGTERM */
} sig;

static void say(const char *what) {
  ssize_t rc = write(2, progname, strlen(progname));
  rc = write(2, what, strlen(what));
  (void)rc;
}

static void on_signal(int signo) {
  if (sig.signo) {
    say(": second signal; exiting now\n");
    _exit(1);
  }
  sig.signo = signo;
  alarm((unsigned)sig.grace + LG_LINGER + STOP_MARGIN + 1);
  ev_async_send(sig.loop, &sig.stop);
}

static void on_alarm(int signo) {
  (void)signo;
  say(": still running after the grace period, the flush and 3 s more; "
      "exiting now\n");
  _exit(1);
}

/* [-0, +1, e] Connections open in this state and its pools. */
static int open_connections(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "glisten");
  lua_getfield(L, -1, "stats");
  lua_call(L, 0, 1);
  lua_getfield(L, -1, "connections");
  return 1;
}

/* The first signal, on the main loop: says so and starts the shutdown. */
static void on_stop(EV_P_ ev_async *w, int revents) {
  lua_State *L = sig.rt->L;
  (void)loop;
  (void)w;
  (void)revents;
  lua_pushcfunction(L, open_connections);
  int open = lua_pcall(L, 0, 1, 0) == LUA_OK ? (int)lua_tointeger(L, -1) : -1;
  lua_pop(L, 1);
  fprintf(stderr, "%s: stopping (%s); %d connection(s) open, %.3gs grace\n",
          progname, sig.signo == SIGINT ? "SIGINT" : "SIGTERM", open,
          sig.grace);
  lg_rt_shutdown(sig.rt, sig.grace);
}

/* Concurrent connections should be limited only by the hard limit on
 * descriptors: raise the soft one to it. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* From here a signal stops the command gracefully (see on_signal). */
static void serve_signals(lg_rt *rt) {
  struct sigaction sa;
  sig.rt = rt;
  sig.loop = rt->loop;
  ev_async_init(&sig.stop, on_stop);
  ev_async_start(rt->loop, &sig.stop);
  ev_unref(rt->loop);
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* --- main ------------------------------------------------------------- */

/* What the command line asks for, besides the options. */
typedef struct cmdline {
  const char *script;
  int check;
} cmdline;

/* [-0, +1, m] Parses argv: pushes the table of the options its flags (and
 * PORT) give, and fills c. Exits 0 after --help, --version and the docs'
 * outputs, and 2, with the usage, on a bad argument. */
static void parse(lua_State *L, int argc, char **argv, cmdline *c) {
  const char *port = NULL;
  int only_positional = 0;
  memset(c, 0, sizeof *c);
  lua_newtable(L);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (only_positional || a[0] != '-' || !a[1]) {
      if (!c->script)
        c->script = a;
      else if (!port)
        port = a;
      else
        die_usage("unexpected argument '%s'", a);
      continue;
    }
    const char *eq = strchr(a, '=');
    size_t n = eq ? (size_t)(eq - a) : strlen(a);
    if (strcmp(a, "--") == 0) {
      only_positional = 1;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    } else if (strcmp(a, "--options-markdown") == 0) {
      lg_opts_describe(stdout, LG_OPTS_MARKDOWN);
      exit(0);
    } else if (strcmp(a, "--options-man") == 0) {
      lg_opts_describe(stdout, LG_OPTS_MAN);
      exit(0);
    } else if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
      printf("glisten-lua %s (%s, libev %d.%d)\n", GLISTEN_VERSION,
             LUA_RELEASE, ev_version_major(), ev_version_minor());
      exit(0);
    } else if (strcmp(a, "--check") == 0) {
      c->check = 1;
    } else {
      const lg_option *r = lg_opts_find_flag(a, n);
      char flag[64];
      snprintf(flag, sizeof flag, "%.*s", (int)n, a);
      if (!r) die_usage("unknown option '%s'", a);
      if (eq)
        put_option(L, r, flag, eq + 1);
      else if (r->kind == LG_KIND_BOOL) /* a switch: no value follows */
        put_option(L, r, flag, "true");
      else if (i + 1 < argc)
        put_option(L, r, flag, argv[++i]);
      else
        die_usage("%s needs a value", flag);
    }
  }
  if (!c->script) die_usage("no SCRIPT given");
  if (port && lg_unix_path(port)) /* unix:PATH in place of PORT */
    put_option(L, lg_opts_find_flag("--unix", 6), "PORT", lg_unix_path(port));
  else if (port)
    put_option(L, lg_opts_find_flag("--port", 6), "PORT", port);
}

/* The one line per listening socket a start prints, which tools wait for:
 * "listening on HOST:PORT", or "listening on unix:PATH" (path not NULL). */
static void announce(const char *host, int port, const char *path) {
  if (path)
    fprintf(stderr, "listening on unix:%s\n", path);
  else
    fprintf(stderr, strchr(host, ':') ? "listening on [%s]:%d\n"
                                      : "listening on %s:%d\n",
            host, port);
}

/* [-3, +0, e] start(options, script, check): loads the script, checks it,
 * and (unless check) serves its handler with the options it would be
 * served with, and announces every server; sets the grace of a shutdown.
 * Raises with the message to print. */
static int start(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  const char *script = lua_tostring(L, 2);
  int check = lua_toboolean(L, 3);
  int from_table = lg_script_load(L, script); /* 4: where the callbacks are */
  sig.grace = lg_defaults.shutdown_timeout;
  int t = lua_getfield(L, 4, "handler");
  lua_pop(L, 1);
  if (t != LUA_TNIL && t != LUA_TFUNCTION)
    return luaL_error(L, "%s: 'handler' must be a function, not a %s", script,
                      lua_typename(L, t));
  if (t == LUA_TNIL && !rt->started_work)
    return luaL_error(L, "%s defines no handler(msg, state) and starts "
                         "nothing (no server, connection, coroutine or timer)",
                      script);
  if (t == LUA_TFUNCTION) {
    lg_opts o;
    lg_script_options(L, 4, from_table, 1); /* 5 */
    if (check) { /* the options it would be served with */
      lua_pushcfunction(L, serve_opts_valid);
      lua_pushvalue(L, 5);
      if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        return luaL_error(L, "%s: %s", script, lua_tostring(L, -1));
      lg_opts_read(L, 5, &o, LG_IN_SERVE);
      if (o.max_memory) lg_limit_memory(L, o.max_memory); /* as serve would */
      return 0;
    }
    lg_opts_read(L, 5, &o, LG_IN_SERVE);
    sig.grace = o.shutdown_timeout;
    if (lg_serve(L, 5, NULL) == 2) return lua_error(L);
  } else if (from_table) {
    lg_opts o; /* no handler: only the grace is taken from the table */
    lua_createtable(L, 0, 1);
    lua_getfield(L, 4, "shutdown_timeout");
    lua_setfield(L, -2, "shutdown_timeout");
    lg_opts_read(L, -1, &o, 0);
    sig.grace = o.shutdown_timeout;
  }
  if (lua_getfield(L, 1, "shutdown_timeout") != LUA_TNIL) /* the flag wins */
    sig.grace = lua_tonumber(L, -1);
  if (!check)
    for (lg_server *sv = lg_servers_of(rt); sv; sv = sv->next)
      announce(sv->host, sv->l.port, sv->l.path[0] ? sv->l.path : NULL);
  return 0;
}

/* [-3, +0, e] start_pool(options, script, check): serves the script with
 * a pool of workers (options.workers > 1), each of which loads the script
 * itself, and announces the pool; raises with the first worker's error. */
static int start_pool(lua_State *L) {
  lg_opts o;
  lg_opts_read(L, 1, &o, 0);
  sig.grace = o.shutdown_timeout;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "glisten");
  lua_getfield(L, -1, "serve");
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "script");
  lua_call(L, 1, 2);
  if (lua_isnil(L, -2)) return lua_error(L);
  lua_getfield(L, -2, "host");
  lua_getfield(L, -3, "port");
  lua_getfield(L, -4, "path");
  announce(lua_tostring(L, -3), (int)lua_tointeger(L, -2),
           lua_tostring(L, -1));
  return 0;
}

int main(int argc, char **argv) {
  cmdline c;
  lg_opts cli;
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  lua_State *L = lg_newstate();
  if (!L) {
    fprintf(stderr, "%s: cannot create a Lua state\n", progname);
    return 1;
  }
  luaL_openlibs(L);
  luaL_requiref(L, "glisten", luaopen_glisten, 1);
  lua_pop(L, 1);

  parse(L, argc, argv, &c); /* 1: the options the flags give */
  lua_createtable(L, 1, 1); /* arg, as lua.c sets it */
  lua_pushstring(L, argv[0]);
  lua_rawseti(L, -2, -1);
  lua_pushstring(L, c.script);
  lua_rawseti(L, -2, 0);
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, check_opts);
  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, &cli);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) die_usage("%s", lua_tostring(L, -1));

  /* a pool's workers each load the script themselves, and report errors */
  lua_pushcfunction(L, cli.workers > 1 && !c.check ? start_pool : start);
  lua_pushvalue(L, 1);
  lua_pushstring(L, c.script);
  lua_pushboolean(L, c.check);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    lg_closestate(L); /* what closed sockets queued still goes out */
    return 1;
  }
  if (c.check) {
    printf("%s: ok\n", c.script);
  } else {
    lg_rt *rt = lg_rt_get(L);
    serve_signals(rt);
    lg_run(rt);
  }
  lg_closestate(L);
  return 0;
}
