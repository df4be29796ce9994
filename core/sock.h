/*
 * sock.h: thin helpers over the BSD socket calls. Every descriptor they
 * return is non-blocking and close-on-exec.
 */
#ifndef GL_SOCK_H
#define GL_SOCK_H

#include <netdb.h>
#include <stddef.h>

enum { GL_LISTEN_REUSEPORT = 1 }; /* several sockets share the port */

/* Binds and listens on host:port (port 0 picks a free one; host is a numeric
 * address or a name from /etc/hosts). flags: GL_LISTEN_*. Returns the
 * descriptor, or -1 with a message in err. *bound receives the port
 * actually bound. */
int gl_sock_listen(const char *host, int port, int backlog, int flags,
                   int *bound, char *err, size_t errlen);

/* Starts a non-blocking connect to host:port. Returns the descriptor (the
 * connect may still be in progress: wait for writability, then call
 * gl_sock_connect_result) or -1 with a message in err. A host name is
 * looked up with a blocking getaddrinfo: the loop uses gl_sock_numeric and
 * gl_lookup_start (resolve.h) with gl_sock_connect_ai instead. */
int gl_sock_connect(const char *host, int port, char *err, size_t errlen);

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
 * *family (4 or 6). Returns GL_OK or -errno. */
int gl_sock_name(int fd, int peer, char *ip, size_t iplen, int *port,
                 int *family);

/* Prepares an accepted descriptor: TCP_NODELAY. */
void gl_sock_tune(int fd);

#endif
