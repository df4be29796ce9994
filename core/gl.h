/*
 * gl.h: definitions shared by every file of the core.
 *
 * The core is plain C over libev: no Lua here. Functions that can fail return
 * GL_OK or a negative errno and, where a person must read the reason, fill a
 * caller-supplied error buffer (as Redis' anet.c does).
 */
#ifndef GL_H
#define GL_H

#include <stddef.h>

#define GL_OK 0
#define GL_ERR -1
#define GL_AGAIN 1 /* not done yet: another way is needed (see its caller) */

#define GL_ERRLEN 256 /* size of the error buffers callers pass in */

#endif
