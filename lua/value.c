/*
 * value.c: Lua values as bytes, so they can cross from one Lua state to
 * another (glisten.post and glisten.publish, which copy in every case, so a
 * script behaves the same with one worker and with many; and a pool's
 * options, on their way to each worker).
 *
 * Values: nil, booleans, integers, floats, strings, and tables of those,
 * nested at most LG_VALUE_MAX_DEPTH tables deep, without cycles (a table met
 * again on its own path raises). A table met again elsewhere is encoded once
 * and referred to after that, and so is a string of LONG_STRING bytes or
 * more: the value arrives with the same shape, two references to one table
 * as two references to one table, and its encoding grows with the tables and
 * strings it holds, never with the paths to them. Anything else raises a
 * clear error, and so does an encoding past LG_VALUE_MAX_SIZE.
 *
 * Small values are encoded in a buffer on the C stack. A larger encoding
 * grows in a block of the state's own allocator (lua_getallocf), so
 * max_memory counts it, freed as soon as the string is made, or by its
 * box's __gc after an error: no garbage is left for the collector either
 * way, which matters in a state close to its max_memory.
 *
 * Format: one tag byte per value, then its payload. Counts, lengths,
 * offsets and integers (zigzag) are unsigned LEB128 varints; floats are the
 * 8 bytes of a lua_Number in the machine's order (the bytes never leave the
 * process).
 *
 *   'n' 'f' 't'           nil, false, true
 *   'i' zigzag            an integer
 *   'd' 8 bytes           a float
 *   's' len bytes         a string ('S': one referred to later)
 *   'T' narr nhash        a table ('U': one referred to later): narr values
 *       values... pairs...    for keys 1..narr (nil for a hole), then key,
 *       'e'                   value pairs up to the end tag 'e'; nhash is a
 *                             hint for the decoder, not a count
 *   'r' offset            the 'S' or 'U' whose tag is at that offset
 *
 * The encoder marks an object for reference ('s' to 'S', 'T' to 'U', in
 * place) when it first refers to it, so the decoder keeps only those, and
 * each once it is complete: a reference to a table still being decoded,
 * which would make a cycle, finds nothing. Decoding trusts nothing: whatever
 * the bytes, it pushes a value or raises "corrupt message" (or "not enough
 * memory"), and allocates at most a constant times the message's length.
 */
#include <string.h>

#include "lauxlib.h"
#include "value.h"

/* A string this long or longer is encoded once per value and referred to
 * after: shorter ones cost less to copy than to look up. */
#define LONG_STRING 256

/* The buffer on the C stack that most values fit in. */
#define LOCAL_BUF 256

enum { T_NIL = 'n', T_FALSE = 'f', T_TRUE = 't', T_INT = 'i', T_NUM = 'd',
       T_STR = 's', T_STR_KEPT = 'S', T_TABLE = 'T', T_TABLE_KEPT = 'U',
       T_END = 'e', T_REF = 'r' };

/* ---- encoding ------------------------------------------------------------ */

/* The block a large encoding grows in, and the allocator it came from
 * (which frees it even after lg_setlimit has swapped the state's). */
typedef struct encbox {
  char *p;
  size_t cap;
  lua_Alloc f;
  void *ud;
} encbox;

static int encbox_gc(lua_State *L) {
  encbox *b = lua_touserdata(L, 1);
  if (b->p) b->f(b->ud, b->p, b->cap, 0);
  b->p = NULL;
  return 0;
}

typedef struct enc {
  lua_State *L;
  char *p;       /* the encoding so far: local, or box->p */
  size_t len, cap;
  encbox *box;   /* NULL while the encoding fits local */
  int slot;      /* stack slot of the box, later of the result */
  int seen;      /* stack slot of SEEN (nil until the first table or long
                  * string): a table -> true while on the path, then the
                  * offset of its tag; a long string -> the offset of its
                  * tag */
  char local[LOCAL_BUF];
} enc;

/* [-0, +0, e] Makes room for n more bytes: the block grows (the first time,
 * in a new box at e->slot). Past LG_VALUE_MAX_SIZE it raises, and without
 * memory, after a full collection, "not enough memory". */
static void grow(enc *e, size_t n) {
  lua_State *L = e->L;
  encbox *b = e->box;
  size_t cap;
  char *q;
  if (n > LG_VALUE_MAX_SIZE - e->len)
    luaL_error(L, "cannot send a value larger than %d MiB encoded",
               (int)(LG_VALUE_MAX_SIZE >> 20));
  cap = e->cap * 2;
  if (cap < e->len + n) /* a large piece, then little: the end tags */
    cap = e->len + n + 64;
  if (cap > LG_VALUE_MAX_SIZE) cap = LG_VALUE_MAX_SIZE;
  if (!b) {
    b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    b->f = lua_getallocf(L, &b->ud);
    if (luaL_newmetatable(L, "glisten.encbox")) {
      lua_pushcfunction(L, encbox_gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_replace(L, e->slot);
    e->box = b;
  }
  q = b->f(b->ud, b->p, b->p ? b->cap : 0, cap);
  if (!q) { /* collect in full, and try once more */
    lua_gc(L, LUA_GCCOLLECT, 0);
    q = b->f(b->ud, b->p, b->p ? b->cap : 0, cap);
    if (!q) luaL_error(L, "not enough memory");
  }
  if (!b->p) memcpy(q, e->local, e->len);
  b->p = e->p = q;
  b->cap = e->cap = cap;
}

static void put(enc *e, const void *p, size_t n) {
  if (n > e->cap - e->len) grow(e, n);
  memcpy(e->p + e->len, p, n);
  e->len += n;
}

static void put_tag(enc *e, char tag) { put(e, &tag, 1); }

static void put_varint(enc *e, lua_Unsigned u) {
  unsigned char b[10];
  size_t n = 0;
  while (u >= 0x80) {
    b[n++] = (unsigned char)(u | 0x80);
    u >>= 7;
  }
  b[n++] = (unsigned char)u;
  put(e, b, n);
}

/* Refers to the object whose tag is at off, and marks it to be kept. */
static void put_ref(enc *e, lua_Integer off, char kept) {
  e->p[off] = kept;
  put_tag(e, T_REF);
  put_varint(e, (lua_Unsigned)off);
}

/* [-0, +0, m] SEEN[v] for the value at idx: returns the offset of its tag,
 * -1 if absent, -2 if it is a table on the current path. */
static lua_Integer seen_get(enc *e, int idx) {
  lua_State *L = e->L;
  lua_Integer off;
  if (lua_isnil(L, e->seen)) {
    lua_newtable(L);
    lua_replace(L, e->seen);
  }
  lua_pushvalue(L, idx);
  switch (lua_rawget(L, e->seen)) {
    case LUA_TNIL: off = -1; break;
    case LUA_TNUMBER: off = lua_tointeger(L, -1); break;
    default: off = -2;
  }
  lua_pop(L, 1);
  return off;
}

/* [-1, +0, m] SEEN[v] = the value on top; v at idx. */
static void seen_set(enc *e, int idx) {
  lua_pushvalue(e->L, idx);
  lua_insert(e->L, -2);
  lua_rawset(e->L, e->seen);
}

static void encode(enc *e, int idx, int depth);

/* [-0, +0, e] The table at idx (absolute), inside depth tables. */
static void encode_table(enc *e, int idx, int depth) {
  lua_State *L = e->L;
  lua_Integer off = seen_get(e, idx);
  lua_Unsigned border, narr, inarr = 0, n = 0;
  if (off >= 0) {
    put_ref(e, off, T_TABLE_KEPT);
    return;
  }
  if (off == -2)
    luaL_error(L, "cannot send a table that contains itself (a cycle)");
  if (depth >= LG_VALUE_MAX_DEPTH)
    luaL_error(L, "cannot send a value nested more than %d tables deep",
               LG_VALUE_MAX_DEPTH);
  luaL_checkstack(L, 8, NULL);
  lua_pushboolean(L, 1);
  seen_set(e, idx);
  /* keys 1..border go without their keys when at least half of them are
   * there: a sparse table's border can be far past its entries */
  border = (lua_Unsigned)lua_rawlen(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    n++;
    if (lua_isinteger(L, -2)) {
      lua_Unsigned key = (lua_Unsigned)lua_tointeger(L, -2);
      if (key >= 1 && key <= border) inarr++;
    }
    lua_pop(L, 1);
  }
  narr = border && inarr >= border - inarr ? border : 0;
  off = (lua_Integer)e->len;
  put_tag(e, T_TABLE);
  put_varint(e, narr);
  put_varint(e, n - (narr ? inarr : 0));
  for (lua_Unsigned i = 1; i <= narr; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i);
    encode(e, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
  /* pairs up to an end tag, not a count: a weak table may lose entries to
   * a collection that a growing buffer sets off between the two passes */
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    if (narr && lua_isinteger(L, -2)) {
      lua_Unsigned key = (lua_Unsigned)lua_tointeger(L, -2);
      if (key >= 1 && key <= narr) {
        lua_pop(L, 1);
        continue;
      }
    }
    encode(e, top - 1, depth + 1);
    encode(e, top, depth + 1);
    lua_pop(L, 1);
  }
  put_tag(e, T_END);
  lua_pushinteger(L, off);
  seen_set(e, idx);
}

/* [-0, +0, e] The value at idx (absolute), inside depth tables. */
static void encode(enc *e, int idx, int depth) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      put_tag(e, T_NIL);
      break;
    case LUA_TBOOLEAN:
      put_tag(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Unsigned u = (lua_Unsigned)lua_tointeger(L, idx);
        put_tag(e, T_INT);
        put_varint(e, (u << 1) ^ (u >> 63 ? ~(lua_Unsigned)0 : 0));
      } else {
        lua_Number x = lua_tonumber(L, idx);
        put_tag(e, T_NUM);
        put(e, &x, sizeof x);
      }
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      lua_Integer off = (lua_Integer)e->len;
      if (len >= LONG_STRING) {
        lua_Integer at = seen_get(e, idx);
        if (at >= 0) {
          put_ref(e, at, T_STR_KEPT);
          break;
        }
      }
      put_tag(e, T_STR);
      put_varint(e, len);
      put(e, s, len);
      if (len >= LONG_STRING) {
        lua_pushinteger(L, off);
        seen_set(e, idx);
      }
      break;
    }
    case LUA_TTABLE:
      encode_table(e, idx, depth);
      break;
    default:
      luaL_error(L, "cannot send a %s value (only nil, booleans, numbers, "
                    "strings and tables of those cross workers)",
                 luaL_typename(L, idx));
  }
}

void lg_value_encode(lua_State *L, int idx) {
  enc e;
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 4, NULL);
  lua_pushnil(L); /* the box, later the result */
  e.slot = lua_gettop(L);
  lua_pushnil(L);
  e.seen = e.slot + 1;
  e.L = L;
  e.p = e.local;
  e.len = 0;
  e.cap = sizeof e.local;
  e.box = NULL;
  encode(&e, idx, 0);
  lua_pushlstring(L, e.p, e.len);
  if (e.box) { /* freed now, not when collected */
    e.box->f(e.box->ud, e.box->p, e.box->cap, 0);
    e.box->p = NULL;
  }
  lua_replace(L, e.slot);
  lua_settop(L, e.slot);
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct dec {
  lua_State *L;
  const unsigned char *start, *p, *end;
  int refs;      /* stack slot of KEPT (nil until needed): the offset of an
                  * 'S' or 'U' -> its value, once complete */
  size_t budget; /* table slots that may still be preallocated */
} dec;

static int corrupt(lua_State *L) { return luaL_error(L, "corrupt message"); }

static size_t left(const dec *d) { return (size_t)(d->end - d->p); }

/* At most 10 bytes, and no bit past the 64th. */
static lua_Unsigned get_varint(dec *d) {
  lua_Unsigned u = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    unsigned b;
    if (d->p == d->end) corrupt(d->L);
    b = *d->p++;
    if (shift == 63 && b > 1) break;
    u |= (lua_Unsigned)(b & 0x7f) << shift;
    if (!(b & 0x80)) return u;
  }
  corrupt(d->L);
  return 0;
}

/* A count of things that take a byte or more each: no more than are left. */
static size_t get_count(dec *d) {
  lua_Unsigned u = get_varint(d);
  if (u > left(d)) corrupt(d->L);
  return (size_t)u;
}

/* Takes up to n table slots to preallocate from the budget (the message's
 * length), so hints add up to no more than the bytes that carry them. */
static int prealloc(dec *d, size_t n) {
  if (n > d->budget) n = d->budget;
  d->budget -= n;
  return (int)n; /* <= the message's length <= LG_VALUE_MAX_SIZE */
}

/* [-0, +0, m] KEPT[off] = the value on top, left there. */
static void keep(dec *d, size_t off) {
  lua_State *L = d->L;
  if (lua_isnil(L, d->refs)) {
    lua_newtable(L);
    lua_replace(L, d->refs);
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->refs, (lua_Integer)off);
}

static void decode(dec *d, int depth);

/* [-0, +1, e] A table, after its tag; inside depth tables. */
static void decode_table(dec *d, int depth) {
  lua_State *L = d->L;
  size_t narr, nhash;
  lua_Unsigned hint;
  if (depth >= LG_VALUE_MAX_DEPTH) corrupt(L);
  narr = get_count(d);
  /* only a hint: a weak table may have lost entries since it was counted */
  hint = get_varint(d);
  nhash = hint < left(d) ? (size_t)hint : left(d);
  lua_createtable(L, prealloc(d, narr), prealloc(d, nhash));
  for (size_t i = 1; i <= narr; i++) {
    decode(d, depth + 1);
    if (lua_isnil(L, -1))
      lua_pop(L, 1);
    else
      lua_rawseti(L, -2, (lua_Integer)i);
  }
  for (;;) {
    if (d->p == d->end) corrupt(L);
    if (*d->p == T_END) {
      d->p++;
      break;
    }
    decode(d, depth + 1); /* key */
    if (lua_isnil(L, -1) ||
        (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) &&
         lua_tonumber(L, -1) != lua_tonumber(L, -1))) /* NaN */
      corrupt(L);
    decode(d, depth + 1); /* value */
    if (lua_isnil(L, -1)) corrupt(L);
    lua_rawset(L, -3);
  }
}

/* [-0, +1, e] One value, inside depth tables. */
static void decode(dec *d, int depth) {
  lua_State *L = d->L;
  size_t off = (size_t)(d->p - d->start);
  int tag;
  if (d->p == d->end) corrupt(L);
  luaL_checkstack(L, 4, NULL);
  switch ((tag = *d->p++)) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      lua_Unsigned z = get_varint(d);
      lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (0 - (z & 1))));
      break;
    }
    case T_NUM: {
      lua_Number x;
      if (left(d) < sizeof x) corrupt(L);
      memcpy(&x, d->p, sizeof x);
      d->p += sizeof x;
      lua_pushnumber(L, x);
      break;
    }
    case T_STR:
    case T_STR_KEPT: {
      size_t len = get_count(d);
      lua_pushlstring(L, (const char *)d->p, len);
      d->p += len;
      if (tag == T_STR_KEPT) keep(d, off);
      break;
    }
    case T_TABLE:
    case T_TABLE_KEPT:
      decode_table(d, depth);
      if (tag == T_TABLE_KEPT) keep(d, off);
      break;
    case T_REF: {
      lua_Unsigned at = get_varint(d);
      if (at >= off || lua_isnil(L, d->refs) ||
          lua_rawgeti(L, d->refs, (lua_Integer)at) == LUA_TNIL)
        corrupt(L);
      break;
    }
    default:
      corrupt(L);
  }
}

void lg_value_decode(lua_State *L, const char *p, size_t len) {
  dec d;
  if (len > LG_VALUE_MAX_SIZE) corrupt(L);
  luaL_checkstack(L, 4, NULL);
  lua_pushnil(L); /* KEPT, later the value */
  d.refs = lua_gettop(L);
  d.L = L;
  d.start = d.p = (const unsigned char *)p;
  d.end = d.start + len;
  d.budget = len;
  decode(&d, 0);
  if (d.p != d.end) corrupt(L);
  lua_replace(L, d.refs);
}
