/*
 * echo_libev_tls: the TLS floor glisten-lua is measured against: the echo
 * server of echo_libev.c on OpenSSL 3 as one would write it by hand.
 * Everything is non-blocking and driven by one ev_io per connection whose
 * events follow what OpenSSL last asked for (SSL_ERROR_WANT_READ or
 * SSL_ERROR_WANT_WRITE). One SSL_read per readiness event into a stack
 * buffer, the SSL_write tried directly, and only what it did not take
 * queued; reading stops until the queue is written, as in echo_libev.c.
 *
 *   echo_libev_tls PORT CERT KEY
 *       127.0.0.1 (PORT 0 picks one); prints "listening on 127.0.0.1:PORT"
 *       on stderr once it accepts. CERT and KEY are PEM files (CERT may
 *       carry its chain).
 *
 * The context is set up as a production server's would be for these
 * figures: SSL_MODE_RELEASE_BUFFERS (an idle connection holds no record
 * buffers), SSL_MODE_ENABLE_PARTIAL_WRITE with
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER (a write that must be retried is
 * retried from the queue's copy), the server session cache on and session
 * tickets on, so a client can resume (TLS 1.3 and 1.2 alike).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct client {
  ev_io io;      /* the only watcher; its events are c->events */
  SSL *ssl;
  int events;    /* EV_READ or EV_WRITE: what OpenSSL waits for */
  int ready;     /* handshake done */
  char *q;       /* bytes read that SSL_write has not taken yet */
  size_t qlen, qoff;
} client;

/* Frees the connection and everything it holds. The thread's OpenSSL error
 * queue is emptied too: SSL_get_error reads it, so an error left there by
 * this connection would be taken for the next one's. */
static void drop(struct ev_loop *loop, client *c) {
  ev_io_stop(loop, &c->io);
  ERR_clear_error();
  SSL_free(c->ssl);
  close(c->io.fd);
  free(c->q);
  free(c);
}

/* Makes the watcher wait for events (EV_READ or EV_WRITE) alone; touches
 * the loop only when that changes, so the usual case costs no epoll_ctl. */
static void wait_for(struct ev_loop *loop, client *c, int events) {
  if (c->events == events) return;
  ev_io_stop(loop, &c->io);
  ev_io_set(&c->io, c->io.fd, events);
  ev_io_start(loop, &c->io);
  c->events = events;
}

/* After an SSL call on c returned ret <= 0: waits for what OpenSSL wants
 * and returns 0, or returns -1 when the connection failed or ended (the
 * caller drops it). */
static int want(struct ev_loop *loop, client *c, int ret) {
  switch (SSL_get_error(c->ssl, ret)) {
    case SSL_ERROR_WANT_READ: wait_for(loop, c, EV_READ); return 0;
    case SSL_ERROR_WANT_WRITE: wait_for(loop, c, EV_WRITE); return 0;
    default: return -1;
  }
}

/* Writes len bytes at p through SSL_write, a record at a time (partial
 * writes). What it cannot write now is copied to the queue, which must be
 * empty, and the watcher then waits for what OpenSSL wants. Returns 1 when
 * all was written, 0 when some is queued, -1 when the connection failed. */
static int send_or_queue(struct ev_loop *loop, client *c, const char *p, size_t len) {
  size_t off = 0;
  while (off < len) {
    int n = SSL_write(c->ssl, p + off, (int)(len - off));
    if (n <= 0) {
      if (want(loop, c, n) < 0) return -1;
      /* The retry must offer the same bytes; the queue's copy is at a new
       * address, which SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows. */
      char *q = malloc(len - off);
      if (!q) return -1;
      memcpy(q, p + off, len - off);
      c->q = q;
      c->qlen = len - off;
      c->qoff = 0;
      return 0;
    }
    off += (size_t)n;
  }
  return 1;
}

/* Writes what is queued. Returns 1 when the queue is empty (the watcher
 * then waits to read), 0 when OpenSSL must wait, -1 when the connection
 * failed. */
static int flush(struct ev_loop *loop, client *c) {
  while (c->qoff < c->qlen) {
    int n = SSL_write(c->ssl, c->q + c->qoff, (int)(c->qlen - c->qoff));
    if (n <= 0) return want(loop, c, n) < 0 ? -1 : 0;
    c->qoff += (size_t)n;
  }
  free(c->q);
  c->q = NULL;
  c->qlen = c->qoff = 0;
  wait_for(loop, c, EV_READ);
  return 1;
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents) {
  client *c = w->data;
  char buf[65536]; /* holds any record: TLS plaintext is at most 16 KiB */
  int r;
  (void)revents;
  if (!c->ready) {
    r = SSL_do_handshake(c->ssl);
    if (r != 1) {
      if (want(loop, c, r) < 0) drop(loop, c);
      return;
    }
    c->ready = 1;
    wait_for(loop, c, EV_READ);
  }
  if (c->q) {
    r = flush(loop, c);
    if (r < 0) drop(loop, c);
    return; /* read on the next readiness event, as echo_libev does */
  }
  r = SSL_read(c->ssl, buf, sizeof buf);
  if (r <= 0) { /* WANT_READ after a record that was not data (a ticket) */
    if (want(loop, c, r) < 0) drop(loop, c);
    return;
  }
  r = send_or_queue(loop, c, buf, (size_t)r);
  if (r < 0) {
    drop(loop, c);
    return;
  }
  /* Read-ahead is off, so OpenSSL holds no unread record and the socket's
   * readiness tells all; this keeps it correct should that change. */
  if (r > 0 && SSL_has_pending(c->ssl)) ev_feed_event(loop, &c->io, EV_READ);
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)w;
  (void)revents;
  ev_break(loop, EVBREAK_ALL); /* exit cleanly, so profilers write out */
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents) {
  SSL_CTX *ctx = w->data;
  (void)revents;
  for (int i = 0; i < 64; i++) {
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    client *c = calloc(1, sizeof *c);
    SSL *ssl = SSL_new(ctx);
    if (!c || !ssl || SSL_set_fd(ssl, fd) != 1) {
      ERR_clear_error();
      SSL_free(ssl);
      free(c);
      close(fd);
      continue;
    }
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    c->events = EV_READ; /* the client speaks first */
    ev_io_init(&c->io, on_io, fd, EV_READ);
    c->io.data = c;
    ev_io_start(loop, &c->io);
  }
}

/* The server context, or NULL after printing OpenSSL's reason. */
static SSL_CTX *make_ctx(const char *cert, const char *key) {
  static const unsigned char sid[] = "echo_libev_tls";
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) goto fail;
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1)
    goto fail;
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
  SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
  return ctx;
fail:
  fprintf(stderr, "echo_libev_tls: %s: ", cert);
  ERR_print_errors_fp(stderr);
  SSL_CTX_free(ctx);
  return NULL;
}

int main(int argc, char **argv) {
  struct rlimit rl;
  int on = 1;
  if (argc != 4) {
    fprintf(stderr, "usage: echo_libev_tls PORT CERT KEY\n");
    return 2;
  }
  int port = atoi(argv[1]);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);
  SSL_CTX *ctx = make_ctx(argv[2], argv[3]);
  if (!ctx) return 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  socklen_t len = sizeof a;
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1024) < 0) {
    perror("echo_libev_tls");
    return 1;
  }
  getsockname(fd, (struct sockaddr *)&a, &len);
  fprintf(stderr, "listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
  struct ev_loop *loop = EV_DEFAULT;
  ev_io lw;
  ev_io_init(&lw, on_accept, fd, EV_READ);
  lw.data = ctx;
  ev_io_start(loop, &lw);
  ev_signal term, intr;
  ev_signal_init(&term, on_stop, SIGTERM);
  ev_signal_start(loop, &term);
  ev_signal_init(&intr, on_stop, SIGINT);
  ev_signal_start(loop, &intr);
  ev_run(loop, 0);
  SSL_CTX_free(ctx);
  return 0;
}
