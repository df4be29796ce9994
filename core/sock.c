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
#include <sys/stat.h>
#include <sys/un.h>
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

const char *gl_sock_any(void) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 && errno == EAFNOSUPPORT) return "0.0.0.0";
  if (fd >= 0) close(fd);
  return "::";
}

int gl_sock_listen(const char *host, int port, int backlog, int flags,
                   int *bound, char *err, size_t errlen) {
  struct addrinfo *res, *ai;
  int fd = -1, saved = 0;
  if (host && strcmp(host, "*") == 0) host = gl_sock_any();
  if (resolve(host, port, AI_PASSIVE, &res, err, errlen) != GL_OK) return -1;
  for (ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
      saved = errno;
      continue;
    }
    int on = 1, off = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    /* "::" takes IPv4 too, whatever net.ipv6.bindv6only says */
    if (ai->ai_family == AF_INET6)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
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

/* Fills *sa for the Unix socket path ("@NAME": abstract). Returns the
 * address's length, or 0 with a message in err (what names the socket,
 * such as "cannot listen on unix:PATH", comes first). */
static socklen_t unix_addr(const char *path, struct sockaddr_un *sa,
                           const char *what, char *err, size_t errlen) {
  size_t n = strlen(path);
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (n == 0 || (n == 1 && path[0] == '@')) {
    snprintf(err, errlen, "%s: empty path", what);
    return 0;
  }
  if (n > GL_UNIX_PATH_MAX) {
    snprintf(err, errlen, "%s: path too long (%zu bytes, at most %d)", what,
             n, GL_UNIX_PATH_MAX);
    return 0;
  }
  memcpy(sa->sun_path, path, n);
  if (path[0] == '@') { /* abstract: a NUL, then the name, no NUL after */
    sa->sun_path[0] = '\0';
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  }
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

/* Before binding path: GL_OK when the way is clear (nothing there, or a
 * stale socket file, removed here); else GL_ERR with the reason in err. A
 * socket file is live when a connect to it is taken or waits in a full
 * backlog (EAGAIN), stale when it is refused: nothing listens there. */
static int unix_clear(const char *path, const struct sockaddr_un *sa,
                      socklen_t len, const char *what, char *err,
                      size_t errlen) {
  struct stat st;
  int fd, rc, e;
  if (path[0] == '@') return GL_OK; /* no file: the kernel says if in use */
  if (lstat(path, &st) < 0) {
    if (errno == ENOENT) return GL_OK;
    snprintf(err, errlen, "%s: %s", what, strerror(errno));
    return GL_ERR;
  }
  if (!S_ISSOCK(st.st_mode)) {
    snprintf(err, errlen, "%s: exists and is %s, not a socket", what,
             S_ISDIR(st.st_mode) ? "a directory" : "a file");
    return GL_ERR;
  }
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", what, strerror(errno));
    return GL_ERR;
  }
  rc = connect(fd, (const struct sockaddr *)sa, len);
  e = errno;
  close(fd);
  if (rc < 0 && e == ECONNREFUSED) { /* stale: its server is gone */
    if (unlink(path) == 0 || errno == ENOENT) return GL_OK;
    e = errno;
  } else if (rc < 0 && e == ENOENT) {
    return GL_OK; /* removed meanwhile */
  } else if (rc == 0 || e == EAGAIN) {
    e = EADDRINUSE; /* a server answers there */
  }
  snprintf(err, errlen, "%s: %s", what, strerror(e));
  return GL_ERR;
}

int gl_sock_listen_unix(const char *path, int backlog, int mode,
                        gl_sockfile *file, char *err, size_t errlen) {
  struct sockaddr_un sa;
  struct stat st;
  char what[GL_NAMELEN + 32];
  socklen_t len;
  int fd;
  memset(file, 0, sizeof *file);
  snprintf(what, sizeof what, "cannot listen on unix:%s", path);
  if (!(len = unix_addr(path, &sa, what, err, errlen))) return -1;
  if (unix_clear(path, &sa, len, what, err, errlen) != GL_OK) return -1;
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", what, strerror(errno));
    return -1;
  }
  if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
    snprintf(err, errlen, "%s: %s", what, strerror(errno));
    close(fd);
    return -1;
  }
  if (path[0] != '@') {
    /* nothing can connect before listen: set the mode first */
    if ((mode >= 0 && chmod(path, (mode_t)mode) < 0) ||
        lstat(path, &st) < 0) {
      snprintf(err, errlen, "%s: %s", what, strerror(errno));
      unlink(path);
      close(fd);
      return -1;
    }
    file->dev = st.st_dev;
    file->ino = st.st_ino;
    file->made = 1;
  }
  if (listen(fd, backlog > 0 ? backlog : 1024) < 0) {
    snprintf(err, errlen, "%s: %s", what, strerror(errno));
    gl_sock_unlink(path, file);
    close(fd);
    return -1;
  }
  return fd;
}

int gl_sock_dup(int fd) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return copy < 0 ? -errno : copy;
}

void gl_sock_unlink(const char *path, gl_sockfile *file) {
  struct stat st;
  if (!file->made) return;
  file->made = 0;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
      st.st_dev == file->dev && st.st_ino == file->ino)
    unlink(path);
}

int gl_sock_connect_unix(const char *path, char *err, size_t errlen) {
  struct sockaddr_un sa;
  char what[GL_NAMELEN + 32];
  socklen_t len;
  int fd;
  snprintf(what, sizeof what, "cannot connect to unix:%s", path);
  if (!(len = unix_addr(path, &sa, what, err, errlen))) return -1;
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "%s", strerror(errno));
    return -1;
  }
  if (connect(fd, (struct sockaddr *)&sa, len) < 0 && errno != EINPROGRESS) {
    snprintf(err, errlen, "%s", strerror(errno));
    close(fd);
    return -1;
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
  return gl_sock_addr_text(&ss, len, ip, iplen, port, family);
}

int gl_sock_addr_text(const struct sockaddr_storage *a, socklen_t len,
                      char *ip, size_t iplen, int *port, int *family) {
  struct sockaddr_storage ss = *a;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &s->sin_addr, ip, (socklen_t)iplen);
    *port = ntohs(s->sin_port);
    *family = GL_FAMILY_INET;
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
    *port = ntohs(s->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) { /* an IPv4 peer of "::" */
      inet_ntop(AF_INET, s->sin6_addr.s6_addr + 12, ip, (socklen_t)iplen);
      *family = GL_FAMILY_INET;
    } else {
      inet_ntop(AF_INET6, &s->sin6_addr, ip, (socklen_t)iplen);
      *family = GL_FAMILY_INET6;
    }
  } else if (ss.ss_family == AF_UNIX) {
    struct sockaddr_un *s = (struct sockaddr_un *)&ss;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = len > off ? len - off : 0; /* 0: unnamed */
    if (n && s->sun_path[0] == '\0') { /* abstract: "@NAME" */
      snprintf(ip, iplen, "@%.*s", (int)(n - 1), s->sun_path + 1);
    } else {
      if (n > sizeof s->sun_path) n = sizeof s->sun_path;
      snprintf(ip, iplen, "%.*s", (int)strnlen(s->sun_path, n), s->sun_path);
    }
    *port = 0;
    *family = GL_FAMILY_UNIX;
  } else {
    return -EAFNOSUPPORT;
  }
  return GL_OK;
}

int gl_sock_peercred(int fd, long *pid, long *uid, long *gid) {
  struct sockaddr_storage ss;
  struct ucred cr;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
  if (ss.ss_family != AF_UNIX) return -ENOTSUP; /* TCP has no credentials */
  len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) return -errno;
  *pid = (long)cr.pid;
  *uid = (long)cr.uid;
  *gid = (long)cr.gid;
  return GL_OK;
}

int gl_sock_peer_key(int fd, char *key, size_t len) {
  char ip[GL_NAMELEN];
  int port, fam, rc;
  long pid, uid, gid;
  if ((rc = gl_sock_name(fd, 1, ip, sizeof ip, &port, &fam)) != GL_OK)
    return rc;
  if (fam != GL_FAMILY_UNIX) {
    snprintf(key, len, "%s", ip);
    return GL_OK;
  }
  if ((rc = gl_sock_peercred(fd, &pid, &uid, &gid)) != GL_OK) return rc;
  snprintf(key, len, "uid:%ld", uid);
  return GL_OK;
}

int gl_sock_peer_text(int fd, char *buf, size_t len) {
  char ip[GL_NAMELEN];
  int port, fam, rc;
  long pid, uid, gid;
  if ((rc = gl_sock_name(fd, 1, ip, sizeof ip, &port, &fam)) != GL_OK)
    return rc;
  if (fam != GL_FAMILY_UNIX) {
    snprintf(buf, len, fam == GL_FAMILY_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
    return GL_OK;
  }
  /* an accepted peer has no name: the socket's own path says which */
  if (!ip[0] && (rc = gl_sock_name(fd, 0, ip, sizeof ip, &port, &fam)))
    return rc;
  if (gl_sock_peercred(fd, &pid, &uid, &gid) == GL_OK)
    snprintf(buf, len, "unix:%s pid %ld uid %ld", ip, pid, uid);
  else
    snprintf(buf, len, "unix:%s", ip);
  return GL_OK;
}

/* Where option opt lives: level and name, for setsockopt. */
static int opt_place(int opt, int *level, int *name) {
  static const int places[][2] = {
      [GL_OPT_NODELAY] = {IPPROTO_TCP, TCP_NODELAY},
      [GL_OPT_KEEPALIVE] = {SOL_SOCKET, SO_KEEPALIVE},
      [GL_OPT_REUSEADDR] = {SOL_SOCKET, SO_REUSEADDR},
      [GL_OPT_LINGER] = {SOL_SOCKET, SO_LINGER},
      [GL_OPT_KEEPIDLE] = {IPPROTO_TCP, TCP_KEEPIDLE},
      [GL_OPT_KEEPINTVL] = {IPPROTO_TCP, TCP_KEEPINTVL},
      [GL_OPT_KEEPCNT] = {IPPROTO_TCP, TCP_KEEPCNT}};
  if (opt < 0 || opt > GL_OPT_KEEPCNT) return -EINVAL;
  *level = places[opt][0];
  *name = places[opt][1];
  return GL_OK;
}

int gl_sock_setopt(int fd, int opt, int v, int secs) {
  int level, name, rc = opt_place(opt, &level, &name);
  if (rc) return rc;
  if (opt == GL_OPT_LINGER) {
    struct linger li = {v != 0, secs};
    rc = setsockopt(fd, level, name, &li, sizeof li);
  } else {
    rc = setsockopt(fd, level, name, &v, sizeof v);
  }
  return rc < 0 ? -errno : GL_OK;
}

int gl_sock_getopt(int fd, int opt, int *v, int *secs) {
  int level, name, rc = opt_place(opt, &level, &name);
  socklen_t len;
  if (rc) return rc;
  *secs = 0;
  if (opt == GL_OPT_LINGER) {
    struct linger li;
    len = sizeof li;
    if (getsockopt(fd, level, name, &li, &len) < 0) return -errno;
    *v = li.l_onoff != 0;
    *secs = li.l_linger;
    return GL_OK;
  }
  len = sizeof *v;
  if (getsockopt(fd, level, name, v, &len) < 0) return -errno;
  return GL_OK;
}

void gl_sock_tune(int fd) {
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}
