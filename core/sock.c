#define _GNU_SOURCE
#include "sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gl.h"

static int resolve(const char *host, int port, int flags,
                   struct addrinfo **res, char *err, size_t errlen) {
  char service[16];
  struct addrinfo hints;
  if (port < 0 || port > 65535) {
    snprintf(err, errlen, "invalid port %d", port);
    return GL_ERR;
  }
  snprintf(service, sizeof service, "%d", port);
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | flags;
  int rc = getaddrinfo(host, service, &hints, res);
  if (rc == EAI_NONAME && (flags & AI_NUMERICHOST)) return GL_AGAIN;
  if (rc != 0) {
    snprintf(err, errlen, "cannot resolve %s: %s", host ? host : "(any)",
             gai_strerror(rc));
    return GL_ERR;
  }
  return GL_OK;
}

int gl_sock_listen(const char *host, int port, int backlog, int flags,
                   int *bound, char *err, size_t errlen) {
  struct addrinfo *res, *ai;
  int fd = -1, saved = 0;
  if (resolve(host, port, AI_PASSIVE, &res, err, errlen) != GL_OK) return -1;
  for (ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
      saved = errno;
      continue;
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if ((flags & GL_LISTEN_REUSEPORT) &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) {
      saved = errno;
      close(fd);
      fd = -1;
      continue;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
        listen(fd, backlog > 0 ? backlog : 1024) == 0)
      break;
    saved = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    snprintf(err, errlen,
             host && strchr(host, ':') ? "cannot listen on [%s]:%d: %s"
                                       : "cannot listen on %s:%d: %s",
             host ? host : "*", port, strerror(saved ? saved : EADDRNOTAVAIL));
    return -1;
  }
  if (bound) {
    char ip[64];
    int fam;
    if (gl_sock_name(fd, 0, ip, sizeof ip, bound, &fam) != GL_OK)
      *bound = port;
  }
  return fd;
}

int gl_sock_numeric(const char *host, int port, struct addrinfo **res,
                    char *err, size_t errlen) {
  return resolve(host, port, AI_NUMERICHOST, res, err, errlen);
}

int gl_sock_connect_ai(const struct addrinfo *ai, char *err, size_t errlen) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  ai->ai_protocol);
  if (fd < 0) {
    snprintf(err, errlen, "%s", strerror(errno));
    return -1;
  }
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
    snprintf(err, errlen, "%s", strerror(errno));
    close(fd);
    return -1;
  }
  gl_sock_tune(fd);
  return fd;
}

int gl_sock_connect(const char *host, int port, char *err, size_t errlen) {
  struct addrinfo *res, *ai;
  int fd = -1;
  if (resolve(host, port, 0, &res, err, errlen) != GL_OK) return -1;
  snprintf(err, errlen, "%s", strerror(EADDRNOTAVAIL));
  for (ai = res; ai && fd < 0; ai = ai->ai_next)
    fd = gl_sock_connect_ai(ai, err, errlen);
  freeaddrinfo(res);
  return fd;
}

int gl_sock_connect_result(int fd) {
  int e = 0;
  socklen_t len = sizeof e;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0) return -errno;
  return e ? -e : GL_OK;
}

int gl_sock_name(int fd, int peer, char *ip, size_t iplen, int *port,
                 int *family) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
                : getsockname(fd, (struct sockaddr *)&ss, &len);
  if (rc < 0) return -errno;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &s->sin_addr, ip, (socklen_t)iplen);
    *port = ntohs(s->sin_port);
    *family = 4;
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &s->sin6_addr, ip, (socklen_t)iplen);
    *port = ntohs(s->sin6_port);
    *family = 6;
  } else {
    return -EAFNOSUPPORT;
  }
  return GL_OK;
}

void gl_sock_tune(int fd) {
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}
