/*
 * sock.h: thin helpers over the BSD socket calls, for TCP (IPv4 and IPv6)
 * and Unix sockets. Every descriptor they return is non-blocking and
 * close-on-exec.
 */
#ifndef GL_SOCK_H
#define GL_SOCK_H

#include <netdb.h>
#include <stddef.h>
#include <sys/types.h>

enum { GL_LISTEN_REUSEPORT = 1 }; /* several sockets share the port */

/* The families gl_sock_name reports. */
enum { GL_FAMILY_UNIX = 1, GL_FAMILY_INET = 4, GL_FAMILY_INET6 = 6 };

/* The longest Unix socket path: sun_path holds 108 bytes, its NUL
 * included. An abstract name ("@NAME") may have as many bytes after '@'. */
#define GL_UNIX_PATH_MAX 107

/* Room for any address gl_sock_name writes: a Unix path, or "@" and an
 * abstract name, and the NUL. */
#define GL_NAMELEN (GL_UNIX_PATH_MAX + 2)

/* Binds and listens on host:port (port 0 picks a free one; host is a numeric
 * address or a name from /etc/hosts; "*" is gl_sock_any()). An IPv6 socket
 * takes IPv4 too (IPV6_V6ONLY off), so "::" serves both. flags:
 * GL_LISTEN_*. Returns the descriptor, or -1 with a message in err.
 * *bound receives the port actually bound. */
int gl_sock_listen(const char *host, int port, int backlog, int flags,
                   int *bound, char *err, size_t errlen);

/* What host "*" means: "::" (IPv6 and IPv4 both) when this machine has
 * IPv6, else "0.0.0.0" (socket(AF_INET6) fails with EAFNOSUPPORT). */
const char *gl_sock_any(void);

/* The socket file a Unix listener made, so that only that file is removed
 * (a file of another server's in its place since is left alone). */
typedef struct gl_sockfile {
  dev_t dev;
  ino_t ino;
  int made; /* 0: nothing to remove (an abstract name) */
} gl_sockfile;

/* Binds and listens on the Unix socket path; "@NAME" is NAME in Linux's
 * abstract namespace (no file). A socket file already at path that nothing
 * answers on (a connect gets ECONNREFUSED: its server is gone) is stale and
 * replaced; one that answers fails with "Address already in use", and
 * anything but a socket with "exists and is not a socket". mode >= 0 sets
 * the file's permissions, before it listens, so no one connects while
 * they are wider; < 0 leaves what the umask gives. Returns the descriptor,
 * with *file filled for gl_sock_unlink, or -1 with a message in err. */
int gl_sock_listen_unix(const char *path, int backlog, int mode,
                        gl_sockfile *file, char *err, size_t errlen);

/* A copy of the descriptor fd (dup, close-on-exec), or -errno: another
 * loop's handle on the same socket. */
int gl_sock_dup(int fd);

/* Removes the socket file at path if it is still the one *file records;
 * clears file->made. */
void gl_sock_unlink(const char *path, gl_sockfile *file);

/* Starts a non-blocking connect to host:port. Returns the descriptor (the
 * connect may still be in progress: wait for writability, then call
 * gl_sock_connect_result) or -1 with a message in err. A host name is
 * looked up with a blocking getaddrinfo: the loop uses gl_sock_numeric and
 * gl_lookup_start (resolve.h) with gl_sock_connect_ai instead. */
int gl_sock_connect(const char *host, int port, char *err, size_t errlen);

/* Connects to the Unix socket path ("@NAME": abstract), as gl_sock_connect
 * (a Unix connect completes or fails at once; a listener whose backlog is
 * full fails it with EAGAIN). */
int gl_sock_connect_unix(const char *path, char *err, size_t errlen);

/* The SOCK_STREAM addresses of host:port when host is a numeric IPv4 or
 * IPv6 address, at once and with no I/O: GL_OK with *res (free it with
 * freeaddrinfo). GL_AGAIN when host is a name (it needs a lookup). GL_ERR
 * with a message in err for a bad port. */
int gl_sock_numeric(const char *host, int port, struct addrinfo **res,
                    char *err, size_t errlen);

/* Starts a non-blocking connect to one address (as gl_sock_connect). */
int gl_sock_connect_ai(const struct addrinfo *ai, char *err, size_t errlen);

/* After writability of a connecting socket: GL_OK, or -errno. */
int gl_sock_connect_result(int fd);

/* Formats the peer (peer != 0) or local address of fd. Fills ip, *port and
 * *family (GL_FAMILY_*). An IPv4-mapped IPv6 address (::ffff:a.b.c.d, as an
 * IPv4 peer of a "::" listener appears) is reported as the IPv4 address
 * it is. For a Unix socket, ip receives the path ("@NAME" for an abstract
 * name, "" for an unnamed socket, as a connecting client's is) and *port
 * 0. ip should have GL_NAMELEN bytes (a longer path is cut). Returns GL_OK
 * or -errno. */
int gl_sock_name(int fd, int peer, char *ip, size_t iplen, int *port,
                 int *family);

/* gl_sock_name for an address at hand (len bytes of it: a Unix socket's
 * path is read within them). */
int gl_sock_addr_text(const struct sockaddr_storage *a, socklen_t len,
                      char *ip, size_t iplen, int *port, int *family);

/* The peer's credentials of a Unix socket (SO_PEERCRED: the process that
 * connected, or that listened, and its user and group). GL_OK, or -errno
 * (-ENOTSUP for a socket that is not a Unix one). */
int gl_sock_peercred(int fd, long *pid, long *uid, long *gid);

/* The key under which fd's peer is counted for a cap per client: its IP
 * address, or "uid:N" (its user) for a peer on a Unix socket, which has
 * no address. GL_OK or -errno. */
int gl_sock_peer_key(int fd, char *key, size_t len);

/* The peer of fd as a log names it: "127.0.0.1:5000", "[::1]:5000", or
 * "unix:PATH pid N uid N" (PATH: the peer's, or for an unnamed peer the
 * socket's own). GL_OK or -errno. */
int gl_sock_peer_text(int fd, char *buf, size_t len);

/* The socket options a script may set and read (sock:setoption). */
enum {
  GL_OPT_NODELAY,   /* TCP_NODELAY, a flag */
  GL_OPT_KEEPALIVE, /* SO_KEEPALIVE, a flag */
  GL_OPT_REUSEADDR, /* SO_REUSEADDR, a flag */
  GL_OPT_LINGER,    /* SO_LINGER: a flag and seconds */
  GL_OPT_KEEPIDLE,  /* TCP_KEEPIDLE, seconds */
  GL_OPT_KEEPINTVL, /* TCP_KEEPINTVL, seconds */
  GL_OPT_KEEPCNT    /* TCP_KEEPCNT, a count */
};

/* Sets option opt (GL_OPT_*) of fd to v (a flag, seconds or a count);
 * GL_OPT_LINGER takes its flag in v and its seconds in secs. GL_OK or
 * -errno (what setsockopt refused, as -EINVAL for a value out of range or
 * -EOPNOTSUPP for a TCP option on a Unix socket). */
int gl_sock_setopt(int fd, int opt, int v, int secs);

/* Reads option opt of fd into *v (and *secs for GL_OPT_LINGER, else 0).
 * GL_OK or -errno. */
int gl_sock_getopt(int fd, int opt, int *v, int *secs);

/* Prepares an accepted or connecting descriptor: TCP_NODELAY (nothing on
 * a Unix socket). */
void gl_sock_tune(int fd);

#endif
