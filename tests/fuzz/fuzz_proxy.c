/*
 * fuzz_proxy.c: libFuzzer harness for gl_proxy_parse (core/proxy.c).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore \
 *     tests/fuzz/fuzz_proxy.c core/proxy.c -o fuzz_proxy
 *   cp -r tests/fuzz/corpus/proxy /tmp/corpus   (the fuzzer adds files)
 *   ./fuzz_proxy -max_len=4200 -dict=tests/fuzz/proxy.dict /tmp/corpus
 *
 * Besides what the sanitizers catch, it checks the parser's promises
 * (proxy.h) on every input: a count no larger than the input; TLVs inside
 * the header and SSL sub-TLVs inside the SSL TLV; every prefix of a header
 * NEED_MORE, of a bad input NEED_MORE or the same error; NEED_MORE never
 * for GL_PROXY_MAX bytes or more; the bytes after a header not read; the
 * same answer twice. A broken promise aborts, which the fuzzer reports with
 * the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                             \
  do {                                                                       \
    if (!(c)) {                                                              \
      fprintf(stderr, "fuzz_proxy: %s (line %d)\n", #c, __LINE__);           \
      abort();                                                               \
    }                                                                        \
  } while (0)

static int within(const gl_proxy_tlv *t, const char *lo, const char *hi) {
  return t->value >= lo && t->value <= hi && (size_t)(hi - t->value) >= t->len;
}

/* The answers that must be the same for the same header bytes. */
static int same(const gl_proxy *a, const gl_proxy *b) {
  if (a->version != b->version || a->command != b->command ||
      a->family != b->family || a->transport != b->transport ||
      a->src_len != b->src_len || a->dst_len != b->dst_len ||
      a->src_port != b->src_port || a->dst_port != b->dst_port ||
      a->ntlvs != b->ntlvs || a->has_ssl != b->has_ssl ||
      a->ssl_client != b->ssl_client || a->ssl_verify != b->ssl_verify ||
      a->nssl_tlvs != b->nssl_tlvs || a->crc_checked != b->crc_checked)
    return 0;
  if (memcmp(&a->src, &b->src, a->src_len) ||
      memcmp(&a->dst, &b->dst, a->dst_len))
    return 0;
  for (size_t i = 0; i < a->ntlvs; i++)
    if (a->tlvs[i].type != b->tlvs[i].type || a->tlvs[i].len != b->tlvs[i].len ||
        a->tlvs[i].value != b->tlvs[i].value)
      return 0;
  for (size_t i = 0; i < a->nssl_tlvs; i++)
    if (a->ssl_tlvs[i].type != b->ssl_tlvs[i].type ||
        a->ssl_tlvs[i].len != b->ssl_tlvs[i].len ||
        a->ssl_tlvs[i].value != b->ssl_tlvs[i].value)
      return 0;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static gl_proxy h, again;
  const char *p = (const char *)data;
  int r = gl_proxy_parse(p, size, &h);

  CHECK(r <= (int)size);
  if (r <= 0) CHECK(strcmp(gl_proxy_strerror(r), "unknown PROXY error") != 0);
  if (r == GL_PROXY_NEED_MORE) CHECK(size < GL_PROXY_MAX);
  CHECK(gl_proxy_parse(p, size, &again) == r);

  size_t upto = r > 0 ? (size_t)r : size;
  for (size_t k = 0; k < upto; k++) {
    int rk = gl_proxy_parse(p, k, &again);
    CHECK(rk == GL_PROXY_NEED_MORE || (r < 0 && rk == r));
  }
  if (r <= 0) return 0;

  /* a header */
  CHECK(h.version == 1 || h.version == 2);
  CHECK(h.version == 1 ? r <= GL_PROXY_V1_MAX : r <= GL_PROXY_MAX);
  CHECK(h.command == GL_PROXY_LOCAL || h.command == GL_PROXY_PROXY);
  CHECK(h.ntlvs <= GL_PROXY_MAX_TLVS && h.nssl_tlvs <= GL_PROXY_MAX_SSL_TLVS);
  CHECK(h.src.ss_family == h.family && h.dst.ss_family == h.family);
  if (h.version == 1 || h.family == AF_UNSPEC) CHECK(h.ntlvs == 0);
  if (!h.has_ssl) CHECK(h.nssl_tlvs == 0);
  for (size_t i = 0; i < h.ntlvs; i++) CHECK(within(&h.tlvs[i], p, p + r));
  const gl_proxy_tlv *ssl = gl_proxy_tlv_find(&h, GL_PP2_SSL);
  CHECK(!ssl == !h.has_ssl);
  for (size_t i = 0; i < h.nssl_tlvs; i++) /* within the SSL TLV's value */
    CHECK(within(&h.ssl_tlvs[i], ssl->value + 5, ssl->value + ssl->len));
  if (h.crc_checked) CHECK(gl_proxy_tlv_find(&h, GL_PP2_CRC32C) != NULL);
  /* the header alone: the same answer, so nothing after it was read */
  CHECK(gl_proxy_parse(p, (size_t)r, &again) == r);
  CHECK(same(&h, &again));
  return 0;
}
