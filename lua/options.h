/*
 * options.h: every option of glisten-lua, in one schema.
 *
 * A row of LG_OPTIONS says all there is about one option: its key (a field
 * of glisten.serve{}, listen{}, connect{} or a script's table), its kind,
 * default and range, where it is taken, and its command-line flag and help.
 * The struct lg_opts, its defaults, the readers of option tables, the list
 * of fields a script's table may set, the command's flags and --help, and
 * the options table of the docs (glisten-lua --options-markdown) and the
 * OPTIONS of the man page (--options-man) all come from these rows: a new
 * option is one row, and its field is o.KEY.
 */
#ifndef LG_OPTIONS_H
#define LG_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

#include "lua.h"

/* Where an option is taken (a row's WHERE; the command takes every row
 * that has a flag). */
#define LG_IN_SERVE 1u   /* glisten.serve{} */
#define LG_IN_LISTEN 2u  /* glisten.listen(port, {}) */
#define LG_IN_CONNECT 4u /* glisten.connect(host, port, {}) */
#define LG_IN_SCRIPT 8u  /* a field of the table a script returns */
#define LG_IN_TLS 16u    /* a field of the tls table (serve's, a script's,
                            connect's, starttls's): "tls.KEY" */
#define LG_IN_SOCKET (LG_IN_SERVE | LG_IN_LISTEN | LG_IN_CONNECT | LG_IN_SCRIPT)
#define LG_IN_SERVER (LG_IN_SERVE | LG_IN_SCRIPT)

#define LG_MAX_WORKERS 64

/* The kinds, each with its C type and how its default is written. */
enum { LG_KIND_STRING, LG_KIND_INT, LG_KIND_BYTES, LG_KIND_SECONDS,
       LG_KIND_WORKERS, LG_KIND_BOOL, LG_KIND_MODE, LG_KIND_TABLE,
       LG_KIND_ANY, LG_KIND_PACKET };
#define LG_CTYPE_STRING const char *
#define LG_CTYPE_INT lua_Integer
#define LG_CTYPE_BYTES lua_Integer
#define LG_CTYPE_SECONDS double
#define LG_CTYPE_WORKERS lua_Integer
#define LG_CTYPE_BOOL int
#define LG_CTYPE_MODE lua_Integer
#define LG_CTYPE_TABLE int
#define LG_CTYPE_ANY int
#define LG_CTYPE_PACKET int

/* A PACKET option's values: how input is cut into messages (a socket's
 * receive() without a pattern, and a served connection's handler). */
#define LG_PACKET_RAW 0   /* "raw": what has arrived, as it arrived */
#define LG_PACKET_LINE -1 /* "line": a line without its end of line */
/* 1, 2, 4: a payload after a big-endian length of that many bytes */

/* X(KEY, KIND, DEFAULT, LOW, HIGH, WHERE, FLAG, METAVAR, HELP)
 * LOW and HIGH bound numbers (a SECONDS option with LOW < 0 takes any
 * number, a negative one meaning none); a WORKERS option also takes
 * "auto" (one per CPU). A BOOL option is true or false, its flag takes no
 * value (--flag=false turns it off). A MODE option is file permissions
 * written in octal, as a string ("660"), read as a number; < 0: none. A
 * STRING option's value points into the table it was read from. A TABLE
 * option (tls) is a table whose fields are the rows taken LG_IN_TLS (read
 * into the same lg_opts; a flag of such a row sets the field of the table),
 * or, where connect takes it, true (every field at its default); its value
 * is 1 when given. An ANY option is read by the module that uses it, from
 * the table (its value here: the Lua type, LUA_TNIL when not given); its
 * flag gives a string. A PACKET option is "raw", "line", 1, 2 or 4 (the
 * flag's "1", "2", "4" too), read as LG_PACKET_*, or the length's size. FLAG is
 * NULL for an option the command does not take; "-x, --long" gives it a
 * short alias too. */
#define LG_OPTIONS(X)                                                        \
  X(host, STRING, "127.0.0.1", 0, 0, LG_IN_SERVER | LG_IN_LISTEN, "--host",  \
    "HOST", "address to bind; * or :: for every address, IPv6 and IPv4 (0.0.0.0: IPv4 only), ::1 for IPv6") \
  X(port, INT, 0, 0, 65535, LG_IN_SERVER, "--port", "PORT",                  \
    "port; 0 picks a free one (the command also takes it as PORT)")          \
  X(path, STRING, NULL, 0, 0, LG_IN_SERVER | LG_IN_LISTEN, "--unix", "PATH",  \
    "a Unix socket to listen on instead of host and port (@NAME: abstract)") \
  X(mode, MODE, -1, 0, 0777, LG_IN_SERVER | LG_IN_LISTEN, "--mode", "MODE",   \
    "permissions of the Unix socket's file, in octal, as \"660\" (none: the umask's)") \
  X(reuseport, BOOL, 0, 0, 1, LG_IN_SERVER | LG_IN_LISTEN, "--reuseport", "", \
    "share the port with other processes that set it too (SO_REUSEPORT)")     \
  X(backlog, INT, 1024, 1, 65535, LG_IN_SERVER | LG_IN_LISTEN, "--backlog",  \
    "N", "the kernel's queue of connections not yet accepted")               \
  X(max_connections, INT, 0, 0, 100000000, LG_IN_SERVER,                     \
    "--max-connections", "N", "open connections at once (0: no cap)")        \
  X(max_connections_per_address, INT, 0, 0, 100000000, LG_IN_SERVER,         \
    "--max-connections-per-address", "N",                                    \
    "open connections from one client address, or one user on a Unix socket (0: no cap)") \
  X(idle_timeout, SECONDS, 0, 0, 0, LG_IN_SERVER, "--idle-timeout",          \
    "SECONDS", "close a connection idle this long: no byte read or written")   \
  X(max_output, BYTES, 4194304, 1, 1099511627776, LG_IN_SOCKET,              \
    "--max-output", "BYTES", "unsent output a connection may hold")          \
  X(max_line, BYTES, 65536, 1, 1073741824, LG_IN_SOCKET, "--max-line",       \
    "BYTES", "the longest line receive(\"*l\") accepts")                     \
  X(max_receive, BYTES, 16777216, 1, 1099511627776, LG_IN_SOCKET,            \
    "--max-receive", "BYTES", "the most receive(\"*a\") buffers")            \
  X(packet, PACKET, LG_PACKET_RAW, 0, 0, LG_IN_SOCKET, "--packet",            \
    "raw|line|1|2|4", "how input is cut into messages for handler and receive(): as it arrives, by line (max_line), or after a big-endian length of 1, 2 or 4 bytes (max_receive)") \
  X(max_mailbox, INT, 1024, 1, 16777216, LG_IN_SERVER, "--max-mailbox", "N", \
    "posts queued per connection")                                           \
  X(max_memory, BYTES, 0, 0, 1099511627776, LG_IN_SERVER, "--max-memory",    \
    "BYTES", "Lua memory each worker's state may hold (0: no cap)")          \
  X(shutdown_timeout, SECONDS, 5, 0, 0, LG_IN_SERVER, "--shutdown-timeout",  \
    "SECONDS", "grace for open connections on SIGINT/SIGTERM")               \
  X(proxy_protocol, BOOL, 0, 0, 1, LG_IN_SERVER, "--proxy-protocol", "",      \
    "each connection starts with a PROXY header, v1 or v2 (HAProxy's): its addresses are the peer's") \
  X(handshake_timeout, SECONDS, 10, 0, 0, LG_IN_SERVER | LG_IN_TLS,           \
    "--handshake-timeout", "SECONDS",                                         \
    "the longest the PROXY header and the TLS handshake may take (0: no limit)") \
  X(tls, TABLE, 0, 0, 0, LG_IN_SERVER | LG_IN_CONNECT, NULL, "TABLE",          \
    "serve, or connect, over TLS: a table of the tls.* fields below (connect also takes true)") \
  X(cert, STRING, NULL, 0, 0, LG_IN_TLS, "--tls-cert", "FILE",                \
    "the certificate, its chain after it, PEM: a path or the text itself")    \
  X(key, STRING, NULL, 0, 0, LG_IN_TLS, "--tls-key", "FILE",                  \
    "the certificate's private key, PEM: a path or the text itself")          \
  X(password, STRING, NULL, 0, 0, LG_IN_TLS, NULL, "TEXT",                    \
    "the key's password, when it is encrypted")                               \
  X(ca, STRING, NULL, 0, 0, LG_IN_TLS, "--tls-ca", "FILE",                    \
    "certificates that verify the peer: a file, a directory or PEM text (connect: the system's store when not given)") \
  X(verify, ANY, 0, 0, 0, LG_IN_TLS, "--tls-verify", "none|optional|required", \
    "serving: client certificates not asked for (\"none\"), checked when sent (\"optional\"), or required; connect: true (verify the server) or false") \
  X(alpn, ANY, 0, 0, 0, LG_IN_TLS, "--alpn", "LIST",                          \
    "ALPN protocols in order of preference, a list or \"h2,http/1.1\"; serving: or a function(offered) -> chosen") \
  X(sni, ANY, 0, 0, 0, LG_IN_TLS, NULL, "TABLE",                              \
    "serving: certificates by server name, {[\"a.example\"] = {cert =, key =}} (\"*.example\" too), or a function(name) returning one, or nil") \
  X(server_name, STRING, NULL, 0, 0, LG_IN_TLS, NULL, "NAME",                 \
    "connect: the name sent (SNI) and verified; the host when it is a name")  \
  X(min_version, STRING, "1.2", 0, 0, LG_IN_TLS, "--tls-min-version", "1.2|1.3", \
    "the oldest TLS version accepted")                                        \
  X(ciphers, STRING, NULL, 0, 0, LG_IN_TLS, "--tls-ciphers", "LIST",          \
    "OpenSSL's cipher list for TLS 1.2 (none: OpenSSL's default)")            \
  X(ciphersuites, STRING, NULL, 0, 0, LG_IN_TLS, "--tls-ciphersuites", "LIST", \
    "the TLS 1.3 suites (none: OpenSSL's default)")                           \
  X(session_tickets, BOOL, 1, 0, 1, LG_IN_TLS, NULL, "",                      \
    "serving: resume sessions with tickets")                                  \
  X(starttls, BOOL, 0, 0, 1, LG_IN_TLS, "--tls-starttls", "",                 \
    "serving: connections start plain, and sock:starttls() upgrades them with these settings (SMTP, IMAP)") \
  X(callback_slice, SECONDS, 0.01, 0, 0, LG_IN_SERVER, "--callback-slice",    \
    "SECONDS", "run time after which a callback lets others run (0: never)")  \
  X(max_callback_time, SECONDS, 0, 0, 0, LG_IN_SERVER, "--max-callback-time", \
    "SECONDS", "run time after which a callback fails (0: no limit)")          \
  X(workers, WORKERS, 1, 1, LG_MAX_WORKERS, LG_IN_SERVE, "-w, --workers",    \
    "N|auto", "worker threads, each with its own loop and Lua state")        \
  X(script, STRING, NULL, 0, 0, LG_IN_SERVE, NULL, "PATH",                   \
    "the script each worker of a pool loads")                                \
  X(timeout, SECONDS, -1, -1, 0, LG_IN_CONNECT, NULL, "SECONDS",             \
    "how long connect may wait, name lookup included (< 0: no limit)")

/* The values of every option; o.KEY is the value of option KEY. */
typedef struct lg_opts {
#define LG_OPT_FIELD(key, kind, ...) LG_CTYPE_##kind key;
  LG_OPTIONS(LG_OPT_FIELD)
#undef LG_OPT_FIELD
} lg_opts;

/* A row of the schema, for code that walks every option. */
typedef struct lg_option {
  const char *key;
  int kind;           /* LG_KIND_* */
  const char *sdef;   /* STRING: the default (NULL: none) */
  double def, lo, hi; /* the other kinds */
  unsigned where;     /* LG_IN_* */
  const char *flag, *meta, *help;
  size_t offset;      /* of o.KEY in lg_opts */
} lg_option;

extern const lg_option lg_options[]; /* ends with a row whose key is NULL */
extern const lg_opts lg_defaults;

/* The callbacks a serve table or a script names, in LG_CB_* order; NULL
 * ends the list. The first, handler, is the one a server needs. */
extern const char *const lg_callback_names[];

/* [-0, +0, e] Reads the option table at idx into o, defaults for the rest.
 * where (LG_IN_*) names the caller: a key no row offers there raises
 * "unknown option 'k'" (serve also takes the callbacks' keys); 0 takes any
 * row and ignores other keys. A value of the wrong kind or out of range
 * raises "option 'k' must be ...". */
void lg_opts_read(lua_State *L, int idx, lg_opts *o, unsigned where);

/* [-0, +0, -] The packet mode (LG_PACKET_*, or 1, 2, 4) the value at idx
 * names, or -2 when it names none. */
int lg_opts_packet(lua_State *L, int idx);

/* [-0, +0, m] Converts a command-line value v of the option at row into
 * a Lua value and stores it in the table on top as field row->key. When v
 * does not fit the kind, stores nothing and returns what it needed ("a
 * whole number", ...); else NULL. lg_opts_read checks the range. */
const char *lg_opts_parse_flag(lua_State *L, const lg_option *row,
                               const char *v);

/* The row of the option with this flag ("--max-line", or a short alias
 * such as "-w"); n is the flag's length. NULL when none. */
const lg_option *lg_opts_find_flag(const char *flag, size_t n);

/* Writes the options part of --help (HELP), the Markdown table of the docs
 * (MARKDOWN) or the OPTIONS entries of the man page, in man(7) roff (MAN),
 * to f. */
enum { LG_OPTS_HELP, LG_OPTS_MARKDOWN, LG_OPTS_MAN };
void lg_opts_describe(FILE *f, int format);

#endif
