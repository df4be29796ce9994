/*
 * test_tls.c: core/tls.c, TLS as a transport of gl_conn, with both ends on
 * one loop over real loopback sockets. The certificates (a CA, a server's
 * for localhost and 127.0.0.1, another name's, a client's) are made here at
 * start, valid from an hour ago for a day, and never written to disk except
 * where a test reads a file on purpose.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "helpers.h"
#include "tls.h"

/* --- certificates ---------------------------------------------------------- */

typedef struct pem {
  char cert[4096], key[4096];
} pem;

static pem ca, srv, other, cli, rogue; /* rogue: a client not under ca */

static void to_pem(X509 *x, EVP_PKEY *k, pem *out) {
  BIO *b = BIO_new(BIO_s_mem());
  char *d;
  long n;
  PEM_write_bio_X509(b, x);
  n = BIO_get_mem_data(b, &d);
  assert_true(n > 0 && (size_t)n < sizeof out->cert);
  memcpy(out->cert, d, (size_t)n);
  out->cert[n] = 0;
  BIO_free(b);
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
  n = BIO_get_mem_data(b, &d);
  assert_true(n > 0 && (size_t)n < sizeof out->key);
  memcpy(out->key, d, (size_t)n);
  out->key[n] = 0;
  BIO_free(b);
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX v;
  X509V3_set_ctx(&v, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v, nid, value);
  assert_non_null(e);
  X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
}

/* A certificate for cn (san: its subjectAltName, or NULL), signed by
 * (issuer, ikey), or self-signed when issuer is NULL. */
static void make_cert(const char *cn, const char *san, X509 *issuer,
                      EVP_PKEY *ikey, X509 **xo, EVP_PKEY **ko, pem *out) {
  static long serial = 1000;
  EVP_PKEY *k = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  assert_non_null(k);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, k);
  X509_NAME *n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                             -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
  add_ext(x, issuer ? issuer : x, NID_basic_constraints,
          issuer ? "critical,CA:FALSE" : "critical,CA:TRUE");
  if (san) add_ext(x, issuer ? issuer : x, NID_subject_alt_name, san);
  assert_true(X509_sign(x, issuer ? ikey : k, EVP_sha256()) > 0);
  to_pem(x, k, out);
  if (xo) *xo = x; else X509_free(x);
  if (ko) *ko = k; else EVP_PKEY_free(k);
}

static int make_all(void **state) {
  X509 *cax, *rx;
  EVP_PKEY *cak, *rk;
  (void)state;
  make_cert("glisten test CA", NULL, NULL, NULL, &cax, &cak, &ca);
  make_cert("localhost", "DNS:localhost,IP:127.0.0.1", cax, cak, NULL, NULL,
            &srv);
  make_cert("other.example", "DNS:other.example,DNS:*.wild.example", cax,
            cak, NULL, NULL, &other);
  make_cert("client one", "DNS:client.example,URI:spiffe://t/one", cax, cak,
            NULL, NULL, &cli);
  make_cert("rogue CA", NULL, NULL, NULL, &rx, &rk, &rogue);
  make_cert("rogue client", NULL, rx, rk, NULL, NULL, &rogue);
  X509_free(cax);
  EVP_PKEY_free(cak);
  X509_free(rx);
  EVP_PKEY_free(rk);
  return 0;
}

/* --- ends of a connection ---------------------------------------------- */

typedef struct end {
  gl_conn *c;
  int ready;    /* handshake done (on_drain while ready == 0) */
  int closed, reason, err;
  char why[200]; /* gl_tls_error in on_close */
  char *got;     /* everything read */
  size_t len, cap;
  int eof;
  gl_tls_info info;
} end;

typedef struct fixture {
  struct ev_loop *loop;
  gl_env env;
  gl_stats stats;
  end a, b; /* a: server side; b: client side */
} fixture;

static void end_data(gl_conn *c) {
  end *e = c->data;
  size_t n = c->in.len;
  if (e->len + n > e->cap) {
    e->cap = (e->len + n) * 2;
    e->got = realloc(e->got, e->cap);
    assert_non_null(e->got);
  }
  if (n) memcpy(e->got + e->len, gl_buf_head(&c->in), n);
  e->len += n;
  gl_conn_consume(c, n);
  if (c->flags & GL_CONN_EOF) {
    e->eof = 1;
    gl_conn_read(c, 0);
  }
}

static void end_drain(gl_conn *c) {
  end *e = c->data;
  if (!e->ready) {
    e->ready = 1;
    assert_int_equal(gl_tls_get_info(c, &e->info), GL_OK);
  }
}

static void end_close(gl_conn *c) {
  end *e = c->data;
  const char *why = gl_tls_error(c);
  e->closed = 1;
  e->reason = c->reason;
  e->err = c->err;
  snprintf(e->why, sizeof e->why, "%s", why ? why : "");
  e->c = NULL;
}

static const gl_conn_cbs end_cbs = {end_data, end_drain, end_close};

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->loop = ev_loop_new(EVFLAG_AUTO);
  f->env.loop = f->loop;
  f->env.stats = &f->stats;
  f->env.scratch = malloc(GL_READ_CHUNK);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  gl_env_close_all(&f->env);
  free(f->a.got);
  free(f->b.got);
  free(f->env.scratch);
  ev_loop_destroy(f->loop);
  free(f);
  return 0;
}

static gl_tls *context(const gl_tls_conf *conf) {
  char err[GL_ERRLEN];
  gl_tls *t = gl_tls_new(conf, err, sizeof err);
  if (!t) fail_msg("gl_tls_new: %s", err);
  return t;
}

static gl_tls *server_ctx(void) {
  gl_tls_conf conf = {.server = 1, .cert = srv.cert, .key = srv.key};
  return context(&conf);
}

static gl_tls *client_ctx(int verify) {
  gl_tls_conf conf = {.ca = ca.cert,
                      .verify = verify ? GL_TLS_VERIFY_REQUIRED : 0};
  return context(&conf);
}

/* A loopback pair on TLS: a serves with st, b connects with ct and name.
 * Either context may be NULL for a plain end. */
static void pair(fixture *f, gl_tls *st, gl_tls *ct, const char *name) {
  int fa, fb;
  tcp_pair(&fa, &fb);
  f->a.c = gl_conn_new(&f->env, fa, 0, &end_cbs, &f->a);
  f->b.c = gl_conn_new(&f->env, fb, 0, &end_cbs, &f->b);
  if (st) assert_int_equal(gl_tls_start(f->a.c, st, NULL), GL_OK);
  if (ct) assert_int_equal(gl_tls_start(f->b.c, ct, name), GL_OK);
  if (!st) f->a.ready = 1;
  if (!ct) f->b.ready = 1;
  gl_conn_read(f->a.c, 1);
  gl_conn_read(f->b.c, 1);
}

static int both_done(void *arg) {
  fixture *f = arg;
  return (f->a.ready || f->a.closed) && (f->b.ready || f->b.closed);
}

static int a_closed(void *arg) { return ((fixture *)arg)->a.closed; }
static int b_closed(void *arg) { return ((fixture *)arg)->b.closed; }

static int shake(fixture *f) {
  assert_true(run_until(f->loop, both_done, f, WAIT_S));
  return f->a.ready && f->b.ready && !f->a.closed && !f->b.closed;
}

typedef struct want {
  end *e;
  size_t n;
} want;

static int got_n(void *arg) {
  want *w = arg;
  return w->e->len >= w->n || w->e->closed;
}

/* --- tests ------------------------------------------------------------- */

/* A handshake, then bytes both ways; the reader sees them intact and in
 * order, and the writer's queue drains through TLS's partial writes: 4 MiB
 * outruns the socket buffers by far. */
static void test_echo_both_ways_large(void **state) {
  fixture *f = *state;
  gl_tls *st = server_ctx(), *ct = client_ctx(1);
  const size_t big = 4 << 20;
  char *src = malloc(big);
  for (size_t i = 0; i < big; i++) src[i] = (char)(i * 7 % 251);
  pair(f, st, ct, "localhost");
  assert_true(shake(f));
  assert_string_equal(f->b.info.version, "TLSv1.3");
  assert_int_equal(f->b.info.verify_result, 0);
  assert_int_equal(gl_conn_write(f->a.c, "hello", 5), GL_OK);
  f->b.c->out_max = big;
  assert_int_equal(gl_conn_write(f->b.c, src, big), GL_OK);
  assert_true(gl_conn_queued(f->b.c) > 0); /* the kernel took only part */
  want wa = {&f->a, big}, wb = {&f->b, 5};
  assert_true(run_until(f->loop, got_n, &wa, WAIT_S));
  assert_true(run_until(f->loop, got_n, &wb, WAIT_S));
  assert_int_equal(f->a.len, big);
  assert_memory_equal(f->a.got, src, big);
  assert_memory_equal(f->b.got, "hello", 5);
  assert_int_equal(f->stats.bytes_in, big + 5);
  /* a clean close: close_notify, which the peer reads as the end */
  gl_conn_close(f->b.c, GL_CLOSE_LOCAL, 0);
  assert_true(run_until(f->loop, int_nonzero, &f->a.eof, WAIT_S));
  assert_string_equal(f->a.why, ""); /* not a truncation */
  assert_int_equal(f->stats.errors, 0);
  free(src);
  gl_tls_unref(st);
  gl_tls_unref(ct);
}

/* A stream cut without close_notify is still an end, and named. */
static void test_truncation_is_an_end(void **state) {
  fixture *f = *state;
  gl_tls *st = server_ctx(), *ct = client_ctx(0);
  pair(f, st, ct, NULL);
  assert_true(shake(f));
  shutdown(f->b.c->fd, SHUT_WR); /* TCP FIN, no close_notify */
  assert_true(run_until(f->loop, int_nonzero, &f->a.eof, WAIT_S));
  assert_string_equal(gl_tls_error(f->a.c), "peer closed without close_notify");
  gl_tls_unref(st);
  gl_tls_unref(ct);
}

/* The client checks the server's name; a wrong one fails its handshake
 * with the reason, and it is not counted as an error. */
static void test_client_verifies_name(void **state) {
  fixture *f = *state;
  gl_tls *st = server_ctx(), *ct = client_ctx(1);
  pair(f, st, ct, "127.0.0.1"); /* an IP SAN: checked as an address */
  assert_true(shake(f));
  gl_env_close_all(&f->env);
  memset(&f->a, 0, sizeof f->a);
  memset(&f->b, 0, sizeof f->b);
  pair(f, st, ct, "not-localhost");
  assert_false(shake(f));
  assert_true(run_until(f->loop, b_closed, f, WAIT_S));
  assert_int_equal(f->b.reason, GL_CLOSE_ERROR);
  assert_int_equal(f->b.err, EPROTO);
  assert_non_null(strstr(f->b.why, "certificate verify failed: "));
  assert_int_equal(f->stats.errors, 0);
  gl_tls_unref(st);
  gl_tls_unref(ct);
}

/* A client that trusts another CA refuses the server. */
static void test_client_refuses_unknown_ca(void **state) {
  fixture *f = *state;
  gl_tls_conf cc = {.ca = rogue.cert, .verify = GL_TLS_VERIFY_REQUIRED};
  gl_tls *st = server_ctx(), *ct;
  char err[GL_ERRLEN];
  /* rogue.cert is a leaf: as a CA file it still parses; it trusts nothing
   * that signed the server */
  ct = gl_tls_new(&cc, err, sizeof err);
  assert_non_null(ct);
  pair(f, st, ct, "localhost");
  assert_false(shake(f));
  assert_true(run_until(f->loop, b_closed, f, WAIT_S));
  assert_non_null(strstr(f->b.why, "certificate verify failed"));
  gl_tls_unref(st);
  gl_tls_unref(ct);
}

/* A plain client on a TLS port: the server's handshake fails with a
 * reason; nothing reaches the owner as data. */
static void test_plain_client_on_tls(void **state) {
  fixture *f = *state;
  gl_tls *st = server_ctx();
  pair(f, st, NULL, NULL);
  assert_int_equal(gl_conn_write(f->b.c, "GET / HTTP/1.1\r\n\r\n", 18), GL_OK);
  assert_true(run_until(f->loop, a_closed, f, WAIT_S));
  assert_int_equal(f->a.reason, GL_CLOSE_ERROR);
  assert_int_equal(f->a.err, EPROTO);
  assert_true(f->a.why[0] != 0);
  assert_int_equal(f->a.len, 0);
  assert_int_equal(f->a.ready, 0);
  gl_tls_unref(st);
}

/* mTLS: required, a client without a certificate or with one of another
 * CA is refused; with one of ca, it passes and its certificate is read. */
static void test_client_certificates(void **state) {
  fixture *f = *state;
  gl_tls_conf sc = {.server = 1, .cert = srv.cert, .key = srv.key,
                    .ca = ca.cert, .verify = GL_TLS_VERIFY_REQUIRED};
  gl_tls_conf good = {.ca = ca.cert, .cert = cli.cert, .key = cli.key};
  gl_tls_conf bad = {.ca = ca.cert, .cert = rogue.cert, .key = rogue.key};
  gl_tls *st = context(&sc), *none = client_ctx(0), *gc = context(&good),
         *bc = context(&bad);
  gl_tls *cs[] = {none, bc};
  for (int i = 0; i < 2; i++) {
    pair(f, st, cs[i], NULL);
    run_until(f->loop, a_closed, f, WAIT_S);
    assert_true(f->a.closed);
    assert_int_equal(f->a.ready, 0);
    assert_true(f->a.why[0] != 0);
    gl_env_close_all(&f->env);
    memset(&f->a, 0, sizeof f->a);
    memset(&f->b, 0, sizeof f->b);
  }
  pair(f, st, gc, NULL);
  assert_true(shake(f));
  assert_true(f->a.info.has_peer);
  assert_int_equal(f->a.info.verify_result, 0);
  gl_tls_peer p;
  assert_int_equal(gl_tls_get_peer(f->a.c, &p), GL_OK);
  assert_string_equal(p.subject, "CN=client one");
  assert_string_equal(p.issuer, "CN=glisten test CA");
  assert_int_equal(p.nsan, 2);
  assert_string_equal(p.san, "client.example");
  assert_string_equal(p.san + strlen(p.san) + 1, "spiffe://t/one");
  assert_int_equal(strlen(p.sha256), 64);
  assert_true(p.not_after - p.not_before == 86400 + 3600);
  assert_non_null(strstr(p.pem, "-----BEGIN CERTIFICATE-----"));
  free(p.pem);
  /* the client has no peer certificate check of its own here */
  assert_int_equal(gl_tls_get_peer(f->b.c, &p), GL_OK);
  assert_string_equal(p.subject, "CN=localhost");
  free(p.pem);
  gl_tls_unref(st);
  gl_tls_unref(none);
  gl_tls_unref(gc);
  gl_tls_unref(bc);
}

/* "optional": no certificate passes; a bad one passes too, with the
 * verification's result for the owner to judge. */
static void test_optional_client_certificate(void **state) {
  fixture *f = *state;
  gl_tls_conf sc = {.server = 1, .cert = srv.cert, .key = srv.key,
                    .ca = ca.cert, .verify = GL_TLS_VERIFY_OPTIONAL};
  gl_tls_conf bad = {.ca = ca.cert, .cert = rogue.cert, .key = rogue.key};
  gl_tls *st = context(&sc), *bc = context(&bad);
  pair(f, st, bc, NULL);
  assert_true(shake(f));
  assert_true(f->a.info.has_peer);
  assert_true(f->a.info.verify_result != 0);
  assert_non_null(f->a.info.verify_error);
  gl_tls_unref(st);
  gl_tls_unref(bc);
}

/* ALPN: the server's order of preference wins; no common protocol is no
 * ALPN, not a failure. */
static void test_alpn(void **state) {
  fixture *f = *state;
  static const unsigned char sp[] = "\x02h2\x08http/1.1";
  static const unsigned char cp[] = "\x08http/1.1\x02h2";
  static const unsigned char xp[] = "\x04smtp";
  gl_tls_conf sc = {.server = 1, .cert = srv.cert, .key = srv.key,
                    .alpn = sp, .alpn_len = sizeof sp - 1};
  gl_tls_conf cc = {.alpn = cp, .alpn_len = sizeof cp - 1};
  gl_tls_conf xc = {.alpn = xp, .alpn_len = sizeof xp - 1};
  gl_tls *st = context(&sc), *ct = context(&cc), *xt = context(&xc);
  pair(f, st, ct, NULL);
  assert_true(shake(f));
  assert_int_equal(f->a.info.alpn_len, 2);
  assert_memory_equal(f->a.info.alpn, "h2", 2);
  assert_memory_equal(f->b.info.alpn, "h2", 2);
  gl_env_close_all(&f->env);
  memset(&f->a, 0, sizeof f->a);
  memset(&f->b, 0, sizeof f->b);
  pair(f, st, xt, NULL);
  assert_true(shake(f));
  assert_null(f->a.info.alpn);
  gl_tls_unref(st);
  gl_tls_unref(ct);
  gl_tls_unref(xt);
}

/* An ALPN hook on a context with no list of its own is asked (tls.alpn as
 * a function), and its answer is what the client sees. */
static int pick_last(void *ud, const unsigned char *in, unsigned inlen,
                     const unsigned char **out, unsigned char *outlen) {
  unsigned i = 0, last = 0;
  (void)ud;
  while (i < inlen) {
    last = i;
    i += 1u + in[i];
  }
  *out = in + last + 1;
  *outlen = in[last];
  return 1;
}

static void test_alpn_hook_alone(void **state) {
  fixture *f = *state;
  static const gl_tls_hooks hooks = {NULL, pick_last};
  static const unsigned char cp[] = "\x02h2\x08http/1.1\x03x-3";
  gl_tls_conf cc = {.alpn = cp, .alpn_len = sizeof cp - 1};
  gl_tls *st = server_ctx(), *ct = context(&cc);
  gl_tls_set_hooks(st, &hooks);
  pair(f, st, ct, NULL);
  assert_true(shake(f));
  assert_int_equal(f->a.info.alpn_len, 3);
  assert_memory_equal(f->a.info.alpn, "x-3", 3);
  assert_memory_equal(f->b.info.alpn, "x-3", 3);
  gl_tls_unref(st);
  gl_tls_unref(ct);
}

/* SNI picks the certificate by name, exact or one-label wildcard. */
static void test_sni(void **state) {
  fixture *f = *state;
  gl_tls_conf oc = {.server = 1, .cert = other.cert, .key = other.key};
  gl_tls *st = server_ctx(), *ot = context(&oc), *ct = client_ctx(1);
  const char *names[] = {"localhost", "other.example", "a.wild.example",
                         "OTHER.example"};
  const char *cns[] = {"CN=localhost", "CN=other.example", "CN=other.example",
                       "CN=other.example"};
  assert_int_equal(gl_tls_add_name(st, "other.example", ot), GL_OK);
  assert_int_equal(gl_tls_add_name(st, "*.wild.example", ot), GL_OK);
  for (int i = 0; i < 4; i++) {
    gl_tls_peer p;
    pair(f, st, ct, names[i]);
    assert_true(shake(f));
    assert_string_equal(f->a.info.server_name, names[i]);
    assert_int_equal(gl_tls_get_peer(f->b.c, &p), GL_OK);
    assert_string_equal(p.subject, cns[i]);
    free(p.pem);
    gl_env_close_all(&f->env);
    memset(&f->a, 0, sizeof f->a);
    memset(&f->b, 0, sizeof f->b);
  }
  /* two labels under a wildcard: the default certificate, which does not
   * carry that name */
  pair(f, st, ct, "x.y.wild.example");
  assert_false(shake(f));
  gl_tls_unref(st);
  gl_tls_unref(ot);
  gl_tls_unref(ct);
}

/* Bad material meets a clear error that names it. */
static void test_context_errors(void **state) {
  char err[GL_ERRLEN], path[] = "/tmp/glisten-tls-XXXXXX";
  gl_tls_conf c = {.server = 1, .cert = srv.cert, .key = other.key};
  (void)state;
  assert_null(gl_tls_new(&c, err, sizeof err));
  assert_string_equal(err, "key (PEM text) does not match certificate");
  c.key = "/nonexistent/key.pem";
  assert_null(gl_tls_new(&c, err, sizeof err));
  assert_string_equal(err, "key file /nonexistent/key.pem: No such file or directory");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  write_all(fd, "not a certificate\n", 18);
  close(fd);
  c.cert = path;
  c.key = srv.key;
  assert_null(gl_tls_new(&c, err, sizeof err));
  char expect[GL_ERRLEN];
  snprintf(expect, sizeof expect, "certificate %s: not a PEM certificate", path);
  assert_string_equal(err, expect);
  unlink(path);
  c.cert = NULL;
  assert_null(gl_tls_new(&c, err, sizeof err));
  assert_non_null(strstr(err, "needs a certificate"));
  c.cert = srv.cert;
  c.min_version = "1.1";
  assert_null(gl_tls_new(&c, err, sizeof err));
  assert_string_equal(err, "min_version 1.1: expected \"1.2\" or \"1.3\"");
  c.min_version = NULL;
  c.verify = GL_TLS_VERIFY_REQUIRED;
  assert_null(gl_tls_new(&c, err, sizeof err));
  assert_string_equal(err, "verify of client certificates needs ca");
}

/* An encrypted key needs its password, and only the right one opens it;
 * never a prompt on the terminal. */
static void test_encrypted_key(void **state) {
  char err[GL_ERRLEN], enc[4096];
  BIO *in = BIO_new_mem_buf(srv.key, -1), *out = BIO_new(BIO_s_mem());
  EVP_PKEY *k = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
  char *d;
  long n;
  (void)state;
  PEM_write_bio_PKCS8PrivateKey(out, k, EVP_aes_128_cbc(), "sesame", 6, NULL,
                                NULL);
  n = BIO_get_mem_data(out, &d);
  memcpy(enc, d, (size_t)n);
  enc[n] = 0;
  BIO_free(in);
  BIO_free(out);
  EVP_PKEY_free(k);
  gl_tls_conf c = {.server = 1, .cert = srv.cert, .key = enc};
  assert_null(gl_tls_new(&c, err, sizeof err));
  assert_string_equal(err, "key (PEM text): encrypted: a password is needed");
  c.password = "wrong";
  assert_null(gl_tls_new(&c, err, sizeof err));
  assert_string_equal(err, "key (PEM text): wrong password");
  /* a wrong password whose decryption OpenSSL does not catch (the padding
   * of what it gives happens to check, about one in 256): garbage to
   * decode, and still the wrong password. Searched for on a copy encrypted
   * with one round of PBKDF2, so that a try costs next to nothing. */
  char cheap[4096];
  in = BIO_new_mem_buf(srv.key, -1);
  k = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
  BIO_free(in);
  PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
  X509_SIG *sig = PKCS8_encrypt(-1, EVP_aes_128_cbc(), "sesame", 6, NULL, 0, 1, p8);
  out = BIO_new(BIO_s_mem());
  assert_int_equal(PEM_write_bio_PKCS8(out, sig), 1);
  n = BIO_get_mem_data(out, &d);
  memcpy(cheap, d, (size_t)n);
  cheap[n] = 0;
  BIO_free(out);
  X509_SIG_free(sig);
  PKCS8_PRIV_KEY_INFO_free(p8);
  EVP_PKEY_free(k);
  int found = 0;
  for (int i = 0; i < 5000 && !found; i++) {
    char pw[16];
    unsigned long e;
    int caught = 0;
    BIO *b = BIO_new_mem_buf(cheap, -1);
    snprintf(pw, sizeof pw, "wrong%d", i);
    k = PEM_read_bio_PrivateKey(b, NULL, NULL, pw);
    BIO_free(b);
    while ((e = ERR_get_error()) != 0)
      if (ERR_GET_REASON(e) == EVP_R_BAD_DECRYPT) caught = 1;
    EVP_PKEY_free(k);
    if (k || caught) continue;
    gl_tls_conf cc = {.server = 1, .cert = srv.cert, .key = cheap,
                      .password = pw};
    assert_null(gl_tls_new(&cc, err, sizeof err));
    assert_string_equal(err, "key (PEM text): wrong password");
    found = 1;
  }
  assert_true(found);
  c.password = "sesame";
  gl_tls *t = gl_tls_new(&c, err, sizeof err);
  assert_non_null(t);
  gl_tls_unref(t);
}

/* The plain transport is untouched, and TLS queries on it say so. */
static void test_plain_untouched(void **state) {
  fixture *f = *state;
  pair(f, NULL, NULL, NULL);
  assert_int_equal(gl_conn_write(f->b.c, "plain", 5), GL_OK);
  want w = {&f->a, 5};
  assert_true(run_until(f->loop, got_n, &w, WAIT_S));
  assert_memory_equal(f->a.got, "plain", 5);
  assert_null(gl_tls_error(f->a.c));
  gl_tls_info info;
  assert_int_equal(gl_tls_get_info(f->a.c, &info), GL_ERR);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_echo_both_ways_large, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncation_is_an_end, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_verifies_name, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_refuses_unknown_ca, setup, teardown),
      cmocka_unit_test_setup_teardown(test_plain_client_on_tls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_certificates, setup, teardown),
      cmocka_unit_test_setup_teardown(test_optional_client_certificate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_alpn, setup, teardown),
      cmocka_unit_test_setup_teardown(test_alpn_hook_alone, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sni, setup, teardown),
      cmocka_unit_test(test_context_errors),
      cmocka_unit_test(test_encrypted_key),
      cmocka_unit_test_setup_teardown(test_plain_untouched, setup, teardown),
  };
  return cmocka_run_group_tests(tests, make_all, NULL);
}
