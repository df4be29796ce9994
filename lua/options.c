/*
 * options.c: the option schema's rows, and everything derived from them:
 * defaults, reading option tables, command-line values, --help, the docs'
 * table and the man page's OPTIONS. See options.h.
 */
#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lauxlib.h"

/* A row's default goes to sdef (strings) or def (numbers). */
#define SDEF_STRING(d) d
#define SDEF_INT(d) NULL
#define SDEF_BYTES(d) NULL
#define SDEF_SECONDS(d) NULL
#define SDEF_WORKERS(d) NULL
#define SDEF_BOOL(d) NULL
#define SDEF_MODE(d) NULL
#define SDEF_TABLE(d) NULL
#define SDEF_ANY(d) NULL
#define SDEF_PACKET(d) NULL
#define NDEF_STRING(d) 0
#define NDEF_INT(d) d
#define NDEF_BYTES(d) d
#define NDEF_SECONDS(d) d
#define NDEF_WORKERS(d) d
#define NDEF_BOOL(d) d
#define NDEF_MODE(d) d
#define NDEF_TABLE(d) d
#define NDEF_ANY(d) d
#define NDEF_PACKET(d) d

#define ROW(key, kind, def, lo, hi, where, flag, meta, help)                \
  {#key, LG_KIND_##kind, SDEF_##kind(def), NDEF_##kind(def), lo, hi, where, \
   flag, meta, help, offsetof(lg_opts, key)},
const lg_option lg_options[] = {LG_OPTIONS(ROW){NULL, 0, NULL, 0, 0, 0, 0,
                                                 NULL, NULL, NULL, 0}};
#undef ROW

#define DEFAULT(key, kind, def, ...) .key = def,
const lg_opts lg_defaults = {LG_OPTIONS(DEFAULT)};
#undef DEFAULT

const char *const lg_callback_names[] = {"handler", "with_init", "with_close",
                                         "with_message", NULL};

static lua_Integer cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > LG_MAX_WORKERS ? LG_MAX_WORKERS : n;
}

static void read_fields(lua_State *L, int idx, lg_opts *o, unsigned where,
                        const char *prefix);

/* Whether row r is only a field of the tls table. */
static int tls_only(const lg_option *r) { return r->where == LG_IN_TLS; }

int lg_opts_packet(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *v = lua_tostring(L, idx);
    if (strcmp(v, "raw") == 0) return LG_PACKET_RAW;
    if (strcmp(v, "line") == 0) return LG_PACKET_LINE;
  }
  if (lua_type(L, idx) == LUA_TNUMBER || lua_type(L, idx) == LUA_TSTRING) {
    int ok;
    lua_Integer n = lua_tointegerx(L, idx, &ok);
    if (ok && (n == 1 || n == 2 || n == 4)) return (int)n;
  }
  return -2;
}

/* [-0, +0, e] Checks the value on top against row r and stores it in o. */
static void set_value(lua_State *L, const lg_option *r, lg_opts *o) {
  char *field = (char *)o + r->offset;
  int ok;
  switch (r->kind) {
  case LG_KIND_TABLE:
    if (lua_type(L, -1) == LUA_TTABLE)
      read_fields(L, -1, o, LG_IN_TLS, "tls.");
    else if (lua_type(L, -1) != LUA_TBOOLEAN)
      luaL_error(L, "option '%s' must be a table (or true)", r->key);
    *(int *)field = lua_toboolean(L, -1);
    return;
  case LG_KIND_ANY:
    *(int *)field = lua_type(L, -1);
    return;
  case LG_KIND_PACKET:
    if ((*(int *)field = lg_opts_packet(L, -1)) == -2)
      luaL_error(L, "option '%s' must be \"raw\", \"line\", 1, 2 or 4",
                 r->key);
    return;
  case LG_KIND_STRING:
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "option '%s' must be a string", r->key);
    *(const char **)field = lua_tostring(L, -1);
    return;
  case LG_KIND_SECONDS: {
    double v = lua_tonumberx(L, -1, &ok);
    if (!ok || isnan(v) || (r->lo >= 0 && v < r->lo))
      luaL_error(L, "option '%s' must be a number of seconds%s", r->key,
                 ok && isnan(v) ? ", not NaN" : r->lo >= 0 ? " >= 0" : "");
    *(double *)field = v;
    return;
  }
  case LG_KIND_BOOL:
    if (lua_type(L, -1) != LUA_TBOOLEAN)
      luaL_error(L, "option '%s' must be a boolean", r->key);
    *(int *)field = lua_toboolean(L, -1);
    return;
  case LG_KIND_MODE: {
    /* a string, as an integer would be read in decimal: 660 is not 0660 */
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    char *end;
    long m = strtol(v, &end, 8);
    if (!*v || *end || strspn(v, "01234567") != strlen(v) || m > r->hi)
      luaL_error(L, "option '%s' must be permissions in octal digits, as "
                    "\"660\"", r->key);
    *(lua_Integer *)field = m;
    return;
  }
  case LG_KIND_WORKERS:
    if (lua_type(L, -1) == LUA_TSTRING &&
        strcmp(lua_tostring(L, -1), "auto") == 0) {
      *(lua_Integer *)field = cpus();
      return;
    }
    /* FALLTHROUGH */
  default: {
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < r->lo || v > r->hi)
      luaL_error(L, "option '%s' must be an integer from %I to %I%s", r->key,
                 (LUAI_UACINT)r->lo, (LUAI_UACINT)r->hi,
                 r->kind == LG_KIND_WORKERS ? ", or \"auto\"" : "");
    *(lua_Integer *)field = v;
  }
  }
}

/* Whether the key on top of L is one the caller at `where` takes. */
static int known_key(lua_State *L, unsigned where) {
  if (lua_type(L, -1) != LUA_TSTRING) return 0;
  const char *k = lua_tostring(L, -1);
  for (const lg_option *r = lg_options; r->key; r++)
    if ((r->where & where) && strcmp(r->key, k) == 0) return 1;
  if (where & LG_IN_SERVE && where != LG_IN_TLS)
    for (const char *const *c = lg_callback_names; *c; c++)
      if (strcmp(*c, k) == 0) return 1;
  return 0;
}

/* [-0, +0, e] Reads the fields of the table at idx that rows taken at
 * where name into o (0: every row but the tls table's fields, other keys
 * ignored); prefix goes before a key in errors. */
static void read_fields(lua_State *L, int idx, lg_opts *o, unsigned where,
                        const char *prefix) {
  idx = lua_absindex(L, idx);
  for (const lg_option *r = lg_options; r->key; r++) {
    if (where ? !(r->where & where) : tls_only(r)) continue;
    if (lua_getfield(L, idx, r->key) != LUA_TNIL) set_value(L, r, o);
    lua_pop(L, 1);
  }
  if (!where) return;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!known_key(L, where))
      luaL_error(L, "unknown option '%s%s'", prefix,
                 luaL_tolstring(L, -1, NULL));
  }
}

void lg_opts_read(lua_State *L, int idx, lg_opts *o, unsigned where) {
  *o = lg_defaults;
  read_fields(L, idx, o, where, "");
}

static const char *parse_value(lua_State *L, const lg_option *r,
                               const char *v);

const char *lg_opts_parse_flag(lua_State *L, const lg_option *r,
                               const char *v) {
  if (tls_only(r)) { /* a field of the tls table: made when missing */
    const char *need;
    if (lua_getfield(L, -1, "tls") != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, "tls");
    }
    need = parse_value(L, r, v);
    lua_pop(L, 1);
    return need;
  }
  return parse_value(L, r, v);
}

/* lg_opts_parse_flag into the table on top itself. */
static const char *parse_value(lua_State *L, const lg_option *r,
                               const char *v) {
  char *end;
  errno = 0;
  if (r->kind == LG_KIND_STRING || r->kind == LG_KIND_MODE ||
      r->kind == LG_KIND_ANY || r->kind == LG_KIND_PACKET ||
      (r->kind == LG_KIND_WORKERS && strcmp(v, "auto") == 0)) {
    lua_pushstring(L, v);
  } else if (r->kind == LG_KIND_BOOL) {
    if (strcmp(v, "true") && strcmp(v, "false")) return "true or false";
    lua_pushboolean(L, strcmp(v, "true") == 0);
  } else if (r->kind == LG_KIND_SECONDS) {
    double d = strtod(v, &end);
    if (errno || end == v || *end) return "a number";
    lua_pushnumber(L, d);
  } else {
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end)
      return r->kind == LG_KIND_WORKERS ? "a whole number or auto"
                                        : "a whole number";
    lua_pushinteger(L, (lua_Integer)n);
  }
  lua_setfield(L, -2, r->key);
  return NULL;
}

const lg_option *lg_opts_find_flag(const char *flag, size_t n) {
  for (const lg_option *r = lg_options; r->key; r++)
    for (const char *p = r->flag; p;) {
      const char *comma = strchr(p, ',');
      size_t len = comma ? (size_t)(comma - p) : strlen(p);
      if (len == n && strncmp(p, flag, n) == 0) return r;
      p = comma ? comma + 2 : NULL;
    }
  return NULL;
}

/* The default of row r as the docs write it. */
static const char *default_text(const lg_option *r, char *buf, size_t len) {
  switch (r->kind) {
  case LG_KIND_STRING:
    return r->sdef ? r->sdef : "none";
  case LG_KIND_TABLE:
  case LG_KIND_ANY:
    return "none";
  case LG_KIND_PACKET:
    return "raw";
  case LG_KIND_BOOL:
    return r->def ? "true" : "false";
  case LG_KIND_MODE:
    if (r->def < 0) return "none";
    snprintf(buf, len, "%o", (unsigned)r->def);
    return buf;
  case LG_KIND_SECONDS:
    if (r->def < 0) return "none";
    if (r->def == 0) return "off";
    snprintf(buf, len, "%g s", r->def);
    return buf;
  case LG_KIND_BYTES:
    if (r->def >= 1024 && fmod(r->def, 1024) == 0) {
      int mib = fmod(r->def, 1048576) == 0;
      snprintf(buf, len, "%.0f (%.0f %s)", r->def,
               r->def / (mib ? 1048576 : 1024), mib ? "MiB" : "KiB");
      return buf;
    }
    /* FALLTHROUGH */
  default:
    snprintf(buf, len, "%.0f", r->def);
    return buf;
  }
}

/* Where row r is taken, as the docs write it. */
static const char *where_text(const lg_option *r, char *buf, size_t len) {
  static const struct {
    unsigned bit;
    const char *name;
  } places[] = {{LG_IN_SERVE, "serve"},
                {LG_IN_LISTEN, "listen"},
                {LG_IN_CONNECT, "connect"},
                {LG_IN_SCRIPT, "script"},
                {LG_IN_TLS, "tls"}};
  size_t n = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < sizeof places / sizeof places[0]; i++)
    if (r->where & places[i].bit)
      n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s",
                            n ? ", " : "", places[i].name);
  return buf;
}

/* Writes s as roff text: a backslash and a hyphen escaped (\e, \-), and
 * \& before a leading dot or quote, which would start a request. */
static void roff(FILE *f, const char *s) {
  if (*s == '.' || *s == '\'') fputs("\\&", f);
  for (; *s; s++)
    if (*s == '\\')
      fputs("\\e", f);
    else if (*s == '-')
      fputs("\\-", f);
    else
      fputc(*s, f);
}

/* One .TP entry of the man page's OPTIONS for row r, which has a flag:
 * each spelling of the flag in bold, the metavar in italics, then the help,
 * the default, and the field a script's table may set instead. */
static void man_entry(FILE *f, const lg_option *r, const char *def) {
  fputs(".TP\n", f);
  for (const char *p = r->flag; p;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char one[48];
    snprintf(one, sizeof one, "%.*s", (int)len, p);
    fputs("\\fB", f);
    roff(f, one);
    fputs(comma ? "\\fR, " : *r->meta ? "\\fR \\fI" : "\\fR", f);
    p = comma ? comma + 2 : NULL;
  }
  if (*r->meta) {
    roff(f, r->meta);
    fputs("\\fR", f);
  }
  fputs("\n", f);
  roff(f, r->help);
  fputs(".\nDefault: ", f);
  roff(f, def);
  if (r->where & (LG_IN_SCRIPT | LG_IN_TLS)) {
    fputs(tls_only(r) ? "; script field \\fBtls." : "; script field \\fB", f);
    roff(f, r->key);
    fputs("\\fR", f);
  }
  fputs(".\n", f);
}

void lg_opts_describe(FILE *f, int format) {
  char buf[64], w[64], flag[48];
  if (format == LG_OPTS_MARKDOWN)
    fputs("| option | flag | default | taken by | meaning |\n"
          "| --- | --- | --- | --- | --- |\n",
          f);
  for (const lg_option *r = lg_options; r->key; r++) {
    const char *d = default_text(r, buf, sizeof buf);
    if (format == LG_OPTS_MARKDOWN) {
      fprintf(f, "| `%s%s` | %s%s%s | %s | %s | %s |\n",
              tls_only(r) ? "tls." : "", r->key,
              r->flag ? "`" : "", r->flag ? r->flag : "", r->flag ? "`" : "",
              d, where_text(r, w, sizeof w), r->help);
    } else if (format == LG_OPTS_MAN) {
      if (r->flag) man_entry(f, r, d);
    } else if (r->flag) {
      snprintf(flag, sizeof flag, "%s%s%s", r->flag, *r->meta ? " " : "",
               r->meta);
      fprintf(f, "  %-26s %s; default %s\n", flag, r->help, d);
    }
  }
}
