/*
 * test_proxy.c: gl_proxy_parse, the PROXY protocol header (v1 and v2).
 *
 * Every input goes through parse(), which also feeds it byte by byte: each
 * prefix of a header must give NEED_MORE, each prefix of a bad input
 * NEED_MORE or the same error, and bytes after a header must change
 * nothing. Version 2 inputs are built here (v2_*), with a CRC32C of the
 * test's own; two headers HAProxy 2.6 sent (send-proxy-v2 with its TLVs,
 * and send-proxy) are kept as they came.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "proxy.h"

/* ---- the parser's promises, checked on every input ---- */

/* Parses p[0..n) into *h and returns what gl_proxy_parse did, after
 * checking every prefix and, for a header, the same bytes with a payload
 * after them. */
static int parse(const void *p, size_t n, gl_proxy *h) {
  static char more[GL_PROXY_MAX + 64];
  gl_proxy t;
  int r = gl_proxy_parse(p, n, h);
  size_t upto = r > 0 ? (size_t)r : n;
  assert_true(r <= (int)n);
  for (size_t k = 0; k < upto; k++) {
    int rk = gl_proxy_parse(p, k, &t);
    if (rk != GL_PROXY_NEED_MORE && (r > 0 || rk != r))
      fail_msg("prefix of %zu bytes of %zu: %d (%s), whole: %d", k, n, rk,
               gl_proxy_strerror(rk), r);
  }
  if (r == GL_PROXY_NEED_MORE) assert_true(n < GL_PROXY_MAX);
  if (r > 0) { /* the client's own bytes after the header are not read */
    assert_true(n + 16 <= sizeof more);
    memcpy(more, p, n);
    memcpy(more + n, "\r\nGET / HTTP/1.1", 16);
    assert_int_equal(gl_proxy_parse(more, n + 16, &t), r);
    assert_int_equal(gl_proxy_parse(p, (size_t)r, &t), r);
    const char *lo = p, *hi = lo + r; /* the TLVs point into the header */
    for (size_t i = 0; i < h->ntlvs; i++)
      assert_true(h->tlvs[i].value >= lo &&
                  h->tlvs[i].value + h->tlvs[i].len <= hi);
    for (size_t i = 0; i < h->nssl_tlvs; i++)
      assert_true(h->ssl_tlvs[i].value >= lo &&
                  h->ssl_tlvs[i].value + h->ssl_tlvs[i].len <= hi);
  }
  return r;
}

/* Expects s (a string) to parse to want, saying which input failed. */
#define expect(s, want)                                                       \
  do {                                                                        \
    gl_proxy h_;                                                              \
    int r_ = parse(s, sizeof s - 1, &h_), w_ = (want);                        \
    if (r_ != w_)                                                             \
      fail_msg("\"%s\": %d (%s), want %d (%s)", s, r_, gl_proxy_strerror(r_), \
               w_, gl_proxy_strerror(w_));                                    \
  } while (0)

static void assert_inet(const struct sockaddr_storage *ss, const char *ip,
                        unsigned port) {
  const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
  char text[INET_ADDRSTRLEN];
  assert_int_equal(ss->ss_family, AF_INET);
  assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text));
  assert_string_equal(text, ip);
  assert_int_equal(ntohs(sin->sin_port), port);
}

static void assert_inet6(const struct sockaddr_storage *ss, const char *ip,
                         unsigned port) {
  const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
  char text[INET6_ADDRSTRLEN];
  assert_int_equal(ss->ss_family, AF_INET6);
  assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text));
  assert_string_equal(text, ip);
  assert_int_equal(ntohs(sin6->sin6_port), port);
}

/* ---- version 2 headers, built ---- */

typedef struct v2hdr {
  unsigned char b[GL_PROXY_MAX + 64];
  size_t n;
} v2hdr;

static const unsigned char SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* CRC32C by table, apart from the parser's bit-by-bit one. */
static uint32_t test_crc32c(const unsigned char *p, size_t n) {
  static uint32_t table[256];
  if (!table[1])
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      table[i] = c;
    }
  uint32_t c = 0xFFFFFFFFu;
  while (n--) c = table[(c ^ *p++) & 0xFF] ^ (c >> 8);
  return ~c;
}

static void v2_put(v2hdr *h, const void *p, size_t n) {
  assert_true(h->n + n <= sizeof h->b);
  memcpy(h->b + h->n, p, n);
  h->n += n;
}

/* The signature, version and command (vc), family and transport (ft). */
static void v2_begin(v2hdr *h, unsigned vc, unsigned ft) {
  unsigned char b[4] = {(unsigned char)vc, (unsigned char)ft, 0, 0};
  h->n = 0;
  v2_put(h, SIG, 12);
  v2_put(h, b, 4);
}

static void v2_inet(v2hdr *h, const char *src, const char *dst, unsigned sp,
                    unsigned dp) {
  unsigned char a[4], ports[4] = {sp >> 8, sp & 0xFF, dp >> 8, dp & 0xFF};
  assert_int_equal(inet_pton(AF_INET, src, a), 1);
  v2_put(h, a, 4);
  assert_int_equal(inet_pton(AF_INET, dst, a), 1);
  v2_put(h, a, 4);
  v2_put(h, ports, 4);
}

static void v2_tlv(v2hdr *h, unsigned type, const void *v, size_t n) {
  unsigned char t[3] = {type, n >> 8, n & 0xFF};
  v2_put(h, t, 3);
  v2_put(h, v, n);
}

/* Sets the length to what follows the 16 bytes; returns the header's size. */
static size_t v2_end(v2hdr *h) {
  h->b[14] = (unsigned char)((h->n - 16) >> 8);
  h->b[15] = (unsigned char)((h->n - 16) & 0xFF);
  return h->n;
}

/* Appends a CRC32C TLV and ends the header, as a sender does. */
static size_t v2_end_crc(v2hdr *h) {
  static const unsigned char zero[4];
  v2_tlv(h, GL_PP2_CRC32C, zero, 4);
  v2_end(h);
  uint32_t c = test_crc32c(h->b, h->n);
  unsigned char *v = h->b + h->n - 4;
  v[0] = c >> 24, v[1] = c >> 16 & 0xFF, v[2] = c >> 8 & 0xFF, v[3] = c & 0xFF;
  return h->n;
}

static int v2_parse(v2hdr *h, gl_proxy *out) { return parse(h->b, h->n, out); }

/* ---- version 1 ---- */

static void v1_tcp4_leaves_the_payload(void **state) {
  static const char in[] =
      "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
  gl_proxy h;
  (void)state;
  int r = parse(in, sizeof in - 1, &h);
  assert_int_equal(r, strlen("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"));
  assert_int_equal(h.version, 1);
  assert_int_equal(h.command, GL_PROXY_PROXY);
  assert_int_equal(h.family, AF_INET);
  assert_int_equal(h.transport, GL_PROXY_STREAM);
  assert_inet(&h.src, "192.0.2.1", 56324);
  assert_inet(&h.dst, "198.51.100.2", 443);
  assert_int_equal(h.src_port, 56324);
  assert_int_equal(h.dst_port, 443);
  assert_int_equal(h.src_len, sizeof(struct sockaddr_in));
  assert_int_equal(h.ntlvs, 0);
  expect("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", 44);
}

static void v1_tcp6(void **state) {
  static const char in[] =
      "PROXY TCP6 2001:db8::1 ::ffff:192.0.2.2 0 65535\r\n";
  gl_proxy h;
  (void)state;
  assert_int_equal(parse(in, sizeof in - 1, &h), sizeof in - 1);
  assert_int_equal(h.family, AF_INET6);
  assert_inet6(&h.src, "2001:db8::1", 0);
  assert_inet6(&h.dst, "::ffff:192.0.2.2", 65535);
  assert_int_equal(h.dst_port, 65535);
  assert_int_equal(h.dst_len, sizeof(struct sockaddr_in6));
  /* the longest line the spec counts: 104 bytes */
  expect("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         "FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF 65535 65535\r\n",
         104);
}

static void v1_unknown_is_local(void **state) {
  static const char in[] = "PROXY UNKNOWN ffff:: what ever\r\nX";
  gl_proxy h;
  (void)state;
  assert_int_equal(parse(in, sizeof in - 1, &h), sizeof in - 2);
  assert_int_equal(h.version, 1);
  assert_int_equal(h.command, GL_PROXY_LOCAL);
  assert_int_equal(h.family, AF_UNSPEC);
  assert_int_equal(h.src.ss_family, AF_UNSPEC);
  expect("PROXY UNKNOWN\r\n", 15);
  expect("PROXY UNKNOWN \r\r\n", 17);
  expect("PROXY UNKNOWN a\nb\r\n", 19); /* a line ends with CRLF alone */
}

/* 107 bytes, CRLF included, and not one more. */
static void v1_line_is_at_most_107_bytes(void **state) {
  char line[GL_PROXY_V1_MAX + 2];
  gl_proxy h;
  (void)state;
  memcpy(line, "PROXY UNKNOWN ", 14);
  memset(line + 14, 'x', sizeof line - 14);
  memcpy(line + GL_PROXY_V1_MAX - 2, "\r\n", 2);
  assert_int_equal(parse(line, GL_PROXY_V1_MAX, &h), GL_PROXY_V1_MAX);
  memcpy(line + GL_PROXY_V1_MAX - 2, "xx\r\n", 4);
  assert_int_equal(parse(line, sizeof line, &h), GL_PROXY_EV1LONG);
  assert_int_equal(gl_proxy_parse(line, GL_PROXY_V1_MAX - 1, &h),
                   GL_PROXY_NEED_MORE);
  assert_int_equal(gl_proxy_parse(line, GL_PROXY_V1_MAX, &h),
                   GL_PROXY_EV1LONG);
  /* a TCP6 line of legal parts can still be too long */
  expect("PROXY TCP6 0000:0000:0000:0000:0000:ffff:255.255.255.255 "
         "0000:0000:0000:0000:0000:ffff:255.255.255.255 1 2\r\n",
         GL_PROXY_EV1LONG);
}

static void v1_errors(void **state) {
  gl_proxy h;
  (void)state;
  expect("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", GL_PROXY_ENOTPROXY);
  expect("PROXY\r\n", GL_PROXY_ENOTPROXY);
  expect("PROXZ", GL_PROXY_ENOTPROXY);
  expect("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", GL_PROXY_EV1PROTO);
  expect("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", GL_PROXY_EV1PROTO);
  expect("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", GL_PROXY_EV1PROTO);
  expect("PROXY TCP \r\n", GL_PROXY_EV1PROTO);
  expect("PROXY UNKNOWNS\r\n", GL_PROXY_EV1PROTO);
  /* refused at the first byte no protocol has there */
  assert_int_equal(gl_proxy_parse("PROXY TN", 8, &h), GL_PROXY_EV1PROTO);
  assert_int_equal(gl_proxy_parse("PROXY TCP", 9, &h), GL_PROXY_NEED_MORE);
  expect("PROXY TCP4\r\n", GL_PROXY_EV1SYNTAX);
  expect("PROXY TCP4\r1.2.3.4 5.6.7.8 1 2\r\n", GL_PROXY_EV1SYNTAX);
  expect("PROXY TCP4 \r\n", GL_PROXY_EV1SYNTAX);
  expect("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", GL_PROXY_EV1ADDR);
  expect("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", GL_PROXY_EV1ADDR);
  expect("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", GL_PROXY_EV1ADDR);
  expect("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", GL_PROXY_EV1ADDR);
  expect("PROXY TCP4 ::1 ::1 1 2\r\n", GL_PROXY_EV1ADDR);
  expect("PROXY TCP4 1111.2222.3333.4444", GL_PROXY_EV1ADDR);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n", GL_PROXY_EV1ADDR);
  expect("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", GL_PROXY_EV1ADDR);
  expect("PROXY TCP6 ::1 1:2:3:4:5:6:7:8:9 1 2\r\n", GL_PROXY_EV1ADDR);
  expect("PROXY TCP6 ::g ::1 1 2\r\n", GL_PROXY_EV1ADDR);
  expect("PROXY TCP4 1.2.3.4x 5.6.7.8 1 2\r\n", GL_PROXY_EV1ADDR);
  /* refused at the first byte an address cannot have */
  assert_int_equal(gl_proxy_parse("PROXY TCP4 a", 12, &h), GL_PROXY_EV1ADDR);
  assert_int_equal(gl_proxy_parse("PROXY TCP4 1.2.3.4 :", 20, &h),
                   GL_PROXY_EV1ADDR);
  assert_int_equal(gl_proxy_parse("PROXY TCP6 a:", 13, &h),
                   GL_PROXY_NEED_MORE);
  expect("PROXY TCP4 1.2.3.4\r\n", GL_PROXY_EV1SYNTAX);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 18446744073709551617 2\r\n",
         GL_PROXY_EV1PORT); /* 2^64 + 1 */
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 80a 2\r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", GL_PROXY_EV1PORT);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", GL_PROXY_EV1SYNTAX);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", GL_PROXY_EV1SYNTAX);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", GL_PROXY_EV1SYNTAX);
  expect("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", GL_PROXY_EV1SYNTAX);
}

/* ---- version 2 ---- */

static void v2_local_skips_its_block(void **state) {
  v2hdr b;
  gl_proxy h;
  (void)state;
  v2_begin(&b, 0x20, 0x00);
  assert_int_equal(v2_parse(&b, &h), 16);
  assert_int_equal(h.version, 2);
  assert_int_equal(h.command, GL_PROXY_LOCAL);
  assert_int_equal(h.family, AF_UNSPEC);
  /* LOCAL's family is ignored and its block skipped, whatever it holds */
  v2_begin(&b, 0x20, 0xFF);
  v2_put(&b, "\x01\x00\x05", 3);
  assert_int_equal(v2_end(&b), 19);
  assert_int_equal(v2_parse(&b, &h), 19);
  assert_int_equal(h.command, GL_PROXY_LOCAL);
  assert_int_equal(h.family, AF_UNSPEC);
  assert_int_equal(h.ntlvs, 0);
}

static void v2_inet_stream_and_dgram(void **state) {
  v2hdr b;
  gl_proxy h;
  (void)state;
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "198.51.100.2", 56324, 443);
  v2_end(&b);
  v2_put(&b, "payload", 7);
  assert_int_equal(v2_parse(&b, &h), 28);
  assert_int_equal(h.version, 2);
  assert_int_equal(h.command, GL_PROXY_PROXY);
  assert_int_equal(h.family, AF_INET);
  assert_int_equal(h.transport, GL_PROXY_STREAM);
  assert_inet(&h.src, "192.0.2.1", 56324);
  assert_inet(&h.dst, "198.51.100.2", 443);
  assert_int_equal(h.src_port, 56324);
  assert_int_equal(h.dst_port, 443);
  assert_int_equal(h.src_len, sizeof(struct sockaddr_in));
  v2_begin(&b, 0x21, 0x12);
  v2_inet(&b, "10.0.0.1", "10.0.0.2", 53, 65535);
  v2_end(&b);
  assert_int_equal(v2_parse(&b, &h), 28);
  assert_int_equal(h.transport, GL_PROXY_DGRAM);
  assert_inet(&h.dst, "10.0.0.2", 65535);
}

static void v2_inet6(void **state) {
  v2hdr b;
  gl_proxy h;
  unsigned char a[16];
  (void)state;
  v2_begin(&b, 0x21, 0x21);
  inet_pton(AF_INET6, "2001:db8::1", a);
  v2_put(&b, a, 16);
  inet_pton(AF_INET6, "2001:db8:0:1::2", a);
  v2_put(&b, a, 16);
  v2_put(&b, "\x04\xd2\x01\xbb", 4);
  assert_int_equal(v2_end(&b), 52);
  assert_int_equal(v2_parse(&b, &h), 52);
  assert_int_equal(h.family, AF_INET6);
  assert_int_equal(h.transport, GL_PROXY_STREAM);
  assert_inet6(&h.src, "2001:db8::1", 1234);
  assert_inet6(&h.dst, "2001:db8:0:1::2", 443);
  assert_int_equal(h.src_port, 1234);
  assert_int_equal(h.dst_len, sizeof(struct sockaddr_in6));
}

static void v2_unix_paths(void **state) {
  v2hdr b;
  gl_proxy h;
  char path[108];
  (void)state;
  v2_begin(&b, 0x21, 0x31);
  memset(path, 0, sizeof path);
  strcpy(path, "/run/app.sock");
  v2_put(&b, path, 108);
  memset(path, 0, sizeof path); /* abstract: a 0 first */
  memcpy(path + 1, "abstract", 8);
  v2_put(&b, path, 108);
  assert_int_equal(v2_end(&b), 232);
  assert_int_equal(v2_parse(&b, &h), 232);
  assert_int_equal(h.family, AF_UNIX);
  assert_int_equal(h.transport, GL_PROXY_STREAM);
  const struct sockaddr_un *src = (const struct sockaddr_un *)&h.src;
  const struct sockaddr_un *dst = (const struct sockaddr_un *)&h.dst;
  assert_int_equal(src->sun_family, AF_UNIX);
  assert_string_equal(src->sun_path, "/run/app.sock");
  assert_int_equal(dst->sun_path[0], 0);
  assert_memory_equal(dst->sun_path + 1, "abstract", 9);
  assert_int_equal(h.src_port, 0);
  assert_int_equal(h.src_len, sizeof(struct sockaddr_un));
  /* all 108 bytes used: no terminating 0 */
  v2_begin(&b, 0x21, 0x32);
  memset(path, 'p', sizeof path);
  v2_put(&b, path, 108);
  v2_put(&b, path, 108);
  v2_end(&b);
  assert_int_equal(v2_parse(&b, &h), 232);
  assert_int_equal(h.transport, GL_PROXY_DGRAM);
  src = (const struct sockaddr_un *)&h.src;
  assert_int_equal(strnlen(src->sun_path, sizeof src->sun_path), 108);
}

/* A PROXY whose family or transport is UNSPEC: the block means nothing. */
static void v2_unspec_skips_its_block(void **state) {
  static const unsigned ft[] = {0x00, 0x01, 0x02, 0x10, 0x20, 0x30};
  v2hdr b;
  gl_proxy h;
  (void)state;
  for (size_t i = 0; i < sizeof ft / sizeof ft[0]; i++) {
    v2_begin(&b, 0x21, ft[i]);
    v2_put(&b, "\xff\xff", 2); /* not a TLV */
    v2_end(&b);
    assert_int_equal(v2_parse(&b, &h), 18);
    assert_int_equal(h.command, GL_PROXY_PROXY);
    assert_int_equal(h.family, AF_UNSPEC);
    assert_int_equal(h.transport, GL_PROXY_UNSPEC);
    assert_int_equal(h.src.ss_family, AF_UNSPEC);
    assert_int_equal(h.ntlvs, 0);
  }
}

static void v2_tlvs_point_into_the_input(void **state) {
  static const unsigned char ssl[] = {
      0x07, 0x00, 0x00, 0x00, 0x02,           /* client bits, verify 2 */
      0x21, 0x00, 0x07, 'T', 'L', 'S', 'v', '1', '.', '3',
      0x22, 0x00, 0x04, 'a', 'l', 'i', 'c', 0x25, 0x00, 0x00};
  v2hdr b;
  gl_proxy h;
  (void)state;
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
  v2_tlv(&b, GL_PP2_ALPN, "h2", 2);
  v2_tlv(&b, GL_PP2_AUTHORITY, "example.test", 12);
  v2_tlv(&b, GL_PP2_NOOP, "", 0);
  v2_tlv(&b, GL_PP2_UNIQUE_ID, "id-1", 4);
  v2_tlv(&b, GL_PP2_SSL, ssl, sizeof ssl);
  v2_tlv(&b, GL_PP2_NETNS, "blue", 4);
  v2_tlv(&b, 0xE0, "custom", 6);
  v2_tlv(&b, GL_PP2_AUTHORITY, "second", 6);
  size_t n = v2_end(&b);
  assert_int_equal(v2_parse(&b, &h), n);
  assert_int_equal(h.ntlvs, 8);
  static const unsigned types[] = {GL_PP2_ALPN, GL_PP2_AUTHORITY, GL_PP2_NOOP,
                                   GL_PP2_UNIQUE_ID, GL_PP2_SSL, GL_PP2_NETNS,
                                   0xE0, GL_PP2_AUTHORITY};
  for (size_t i = 0; i < 8; i++) {
    assert_int_equal(h.tlvs[i].type, types[i]);
    assert_true((const unsigned char *)h.tlvs[i].value >= b.b + 28);
    assert_true((const unsigned char *)h.tlvs[i].value + h.tlvs[i].len <=
                b.b + n);
  }
  const gl_proxy_tlv *t = gl_proxy_tlv_find(&h, GL_PP2_AUTHORITY);
  assert_non_null(t);
  assert_int_equal(t->len, 12);
  assert_memory_equal(t->value, "example.test", 12);
  assert_ptr_equal(t->value, (const char *)b.b + 16 + 12 + 5 + 3);
  t = gl_proxy_tlv_find(&h, GL_PP2_ALPN);
  assert_memory_equal(t->value, "h2", 2);
  t = gl_proxy_tlv_find(&h, GL_PP2_NETNS);
  assert_memory_equal(t->value, "blue", 4);
  t = gl_proxy_tlv_find(&h, GL_PP2_UNIQUE_ID);
  assert_memory_equal(t->value, "id-1", 4);
  assert_int_equal(gl_proxy_tlv_find(&h, GL_PP2_NOOP)->len, 0);
  assert_null(gl_proxy_tlv_find(&h, GL_PP2_CRC32C));
  assert_null(gl_proxy_tlv_find(&h, GL_PP2_SSL_VERSION)); /* only nested */
  assert_int_equal(h.crc_checked, 0);
  /* the SSL TLV, its sub-TLVs apart */
  assert_int_equal(h.has_ssl, 1);
  assert_int_equal(h.ssl_client, GL_PP2_CLIENT_SSL | GL_PP2_CLIENT_CERT_CONN |
                                     GL_PP2_CLIENT_CERT_SESS);
  assert_int_equal(h.ssl_verify, 2);
  assert_int_equal(h.nssl_tlvs, 3);
  assert_int_equal(h.ssl_tlvs[0].type, GL_PP2_SSL_VERSION);
  assert_int_equal(h.ssl_tlvs[0].len, 7);
  assert_memory_equal(h.ssl_tlvs[0].value, "TLSv1.3", 7);
  assert_int_equal(h.ssl_tlvs[1].type, GL_PP2_SSL_CN);
  assert_memory_equal(h.ssl_tlvs[1].value, "alic", 4);
  assert_int_equal(h.ssl_tlvs[2].type, GL_PP2_SSL_KEY_ALG);
  assert_int_equal(h.ssl_tlvs[2].len, 0);
  assert_ptr_equal(h.ssl_tlvs[2].value,
                   gl_proxy_tlv_find(&h, GL_PP2_SSL)->value + sizeof ssl);
}

static void v2_crc32c(void **state) {
  v2hdr b;
  gl_proxy h;
  (void)state;
  /* the check value of the test's own CRC32C (RFC 3720, B.4) */
  assert_int_equal(test_crc32c((const unsigned char *)"123456789", 9),
                   0xE3069283u);
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1000, 2000);
  v2_tlv(&b, GL_PP2_AUTHORITY, "example.test", 12);
  size_t n = v2_end_crc(&b);
  assert_int_equal(v2_parse(&b, &h), n);
  assert_int_equal(h.crc_checked, 1);
  assert_int_equal(h.ntlvs, 2);
  assert_int_equal(gl_proxy_tlv_find(&h, GL_PP2_CRC32C)->len, 4);
  /* a CRC32C first, before another TLV */
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1000, 2000);
  v2_end_crc(&b);
  v2_tlv(&b, GL_PP2_NOOP, "pad", 3);
  v2_end(&b);
  uint32_t c;
  memset(b.b + 31, 0, 4);
  c = test_crc32c(b.b, b.n);
  b.b[31] = c >> 24, b.b[32] = c >> 16 & 0xFF, b.b[33] = c >> 8 & 0xFF;
  b.b[34] = c & 0xFF;
  assert_int_equal(v2_parse(&b, &h), b.n);
  assert_int_equal(h.crc_checked, 1);
  /* a bit changed anywhere after the 16 bytes, the value included: refused
   * (a TLV's length: no longer in bounds; the CRC32C's type: no CRC32C) */
  for (size_t i = 16; i < b.n; i++) {
    v2hdr bad = b;
    bad.b[i] ^= 0x10;
    int r = v2_parse(&bad, &h);
    if (i == 29 || i == 30 || i == 36 || i == 37) {
      assert_int_equal(r, GL_PROXY_EV2TLV);
    } else if (i == 28) {
      assert_int_equal(r, b.n);
      assert_int_equal(h.crc_checked, 0);
    } else if (r != GL_PROXY_EV2CRC) {
      fail_msg("byte %zu changed: %d", i, r);
    }
  }
  b.b[13] = 0x12; /* the transport byte: still a valid header, but not this */
  assert_int_equal(v2_parse(&b, &h), GL_PROXY_EV2CRC);
}

static void v2_errors(void **state) {
  v2hdr b;
  gl_proxy h;
  (void)state;
  for (size_t i = 0; i < 12; i++) { /* the signature, each byte of it */
    v2_begin(&b, 0x21, 0x11);
    v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
    v2_end(&b);
    b.b[i] ^= 0x40;
    assert_int_equal(v2_parse(&b, &h), GL_PROXY_ENOTPROXY);
  }
  static const struct {
    unsigned vc, ft;
    int want;
  } bytes[] = {
      {0x11, 0x11, GL_PROXY_EV2VERSION}, {0x31, 0x11, GL_PROXY_EV2VERSION},
      {0x01, 0x11, GL_PROXY_EV2VERSION}, {0x22, 0x11, GL_PROXY_EV2COMMAND},
      {0x2F, 0x11, GL_PROXY_EV2COMMAND}, {0x21, 0x41, GL_PROXY_EV2FAMILY},
      {0x21, 0xF1, GL_PROXY_EV2FAMILY},  {0x21, 0x13, GL_PROXY_EV2FAMILY},
      {0x21, 0x1F, GL_PROXY_EV2FAMILY},  {0x21, 0x11, 28},
  };
  for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++) {
    v2_begin(&b, bytes[i].vc, bytes[i].ft);
    v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
    v2_end(&b);
    int r = v2_parse(&b, &h);
    if (r != bytes[i].want)
      fail_msg("%02x %02x: %d, want %d", bytes[i].vc, bytes[i].ft, r,
               bytes[i].want);
  }
  /* an address block shorter than its family's */
  static const struct {
    unsigned ft;
    size_t len;
  } shorts[] = {{0x11, 11}, {0x12, 0}, {0x21, 35}, {0x22, 12}, {0x31, 215},
                {0x32, 36}};
  for (size_t i = 0; i < sizeof shorts / sizeof shorts[0]; i++) {
    unsigned char zeros[216] = {0};
    v2_begin(&b, 0x21, shorts[i].ft);
    v2_put(&b, zeros, shorts[i].len);
    v2_end(&b);
    assert_int_equal(v2_parse(&b, &h), GL_PROXY_EV2ADDRLEN);
    b.n = 16; /* known from the first 16 bytes */
    assert_int_equal(gl_proxy_parse((const char *)b.b, 16, &h),
                     GL_PROXY_EV2ADDRLEN);
  }
  /* TLVs that do not fill the rest */
  static const struct {
    const char *tlvs;
    size_t len;
    int want;
  } tlvs[] = {
      {"\x01", 1, GL_PROXY_EV2TLV},
      {"\x01\x00", 2, GL_PROXY_EV2TLV},
      {"\x01\x00\x01", 3, GL_PROXY_EV2TLV},
      {"\x01\x00\x02h", 4, GL_PROXY_EV2TLV},
      {"\x01\xff\xffh2", 5, GL_PROXY_EV2TLV},
      {"\x01\x00\x02h2\x04", 6, GL_PROXY_EV2TLV},
      {"\x03\x00\x03\x00\x00\x00", 6, GL_PROXY_EV2TLV},     /* CRC, 3 bytes */
      {"\x03\x00\x05\x00\x00\x00\x00\x00", 8, GL_PROXY_EV2TLV},
      {"\x20\x00\x04\x01\x00\x00\x00", 7, GL_PROXY_EV2SSL}, /* SSL, 4 bytes */
      {"\x20\x00\x06\x01\x00\x00\x00\x00\x21", 9, GL_PROXY_EV2SSL},
      {"\x20\x00\x07\x01\x00\x00\x00\x00\x21\x00", 10, GL_PROXY_EV2SSL},
      {"\x20\x00\x08\x01\x00\x00\x00\x00\x21\x00\x01", 11, GL_PROXY_EV2SSL},
      {"\x20\x00\x09\x01\x00\x00\x00\x00\x21\x00\x02x", 12, GL_PROXY_EV2SSL},
      {"\x20\x00\x05\x01\x00\x00\x00\x00"
       "\x20\x00\x05\x01\x00\x00\x00\x00",
       16, GL_PROXY_EV2SSL}, /* two SSL TLVs */
      {"\x20\x00\x05\x01\x00\x00\x00\x00", 8, 36},
      {"\x20\x00\x08\x01\x00\x00\x00\x00\x21\x00\x00", 11, 39},
  };
  for (size_t i = 0; i < sizeof tlvs / sizeof tlvs[0]; i++) {
    v2_begin(&b, 0x21, 0x11);
    v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
    v2_put(&b, tlvs[i].tlvs, tlvs[i].len);
    v2_end(&b);
    int r = v2_parse(&b, &h);
    if (r != tlvs[i].want)
      fail_msg("TLVs %zu: %d (%s), want %d", i, r, gl_proxy_strerror(r),
               tlvs[i].want);
  }
  /* two CRC32C TLVs, the last one right: still refused */
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
  v2_end_crc(&b);
  v2_end_crc(&b);
  assert_int_equal(v2_parse(&b, &h), GL_PROXY_EV2TLV);
}

static void v2_limits(void **state) {
  static v2hdr b;
  static unsigned char big[GL_PROXY_V2_MAX_LEN];
  gl_proxy h;
  (void)state;
  /* the longest header: GL_PROXY_MAX bytes */
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
  v2_tlv(&b, GL_PP2_NOOP, big, GL_PROXY_V2_MAX_LEN - 12 - 3);
  assert_int_equal(v2_end(&b), GL_PROXY_MAX);
  assert_int_equal(v2_parse(&b, &h), GL_PROXY_MAX);
  assert_int_equal(gl_proxy_parse((const char *)b.b, GL_PROXY_MAX - 1, &h),
                   GL_PROXY_NEED_MORE);
  /* one more: refused from its first 16 bytes */
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
  v2_tlv(&b, GL_PP2_NOOP, big, GL_PROXY_V2_MAX_LEN - 12 - 3 + 1);
  assert_int_equal(v2_end(&b), GL_PROXY_MAX + 1);
  assert_int_equal(gl_proxy_parse((const char *)b.b, 16, &h),
                   GL_PROXY_EV2LONG);
  assert_int_equal(v2_parse(&b, &h), GL_PROXY_EV2LONG);
  v2_begin(&b, 0x21, 0x11); /* the most the spec allows */
  b.b[14] = b.b[15] = 0xFF;
  assert_int_equal(v2_parse(&b, &h), GL_PROXY_EV2LONG);
  /* LOCAL too */
  v2_begin(&b, 0x20, 0x00);
  b.b[14] = 0x10, b.b[15] = 0x01;
  assert_int_equal(v2_parse(&b, &h), GL_PROXY_EV2LONG);
  /* 32 TLVs, then 33 */
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
  for (int i = 0; i < GL_PROXY_MAX_TLVS; i++) v2_tlv(&b, 0xE1, "v", 1);
  assert_int_equal(v2_parse(&b, &h), v2_end(&b));
  assert_int_equal(h.ntlvs, GL_PROXY_MAX_TLVS);
  v2_tlv(&b, GL_PP2_NOOP, "", 0);
  v2_end(&b);
  assert_int_equal(v2_parse(&b, &h), GL_PROXY_EV2TLVS);
  /* 16 SSL sub-TLVs, then 17 */
  unsigned char ssl[5 + 17 * 3] = {GL_PP2_CLIENT_SSL};
  for (int i = 0; i < 17; i++) ssl[5 + 3 * i] = GL_PP2_SSL_CIPHER;
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
  v2_tlv(&b, GL_PP2_SSL, ssl, 5 + 16 * 3);
  assert_int_equal(v2_parse(&b, &h), v2_end(&b));
  assert_int_equal(h.nssl_tlvs, GL_PROXY_MAX_SSL_TLVS);
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
  v2_tlv(&b, GL_PP2_SSL, ssl, sizeof ssl);
  v2_end(&b);
  assert_int_equal(v2_parse(&b, &h), GL_PROXY_EV2TLVS);
  /* a UNIQUE_ID of 128 bytes, then 129 */
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
  v2_tlv(&b, GL_PP2_UNIQUE_ID, big, 128);
  assert_int_equal(v2_parse(&b, &h), v2_end(&b));
  v2_begin(&b, 0x21, 0x11);
  v2_inet(&b, "192.0.2.1", "192.0.2.2", 1, 2);
  v2_tlv(&b, GL_PP2_UNIQUE_ID, big, 129);
  v2_end(&b);
  assert_int_equal(v2_parse(&b, &h), GL_PROXY_EV2TLV);
}

/* What HAProxy 2.6.12 sent: a TLS frontend with "alpn h2,http/1.1" and a
 * server line "send-proxy-v2 proxy-v2-options ssl,cert-cn,ssl-cipher,
 * cert-sig,cert-key,authority,crc32c,unique-id" (openssl s_client
 * -servername example.test -alpn h2), then the client's "hello\n". */
static const unsigned char haproxy_v2[] = {
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
    0x21, 0x11, 0x00, 0x7f, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
    0x92, 0x10, 0x48, 0x0b, 0x03, 0x00, 0x04, 0x20, 0x4c, 0x2a, 0x74, 0x01,
    0x00, 0x02, 0x68, 0x32, 0x02, 0x00, 0x0c, 0x65, 0x78, 0x61, 0x6d, 0x70,
    0x6c, 0x65, 0x2e, 0x74, 0x65, 0x73, 0x74, 0x05, 0x00, 0x13, 0x61, 0x62,
    0x63, 0x2d, 0x31, 0x32, 0x37, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x31, 0x2d,
    0x33, 0x37, 0x33, 0x39, 0x32, 0x20, 0x00, 0x3f, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x21, 0x00, 0x07, 0x54, 0x4c, 0x53, 0x76, 0x31, 0x2e, 0x33, 0x25,
    0x00, 0x07, 0x52, 0x53, 0x41, 0x32, 0x30, 0x34, 0x38, 0x24, 0x00, 0x0a,
    0x52, 0x53, 0x41, 0x2d, 0x53, 0x48, 0x41, 0x32, 0x35, 0x36, 0x23, 0x00,
    0x16, 0x54, 0x4c, 0x53, 0x5f, 0x41, 0x45, 0x53, 0x5f, 0x32, 0x35, 0x36,
    0x5f, 0x47, 0x43, 0x4d, 0x5f, 0x53, 0x48, 0x41, 0x33, 0x38, 0x34, 0x68,
    0x65, 0x6c, 0x6c, 0x6f, 0x0a};

static void haproxy_headers(void **state) {
  gl_proxy h;
  (void)state;
  assert_int_equal(parse(haproxy_v2, sizeof haproxy_v2, &h), 16 + 0x7f);
  assert_memory_equal(haproxy_v2 + 16 + 0x7f, "hello\n", 6);
  assert_int_equal(h.crc_checked, 1);
  assert_inet(&h.src, "127.0.0.1", 37392);
  assert_inet(&h.dst, "127.0.0.1", 18443);
  assert_int_equal(h.ntlvs, 5);
  assert_memory_equal(gl_proxy_tlv_find(&h, GL_PP2_ALPN)->value, "h2", 2);
  assert_memory_equal(gl_proxy_tlv_find(&h, GL_PP2_AUTHORITY)->value,
                      "example.test", 12);
  assert_memory_equal(gl_proxy_tlv_find(&h, GL_PP2_UNIQUE_ID)->value,
                      "abc-127.0.0.1-37392", 19);
  assert_int_equal(h.has_ssl, 1);
  assert_int_equal(h.ssl_client, GL_PP2_CLIENT_SSL);
  assert_int_equal(h.ssl_verify, 0);
  assert_int_equal(h.nssl_tlvs, 4);
  assert_int_equal(h.ssl_tlvs[0].type, GL_PP2_SSL_VERSION);
  assert_memory_equal(h.ssl_tlvs[0].value, "TLSv1.3", 7);
  assert_int_equal(h.ssl_tlvs[3].type, GL_PP2_SSL_CIPHER);
  assert_memory_equal(h.ssl_tlvs[3].value, "TLS_AES_256_GCM_SHA384", 22);
  /* its client's port, one byte off: the CRC32C no longer matches */
  unsigned char bad[sizeof haproxy_v2];
  memcpy(bad, haproxy_v2, sizeof bad);
  bad[25] ^= 1;
  assert_int_equal(parse(bad, sizeof bad, &h), GL_PROXY_EV2CRC);
  /* "send-proxy" from an IPv6 frontend */
  expect("PROXY TCP6 ::1 ::1 45836 18445\r\nhello\n", 32);
}

/* A client that speaks something else is refused on its first bytes. */
static void other_protocols_fail_at_once(void **state) {
  static const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
  gl_proxy h;
  (void)state;
  assert_int_equal(gl_proxy_parse("G", 1, &h), GL_PROXY_ENOTPROXY);
  expect("GET / HTTP/1.1\r\n", GL_PROXY_ENOTPROXY);
  assert_int_equal(gl_proxy_parse((const char *)hello, 1, &h),
                   GL_PROXY_ENOTPROXY);
  assert_int_equal(parse(hello, sizeof hello, &h), GL_PROXY_ENOTPROXY);
  assert_int_equal(gl_proxy_parse("PR", 2, &h), GL_PROXY_NEED_MORE);
  assert_int_equal(gl_proxy_parse("PRI", 3, &h), GL_PROXY_ENOTPROXY);
  expect("PRI * HTTP/2.0\r\n", GL_PROXY_ENOTPROXY);
  expect("POST / HTTP/1.1\r\n", GL_PROXY_ENOTPROXY);
  expect("\r\n\r\nGET", GL_PROXY_ENOTPROXY);
  expect("SSH-2.0-OpenSSH\r\n", GL_PROXY_ENOTPROXY);
  assert_int_equal(gl_proxy_parse(NULL, 0, &h), GL_PROXY_NEED_MORE);
}

static void every_error_has_its_words(void **state) {
  static const char *const words[] = {
      "not a PROXY header", "PROXY v1 header too long", "bad PROXY v1 header",
      "bad PROXY v1 protocol", "bad PROXY v1 address", "bad PROXY v1 port",
      "unsupported PROXY v2 version", "bad PROXY v2 command",
      "bad PROXY v2 address family", "PROXY v2 header too long",
      "bad PROXY v2 address length", "bad PROXY v2 TLV",
      "bad PROXY v2 SSL TLV", "too many PROXY v2 TLVs",
      "PROXY v2 CRC32C mismatch"};
  (void)state;
  for (int i = 0; i < (int)(sizeof words / sizeof words[0]); i++)
    assert_string_equal(gl_proxy_strerror(-1 - i), words[i]);
  assert_string_equal(gl_proxy_strerror(-16), "unknown PROXY error");
  /* for a caller that stops waiting for the rest */
  assert_string_equal(gl_proxy_strerror(GL_PROXY_NEED_MORE),
                      "incomplete PROXY header");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(v1_tcp4_leaves_the_payload),
      cmocka_unit_test(v1_tcp6),
      cmocka_unit_test(v1_unknown_is_local),
      cmocka_unit_test(v1_line_is_at_most_107_bytes),
      cmocka_unit_test(v1_errors),
      cmocka_unit_test(v2_local_skips_its_block),
      cmocka_unit_test(v2_inet_stream_and_dgram),
      cmocka_unit_test(v2_inet6),
      cmocka_unit_test(v2_unix_paths),
      cmocka_unit_test(v2_unspec_skips_its_block),
      cmocka_unit_test(v2_tlvs_point_into_the_input),
      cmocka_unit_test(v2_crc32c),
      cmocka_unit_test(v2_errors),
      cmocka_unit_test(v2_limits),
      cmocka_unit_test(haproxy_headers),
      cmocka_unit_test(other_protocols_fail_at_once),
      cmocka_unit_test(every_error_has_its_words),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
