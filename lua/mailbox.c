/*
 * mailbox.c: the mailbox of a served connection, where glisten.post and
 * publish leave values for its with_message. A ring of max_mailbox slots,
 * made on the first delivery: the socket handle's user value 1, with its
 * count and oldest index in the socket (nmail, mhead).
 */
#include "served.h"
#include "value.h"

/* [-1, +0, m] Moves the value on top into s's mailbox (which must have
 * room) and wakes its fiber. */
static void mail_push(lua_State *L, lg_socket *s) {
  lg_push_socket(L, s);
  if (lua_getiuservalue(L, -1, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, s->max_mail < 64 ? s->max_mail : 64, 0);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, -3, 1);
    s->mhead = 1;
  }
  lua_rotate(L, -3, -1); /* sock, mailbox, value */
  lua_rawseti(L, -2, (s->mhead - 1 + s->nmail) % s->max_mail + 1);
  lua_pop(L, 2);
  s->nmail++;
  lg_socket_notify(s);
}

int lg_mail_deliver(lua_State *L, lua_Integer id, const char *p, size_t len) {
  lg_socket *s = lg_find_socket(L, id);
  if (!s || !s->conn || !s->server || s->stop ||
      (s->owner && s->in_close))
    return LG_FAIL_NO_CONNECTION;
  if (s->server->cb[LG_CB_MESSAGE] == LUA_NOREF) return LG_FAIL_NO_WITH_MESSAGE;
  if (s->nmail >= s->max_mail) return LG_FAIL_MAILBOX_FULL;
  lg_value_decode(L, p, len);
  mail_push(L, s);
  return -1;
}

void lg_mail_pop(lua_State *L, lg_socket *s) {
  lg_push_socket(L, s);
  lua_getiuservalue(L, -1, 1);
  lua_rawgeti(L, -1, s->mhead);
  lua_pushnil(L);
  lua_rawseti(L, -3, s->mhead);
  lua_replace(L, -3);
  lua_pop(L, 1);
  s->mhead = s->mhead % s->max_mail + 1;
  s->nmail--;
}
