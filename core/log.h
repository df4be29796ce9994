/*
 * log.h: the core never prints; it reports through one hook.
 *
 * Every message is escaped before any hook or stderr sees it, so text a
 * peer or a script chose (an error message, a traceback) can neither
 * start a line of its own nor send a terminal its control sequences: see
 * gl_log_escape. A message is one line.
 */
#ifndef GL_LOG_H
#define GL_LOG_H

#include <stddef.h>

enum { GL_LOG_ERROR = 0, GL_LOG_WARN = 1, GL_LOG_INFO = 2 };

/* The longest escaped message; with "glisten: " and the newline a line is
 * at most PIPE_BUF (4096) bytes, so one write is never split on a pipe. */
#define GL_LOG_MAX 4086

/* Receives every message the process logs, escaped (no control
 * characters). May be called from any worker thread: the function must be
 * safe for that. */
typedef void gl_log_fn(void *ud, int level, const char *msg);

/* Installs fn (NULL restores the default, which writes "glisten: MSG\n" to
 * stderr in one write). */
void gl_log_set(gl_log_fn *fn, void *ud);

/* Formats and reports one message, escaped; never fails (long messages are
 * cut). */
void gl_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reports "HEAD: TEXT", where text is len bytes of anything, NULs
 * included (a Lua string), escaped as gl_log does. */
void gl_log_text(int level, const char *head, const char *text, size_t len);

/* Writes src[0..len) into dst (size bytes, NUL-terminated when size > 0) as
 * text with no control character: a backslash becomes "\\"; newline,
 * carriage return and tab "\n", "\r", "\t"; every other byte below 0x20,
 * DEL (0x7f), and the two bytes of a C1 control in UTF-8 (0xc2 0x80 to
 * 0xc2 0x9f) "\xHH" each. Other bytes pass as they are. Stops before an
 * escape that would not fit whole. Returns how many bytes of src it took
 * (len when all fit; one or more when size >= GL_LOG_ESCAPE_MIN). */
size_t gl_log_escape(char *dst, size_t size, const char *src, size_t len);

/* The longest escape of one source character (a C1 pair), and its NUL. */
#define GL_LOG_ESCAPE_MIN 9

#endif
