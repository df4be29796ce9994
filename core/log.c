#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gl_log_fn *log_fn;
static void *log_ud;

void gl_log_set(gl_log_fn *fn, void *ud) {
  log_fn = fn;
  log_ud = ud;
}

void gl_log(int level, const char *fmt, ...) {
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (log_fn) {
    log_fn(log_ud, level, msg);
    return;
  }
  /* One write per message so lines from several threads do not interleave. */
  char line[4200];
  int n = snprintf(line, sizeof line, "glisten: %s\n", msg);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) {
    n = sizeof line - 1;
    line[n - 1] = '\n';
  }
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}
