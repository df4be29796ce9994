/*
 * log.h: the core never prints; it reports through one hook.
 */
#ifndef GL_LOG_H
#define GL_LOG_H

enum { GL_LOG_ERROR = 0, GL_LOG_WARN = 1, GL_LOG_INFO = 2 };

/* Receives every message the process logs. May be called from any worker
 * thread: the function must be safe for that. */
typedef void gl_log_fn(void *ud, int level, const char *msg);

/* Installs fn (NULL restores the default, which writes "glisten: MSG\n" to
 * stderr in one write). */
void gl_log_set(gl_log_fn *fn, void *ud);

/* Formats and reports one message; never fails (long messages are cut). */
void gl_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
