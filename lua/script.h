/*
 * script.h: loading a user script, and its serve options (script.c).
 */
#ifndef LG_SCRIPT_H
#define LG_SCRIPT_H

#include "lua.h"

/* [-0, +1, e] Loads and runs the script at path, then pushes the table that
 * holds its callbacks: the table it returned, or the globals. Returns 1 for
 * a returned table. A load or run error raises with the file and line (and
 * a traceback for run errors); running out of memory, with the path. */
int lg_script_load(lua_State *L, const char *path);

/* [-0, +1, e] Pushes the options to serve the callbacks of table t: its
 * callbacks, its option fields when it is a returned table (from_table),
 * then every field of the table at opts (0: none), which win. */
void lg_script_options(lua_State *L, int t, int from_table, int opts);

#endif
