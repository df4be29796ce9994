/*
 * fail.h: one vocabulary for failure.
 *
 * An I/O call that fails returns nil and one word from LG_FAILURES (the
 * docs' "Errors" table lists each with the calls that return it), or, for
 * a failure with no word of its own (why a bind, a connect or a lookup
 * failed), the system's message. Misuse raises. Running out of memory
 * raises "not enough memory", Lua's own words, whatever ran out: a Lua
 * allocation, a buffer, a queue or a connection of the core. One rule, as
 * any Lua allocation can raise it anyway.
 */
#ifndef LG_FAIL_H
#define LG_FAIL_H

#include "lua.h"

#define LG_FAILURES(X)                                                  \
  X(CLOSED, "closed")         /* the peer closed, or the socket did */ \
  X(TIMEOUT, "timeout")       /* the call's time ran out */            \
  X(TOO_LONG, "too long")     /* past max_line or max_receive */       \
  X(MAILBOX_FULL, "mailbox full")                                      \
  X(NO_WITH_MESSAGE, "connection has no with_message")                 \
  X(INBOX_FULL, "worker inbox full")                                   \
  X(NO_CONNECTION, "no such connection")                               \
  X(EXISTS, "exists")         /* glisten.shared, as OpenResty's */     \
  X(NOT_FOUND, "not found")                                            \
  X(NOT_A_NUMBER, "not a number")                                      \
  X(NO_ROOM, "no memory")     /* the shared dictionary is full */   \
  X(NOT_UNIX, "not a unix socket") /* getpeercred on TCP */            \
  X(PLAINTEXT, "plaintext pending") /* starttls with input unread */

#define LG_FAIL_ENUM(name, word) LG_FAIL_##name,
enum { LG_FAILURES(LG_FAIL_ENUM) LG_FAIL_MESSAGE };
#undef LG_FAIL_ENUM

/* The word of failure f. */
const char *lg_failure(int f);

/* [-0, +2, m] Pushes nil and the word of failure f, or msg when f is
 * LG_FAIL_MESSAGE (a system's message); returns 2, for `return lg_fail`. */
int lg_fail(lua_State *L, int f, const char *msg);

/* [-0, +0, v] Raises "not enough memory". */
int lg_nomem(lua_State *L);

#endif
