/*
 * log.c: the one log hook, and the escaping that keeps each message one
 * line of glisten's own (log.h).
 */
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

size_t gl_log_escape(char *dst, size_t size, const char *src, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)src;
  size_t i = 0, o = 0;
  if (size == 0) return 0;
  while (i < len) {
    unsigned char c = s[i];
    char esc[8];
    size_t n = 0, take = 1;
    if (c == '\\') {
      esc[n++] = '\\';
      esc[n++] = '\\';
    } else if (c == '\n' || c == '\r' || c == '\t') {
      esc[n++] = '\\';
      esc[n++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
    } else if (c < 0x20 || c == 0x7f ||
               (c == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 &&
                s[i + 1] <= 0x9f)) {
      take = c == 0xc2 ? 2 : 1;
      for (size_t k = 0; k < take; k++) {
        esc[n++] = '\\';
        esc[n++] = 'x';
        esc[n++] = hex[s[i + k] >> 4];
        esc[n++] = hex[s[i + k] & 15];
      }
    } else {
      esc[n++] = (char)c;
    }
    if (n > size - 1 - o) break;
    memcpy(dst + o, esc, n);
    o += n;
    i += take;
  }
  dst[o] = '\0';
  return i;
}

/* Reports msg (escaped, NUL-terminated) through the hook or to stderr. */
static void emit(int level, const char *msg) {
  static const char prefix[] = "glisten: ";
  char line[sizeof prefix - 1 + GL_LOG_MAX + 1];
  size_t n = strlen(msg);
  ssize_t w;
  if (log_fn) {
    log_fn(log_ud, level, msg);
    return;
  }
  /* One write per message so lines from several threads do not interleave. */
  if (n > GL_LOG_MAX) n = GL_LOG_MAX;
  memcpy(line, prefix, sizeof prefix - 1);
  memcpy(line + sizeof prefix - 1, msg, n);
  n += sizeof prefix - 1;
  line[n++] = '\n';
  w = write(STDERR_FILENO, line, n);
  (void)w;
}

void gl_log(int level, const char *fmt, ...) {
  char raw[GL_LOG_MAX + 1], msg[GL_LOG_MAX + 1];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  gl_log_escape(msg, sizeof msg, raw, strlen(raw));
  emit(level, msg);
}

void gl_log_text(int level, const char *head, const char *text, size_t len) {
  char msg[GL_LOG_MAX + 1];
  size_t o;
  gl_log_escape(msg, sizeof msg, head, strlen(head));
  o = strlen(msg);
  if (o + 2 < sizeof msg) {
    memcpy(msg + o, ": ", 3);
    o += 2;
    gl_log_escape(msg + o, sizeof msg - o, text, len);
  }
  emit(level, msg);
}
