#define _DEFAULT_SOURCE /* timegm */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "gl.h"

typedef struct tls_name {
  char *name; /* lower case; "*.x" matches one label under x */
  gl_tls *other;
} tls_name;

struct gl_tls {
  SSL_CTX *ctx;
  atomic_int refs;
  int server;
  const gl_tls_hooks *hooks; /* or NULL */
  unsigned char *alpn; /* wire format, a server's preference */
  size_t alpn_len;
  tls_name *names;
  int nnames;
};

/* A connection's side of TLS: c->tpd. */
typedef struct tls_conn {
  SSL *ssl;
  gl_tls *t;
  void *ud; /* for the hooks (gl_tls_set_ud) */
  gl_tls *sni; /* the context a sni hook gave, held while ssl may use it */
  char err[200]; /* why the handshake or the stream failed */
} tls_conn;

/* --- errors -------------------------------------------------------------- */

/* err := what + OpenSSL's last reason (the queue is then emptied). */
static void ssl_reason(char *err, size_t errlen, const char *what) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (r)
    snprintf(err, errlen, "%s%s%s", what, *what ? ": " : "", r);
  else
    snprintf(err, errlen, "%s", what);
  ERR_clear_error();
}

/* --- contexts ------------------------------------------------------------ */

static int is_pem(const char *s) { return strstr(s, "-----BEGIN") != NULL; }

/* A BIO over s, PEM text or a file's path; NULL with err filled. */
static BIO *open_pem(const char *s, const char *what, char *err,
                     size_t errlen) {
  BIO *b;
  if (is_pem(s)) {
    b = BIO_new_mem_buf(s, -1);
  } else {
    struct stat st;
    if (stat(s, &st) != 0) {
      snprintf(err, errlen, "%s file %s: %s", what, s, strerror(errno));
      return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
      snprintf(err, errlen, "%s file %s: is a directory", what, s);
      return NULL;
    }
    b = BIO_new_file(s, "r");
  }
  if (!b) ssl_reason(err, errlen, what);
  return b;
}

static const char *name_of(const char *s) { return is_pem(s) ? "(PEM text)" : s; }

static int no_password(char *buf, int size, int rwflag, void *u) {
  size_t n;
  (void)rwflag;
  if (!u) return -1; /* never a prompt on the terminal */
  n = strlen(u);
  if (n > (size_t)size) return -1;
  memcpy(buf, u, n);
  return (int)n;
}

static int load_cert(SSL_CTX *ctx, const char *cert, char *err,
                     size_t errlen) {
  BIO *b = open_pem(cert, "certificate", err, errlen);
  X509 *x;
  if (!b) return GL_ERR;
  x = PEM_read_bio_X509(b, NULL, no_password, NULL);
  if (!x || SSL_CTX_use_certificate(ctx, x) != 1) {
    X509_free(x);
    BIO_free(b);
    snprintf(err, errlen, "certificate %s: not a PEM certificate",
             name_of(cert));
    ERR_clear_error();
    return GL_ERR;
  }
  X509_free(x);
  SSL_CTX_clear_chain_certs(ctx);
  while ((x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL) {
    if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
      X509_free(x);
      BIO_free(b);
      ssl_reason(err, errlen, "certificate chain");
      return GL_ERR;
    }
  }
  ERR_clear_error(); /* the end of the file */
  BIO_free(b);
  return GL_OK;
}

/* The password of a key being read: whether OpenSSL asked for it tells an
 * encrypted key, whatever its decryption then gave. A wrong password can
 * decrypt to bytes whose padding happens to check (about one in 256), and
 * then OpenSSL reports a decoding error, not "bad decrypt". */
typedef struct key_password {
  const char *password; /* or NULL */
  int asked;
} key_password;

static int give_password(char *buf, int size, int rwflag, void *u) {
  key_password *kp = u;
  kp->asked = 1;
  return no_password(buf, size, rwflag, (void *)kp->password);
}

static int load_key(SSL_CTX *ctx, const char *key, const char *password,
                    char *err, size_t errlen) {
  BIO *b = open_pem(key, "key", err, errlen);
  key_password kp = {password, 0};
  EVP_PKEY *k;
  if (!b) return GL_ERR;
  k = PEM_read_bio_PrivateKey(b, NULL, give_password, &kp);
  BIO_free(b);
  if (!k) {
    ERR_clear_error();
    snprintf(err, errlen, "key %s: %s", name_of(key),
             !kp.asked ? "not a PEM private key"
             : password ? "wrong password"
                        : "encrypted: a password is needed");
    return GL_ERR;
  }
  if (SSL_CTX_use_PrivateKey(ctx, k) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    EVP_PKEY_free(k);
    snprintf(err, errlen, "key %s does not match certificate", name_of(key));
    ERR_clear_error();
    return GL_ERR;
  }
  EVP_PKEY_free(k);
  return GL_OK;
}

static int load_ca(SSL_CTX *ctx, const char *ca, int server, char *err,
                   size_t errlen) {
  struct stat st;
  if (is_pem(ca)) {
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    BIO *b = BIO_new_mem_buf(ca, -1);
    X509 *x;
    int n = 0;
    while (b && (x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL) {
      X509_STORE_add_cert(store, x);
      if (server) SSL_CTX_add_client_CA(ctx, x);
      X509_free(x);
      n++;
    }
    BIO_free(b);
    ERR_clear_error();
    if (!n) {
      snprintf(err, errlen, "ca (PEM text): no PEM certificate in it");
      return GL_ERR;
    }
    return GL_OK;
  }
  if (stat(ca, &st) != 0) {
    snprintf(err, errlen, "ca file %s: %s", ca, strerror(errno));
    return GL_ERR;
  }
  if (S_ISDIR(st.st_mode) ? SSL_CTX_load_verify_dir(ctx, ca) != 1
                          : SSL_CTX_load_verify_file(ctx, ca) != 1) {
    snprintf(err, errlen, "ca %s: no PEM certificate in it", ca);
    ERR_clear_error();
    return GL_ERR;
  }
  if (server && !S_ISDIR(st.st_mode)) {
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (names) SSL_CTX_set_client_CA_list(ctx, names);
    ERR_clear_error();
  }
  return GL_OK;
}

/* "optional": the handshake goes on whatever the check says; the result
 * stays readable (gl_tls_get_info). */
static int verify_any(int ok, X509_STORE_CTX *x) {
  (void)ok;
  (void)x;
  return 1;
}

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  gl_tls *t = arg;
  unsigned char *o;
  if (t->hooks && t->hooks->alpn) {
    tls_conn *tc = SSL_get_app_data(ssl);
    int r = t->hooks->alpn(tc ? tc->ud : NULL, in, inlen, out, outlen);
    return r > 0 ? SSL_TLSEXT_ERR_OK
           : r == 0 ? SSL_TLSEXT_ERR_NOACK
                    : SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  if (!t->alpn_len ||
      SSL_select_next_proto(&o, outlen, t->alpn, (unsigned)t->alpn_len, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* nothing forced */
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}

static int name_matches(const char *pat, const char *name) {
  if (pat[0] == '*' && pat[1] == '.') {
    const char *dot = strchr(name, '.');
    return dot && dot != name && strcasecmp(dot + 1, pat + 2) == 0;
  }
  return strcasecmp(pat, name) == 0;
}

static int on_servername(SSL *ssl, int *alert, void *arg) {
  gl_tls *t = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;
  for (int pass = 0; pass < 2; pass++) /* exact names first, then "*." */
    for (int i = 0; i < t->nnames; i++)
      if ((t->names[i].name[0] == '*') == pass &&
          name_matches(t->names[i].name, name)) {
        SSL_set_SSL_CTX(ssl, t->names[i].other->ctx);
        return SSL_TLSEXT_ERR_OK;
      }
  if (t->hooks && t->hooks->sni) {
    tls_conn *tc = SSL_get_app_data(ssl);
    gl_tls *other = NULL;
    if (t->hooks->sni(tc ? tc->ud : NULL, name, &other) != GL_OK) {
      *alert = SSL_AD_UNRECOGNIZED_NAME;
      return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    if (other) {
      SSL_set_SSL_CTX(ssl, other->ctx); /* which takes its own reference */
      if (tc) {
        gl_tls_unref(tc->sni); /* its callbacks' arg must outlive ssl */
        tc->sni = other;
      } else {
        gl_tls_unref(other);
      }
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

gl_tls *gl_tls_new(const gl_tls_conf *conf, char *err, size_t errlen) {
  gl_tls *t = calloc(1, sizeof *t);
  SSL_CTX *ctx;
  int minv = TLS1_2_VERSION;
  if (!t) {
    snprintf(err, errlen, "not enough memory");
    return NULL;
  }
  atomic_init(&t->refs, 1);
  t->server = conf->server;
  ctx = t->ctx = SSL_CTX_new(conf->server ? TLS_server_method()
                                          : TLS_client_method());
  if (!ctx) {
    ssl_reason(err, errlen, "cannot make a TLS context");
    free(t);
    return NULL;
  }
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  if (conf->min_version && strcmp(conf->min_version, "1.2") != 0) {
    if (strcmp(conf->min_version, "1.3") != 0) {
      snprintf(err, errlen, "min_version %s: expected \"1.2\" or \"1.3\"",
               conf->min_version);
      goto fail;
    }
    minv = TLS1_3_VERSION;
  }
  SSL_CTX_set_min_proto_version(ctx, minv);
  if (conf->ciphers && SSL_CTX_set_cipher_list(ctx, conf->ciphers) != 1) {
    snprintf(err, errlen, "ciphers %s: none of them is known", conf->ciphers);
    goto fail;
  }
  if (conf->ciphersuites &&
      SSL_CTX_set_ciphersuites(ctx, conf->ciphersuites) != 1) {
    snprintf(err, errlen, "ciphersuites %s: not a valid list",
             conf->ciphersuites);
    goto fail;
  }
  if (conf->server && !conf->cert) {
    snprintf(err, errlen, "a server needs a certificate (cert) and its key");
    goto fail;
  }
  if (conf->cert && !conf->key) {
    snprintf(err, errlen, "certificate %s has no key", name_of(conf->cert));
    goto fail;
  }
  if (!conf->cert && conf->key) {
    snprintf(err, errlen, "key %s has no certificate", name_of(conf->key));
    goto fail;
  }
  if (conf->cert && (load_cert(ctx, conf->cert, err, errlen) != GL_OK ||
                     load_key(ctx, conf->key, conf->password, err, errlen) !=
                         GL_OK))
    goto fail;
  if (conf->ca && load_ca(ctx, conf->ca, conf->server, err, errlen) != GL_OK)
    goto fail;
  if (conf->server) {
    static const unsigned char sid[] = "glisten-lua";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    if (conf->no_tickets) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    /* a TLS 1.2 client may not renegotiate: a handshake costs the server
     * far more than the client, and the hooks run only before the script */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    if (conf->verify != GL_TLS_VERIFY_NONE && !conf->ca) {
      snprintf(err, errlen, "verify of client certificates needs ca");
      goto fail;
    }
    if (conf->verify == GL_TLS_VERIFY_REQUIRED)
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                         NULL);
    else if (conf->verify == GL_TLS_VERIFY_OPTIONAL)
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_any);
    if (conf->alpn && conf->alpn_len) {
      t->alpn = malloc(conf->alpn_len);
      if (!t->alpn) {
        snprintf(err, errlen, "not enough memory");
        goto fail;
      }
      memcpy(t->alpn, conf->alpn, conf->alpn_len);
      t->alpn_len = conf->alpn_len;
    }
    /* always: a tls.alpn function comes as a hook after this, with no list
     * (alpn_select answers "none" when there is neither) */
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, t);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
  } else {
    if (conf->verify != GL_TLS_VERIFY_NONE) {
      if (!conf->ca && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ssl_reason(err, errlen, "the system's certificates");
        goto fail;
      }
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (conf->alpn && conf->alpn_len &&
        SSL_CTX_set_alpn_protos(ctx, conf->alpn, (unsigned)conf->alpn_len)) {
      snprintf(err, errlen, "alpn: not enough memory");
      goto fail;
    }
  }
  ERR_clear_error();
  return t;
fail:
  ERR_clear_error();
  SSL_CTX_free(ctx);
  free(t);
  return NULL;
}

void gl_tls_ref(gl_tls *t) { atomic_fetch_add(&t->refs, 1); }

void gl_tls_unref(gl_tls *t) {
  if (!t || atomic_fetch_sub(&t->refs, 1) != 1) return;
  for (int i = 0; i < t->nnames; i++) {
    free(t->names[i].name);
    gl_tls_unref(t->names[i].other);
  }
  free(t->names);
  free(t->alpn);
  SSL_CTX_free(t->ctx);
  free(t);
}

int gl_tls_add_name(gl_tls *t, const char *name, gl_tls *other) {
  tls_name *n = realloc(t->names, (size_t)(t->nnames + 1) * sizeof *n);
  char *copy = strdup(name);
  if (n) t->names = n;
  if (!n || !copy) {
    free(copy);
    return -ENOMEM;
  }
  n[t->nnames].name = copy;
  n[t->nnames++].other = other;
  gl_tls_ref(other);
  return GL_OK;
}

/* --- the socket under TLS ----------------------------------------------- */

/* OpenSSL's socket BIO writes with write(2): a peer that is gone would
 * raise SIGPIPE. This one sends with MSG_NOSIGNAL, so a gone peer is EPIPE,
 * as on the plain transport, whatever the process does with the signal. */
static BIO_METHOD *sock_method;
static pthread_once_t sock_once = PTHREAD_ONCE_INIT;

static int sock_write(BIO *b, const char *p, size_t n, size_t *put) {
  ssize_t r = send(*(int *)BIO_get_data(b), p, n, MSG_NOSIGNAL);
  BIO_clear_retry_flags(b);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      BIO_set_retry_write(b);
    return 0;
  }
  *put = (size_t)r;
  return 1;
}

static int sock_read(BIO *b, char *p, size_t n, size_t *got) {
  ssize_t r = recv(*(int *)BIO_get_data(b), p, n, 0);
  BIO_clear_retry_flags(b);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    BIO_set_retry_read(b);
  if (r <= 0) return 0; /* 0 with no retry flag: the end of the stream */
  *got = (size_t)r;
  return 1;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH || cmd == BIO_CTRL_DUP;
}

static void sock_method_make(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                               "glisten socket");
  if (m && BIO_meth_set_write_ex(m, sock_write) &&
      BIO_meth_set_read_ex(m, sock_read) && BIO_meth_set_ctrl(m, sock_ctrl))
    sock_method = m;
  else
    BIO_meth_free(m);
}

/* The method is made once and lives as long as the code does: freed when
 * the program ends, or when the library that holds it is unloaded (a Lua
 * state closing unloads glisten.so). */
__attribute__((destructor)) static void sock_method_free(void) {
  BIO_meth_free(sock_method);
  sock_method = NULL;
}

/* A BIO over c's descriptor (c->fd outlives it: the BIO goes with the SSL,
 * freed after the connection closed it). */
static BIO *sock_bio(gl_conn *c) {
  BIO *b;
  pthread_once(&sock_once, sock_method_make);
  if (!sock_method || !(b = BIO_new(sock_method))) return NULL;
  BIO_set_data(b, &c->fd);
  BIO_set_init(b, 1);
  return b;
}

/* --- the transport ------------------------------------------------------- */

#define TC(c) ((tls_conn *)(c)->tpd)

/* The result of a failed SSL call r on c: GL_WANT_*, 0 (the end of the
 * stream, reading only) or -errno, with tc->err saying why. */
static long failed(gl_conn *c, int r, int reading) {
  tls_conn *tc = TC(c);
  int e = SSL_get_error(tc->ssl, r);
  int sys = errno;
  unsigned long last;
  switch (e) {
    case SSL_ERROR_WANT_READ:
      return GL_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
      return GL_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: /* close_notify */
      ERR_clear_error();
      return reading ? 0 : -EPIPE;
    case SSL_ERROR_SYSCALL:
      ERR_clear_error();
      if (sys && sys != EAGAIN) {
        snprintf(tc->err, sizeof tc->err, "%s", strerror(sys));
        return -sys;
      }
      break; /* an end of stream without close_notify */
    case SSL_ERROR_SSL:
      last = ERR_peek_last_error();
      if (ERR_GET_REASON(last) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        break;
      }
      if (ERR_GET_REASON(last) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long v = SSL_get_verify_result(tc->ssl);
        snprintf(tc->err, sizeof tc->err, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
      } else {
        ssl_reason(tc->err, sizeof tc->err, "");
      }
      return -EPROTO;
    default:
      ssl_reason(tc->err, sizeof tc->err, "");
      return -EPROTO;
  }
  snprintf(tc->err, sizeof tc->err, "peer closed without close_notify");
  if (!reading || (c->flags & GL_CONN_HANDSHAKE)) return -ECONNRESET;
  return 0;
}

static long tls_read(gl_conn *c, char *p, size_t n) {
  size_t got;
  int r;
  ERR_clear_error();
  r = SSL_read_ex(TC(c)->ssl, p, n, &got);
  return r == 1 ? (long)got : failed(c, r, 1);
}

static long tls_write(gl_conn *c, const char *p, size_t n) {
  size_t put;
  int r;
  ERR_clear_error();
  r = SSL_write_ex(TC(c)->ssl, p, n, &put);
  return r == 1 ? (long)put : failed(c, r, 0);
}

static int tls_handshake(gl_conn *c) {
  int r;
  ERR_clear_error();
  r = SSL_do_handshake(TC(c)->ssl);
  if (r == 1) return 1;
  long f = failed(c, r, 0);
  if (f == GL_WANT_READ || f == GL_WANT_WRITE) return (int)f;
  if (f == -ECONNRESET && !TC(c)->err[0])
    snprintf(TC(c)->err, sizeof TC(c)->err, "peer closed during handshake");
  if (f == -EPIPE) f = -EPROTO;
  return (int)f;
}

static int tls_pending(gl_conn *c) { return SSL_pending(TC(c)->ssl) > 0; }

/* close_notify on the writing side only; the peer's data is still read
 * (TLS 1.3 and 1.2 alike: OpenSSL reads records after its own
 * close_notify until the peer's). */
static int tls_shutdown(gl_conn *c) {
  tls_conn *tc = TC(c);
  int r;
  if (!SSL_is_init_finished(tc->ssl)) return 1;
  ERR_clear_error();
  r = SSL_shutdown(tc->ssl);
  if (r >= 0) return 1; /* 0: sent, the peer's not yet read; 1: both */
  return (int)failed(c, r, 0);
}

static void tls_close(gl_conn *c, int clean) {
  tls_conn *tc = TC(c);
  if (clean && SSL_is_init_finished(tc->ssl) &&
      !(SSL_get_shutdown(tc->ssl) & SSL_SENT_SHUTDOWN)) {
    ERR_clear_error();
    SSL_shutdown(tc->ssl); /* close_notify, without waiting for the peer's */
  }
  ERR_clear_error();
}

static void tls_free(gl_conn *c) {
  tls_conn *tc = TC(c);
  c->tpd = NULL;
  SSL_free(tc->ssl);
  gl_tls_unref(tc->sni);
  gl_tls_unref(tc->t);
  free(tc);
}

static const gl_transport tls_transport = {
    "tls", tls_read, tls_write, tls_handshake, tls_pending, tls_close,
    tls_shutdown, tls_free};

int gl_tls_start(gl_conn *c, gl_tls *t, const char *server_name) {
  tls_conn *tc = calloc(1, sizeof *tc);
  SSL *ssl = tc ? SSL_new(t->ctx) : NULL;
  BIO *b = ssl ? sock_bio(c) : NULL;
  if (!b) {
    SSL_free(ssl);
    free(tc);
    ERR_clear_error();
    return -ENOMEM;
  }
  SSL_set_bio(ssl, b, b);
  SSL_set_app_data(ssl, tc);
  tc->ssl = ssl;
  tc->t = t;
  gl_tls_ref(t);
  if (t->server) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
    if (server_name && *server_name) {
      unsigned char ip[16];
      int is_ip = inet_pton(AF_INET, server_name, ip) == 1 ||
                  inet_pton(AF_INET6, server_name, ip) == 1;
      if (is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name);
      else {
        SSL_set_tlsext_host_name(ssl, server_name);
        SSL_set1_host(ssl, server_name);
      }
    }
  }
  ERR_clear_error();
  gl_conn_set_transport(c, &tls_transport, tc,
                        t->server ? GL_WANT_READ : GL_WANT_WRITE);
  return GL_OK;
}

void gl_tls_set_hooks(gl_tls *t, const gl_tls_hooks *h) { t->hooks = h; }

const gl_tls_hooks *gl_tls_get_hooks(const gl_tls *t) { return t->hooks; }

void gl_tls_set_ud(gl_conn *c, void *ud) {
  if (c->tp == &tls_transport && c->tpd) TC(c)->ud = ud;
}

const char *gl_tls_error(const gl_conn *c) {
  if (c->tp != &tls_transport || !c->tpd || !TC(c)->err[0]) return NULL;
  return TC(c)->err;
}

int gl_tls_get_info(const gl_conn *c, gl_tls_info *out) {
  SSL *ssl;
  const unsigned char *a = NULL;
  unsigned al = 0;
  memset(out, 0, sizeof *out);
  if (c->tp != &tls_transport || !c->tpd ||
      (c->flags & (GL_CONN_HANDSHAKE | GL_CONN_CLOSED)))
    return GL_ERR;
  ssl = TC(c)->ssl;
  out->version = SSL_get_version(ssl);
  out->cipher = SSL_get_cipher_name(ssl);
  SSL_get0_alpn_selected(ssl, &a, &al);
  out->alpn = al ? a : NULL;
  out->alpn_len = al;
  out->server_name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  out->resumed = SSL_session_reused(ssl);
  out->has_peer = SSL_get0_peer_certificate(ssl) != NULL;
  out->verify_result = SSL_get_verify_result(ssl);
  if (out->has_peer && out->verify_result != X509_V_OK)
    out->verify_error = X509_verify_cert_error_string(out->verify_result);
  return GL_OK;
}

static void name_text(X509_NAME *n, char *buf, size_t len) {
  BIO *b = BIO_new(BIO_s_mem());
  int got = 0;
  buf[0] = 0;
  if (!b) return;
  X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253);
  got = BIO_read(b, buf, (int)len - 1);
  buf[got > 0 ? got : 0] = 0;
  BIO_free(b);
}

static time_t asn1_time(const ASN1_TIME *t) {
  struct tm tm;
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return timegm(&tm);
}

static void add_san(gl_tls_peer *out, size_t *used, const char *s, size_t n) {
  if (*used + n + 1 > sizeof out->san) return;
  memcpy(out->san + *used, s, n);
  out->san[*used + n] = 0;
  *used += n + 1;
  out->nsan++;
}

int gl_tls_get_peer(const gl_conn *c, gl_tls_peer *out) {
  X509 *x;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  BIGNUM *bn;
  GENERAL_NAMES *sans;
  size_t used = 0;
  memset(out, 0, sizeof *out);
  if (c->tp != &tls_transport || !c->tpd || (c->flags & GL_CONN_CLOSED))
    return GL_ERR;
  x = SSL_get0_peer_certificate(TC(c)->ssl);
  if (!x) return GL_ERR;
  name_text(X509_get_subject_name(x), out->subject, sizeof out->subject);
  name_text(X509_get_issuer_name(x), out->issuer, sizeof out->issuer);
  bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  if (bn) {
    char *hex = BN_bn2hex(bn);
    if (hex) snprintf(out->serial, sizeof out->serial, "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
  }
  if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1)
    for (unsigned i = 0; i < mdlen && i < 32; i++)
      snprintf(out->sha256 + 2 * i, 3, "%02x", md[i]);
  out->not_before = asn1_time(X509_get0_notBefore(x));
  out->not_after = asn1_time(X509_get0_notAfter(x));
  sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
    GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
    if (g->type == GEN_DNS || g->type == GEN_URI || g->type == GEN_EMAIL) {
      ASN1_STRING *s = g->d.ia5;
      add_san(out, &used, (const char *)ASN1_STRING_get0_data(s),
              (size_t)ASN1_STRING_length(s));
    } else if (g->type == GEN_IPADD) {
      char ip[INET6_ADDRSTRLEN];
      int len = ASN1_STRING_length(g->d.ip);
      int fam = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
      if (fam && inet_ntop(fam, ASN1_STRING_get0_data(g->d.ip), ip, sizeof ip))
        add_san(out, &used, ip, strlen(ip));
    }
  }
  GENERAL_NAMES_free(sans);
  {
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    long n;
    if (!b) return -ENOMEM;
    PEM_write_bio_X509(b, x);
    n = BIO_get_mem_data(b, &data);
    out->pem = malloc((size_t)n + 1);
    if (out->pem) {
      memcpy(out->pem, data, (size_t)n);
      out->pem[n] = 0;
    }
    BIO_free(b);
    if (!out->pem) return -ENOMEM;
  }
  ERR_clear_error();
  return GL_OK;
}
