/*
 * proxy.c: the PROXY protocol header, versions 1 and 2 (proxy.h).
 *
 * Both versions are read left to right in one pass that stops at the first
 * byte that is wrong, or at the end of what has arrived: so a prefix of a
 * header gives NEED_MORE, and a prefix of a bad one NEED_MORE or the same
 * error, and a client speaking another protocol is refused on its first
 * byte. Nothing is kept between calls: a caller with more bytes starts over,
 * which costs little at these sizes (at most GL_PROXY_MAX bytes, once per
 * connection).
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

_Static_assert(sizeof(((struct sockaddr_un *)0)->sun_path) >= 108,
               "a version 2 AF_UNIX address is 108 bytes");

static const unsigned char V2_SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

const char *gl_proxy_strerror(int err) {
  switch (err) {
  case GL_PROXY_NEED_MORE: return "incomplete PROXY header";
  case GL_PROXY_ENOTPROXY: return "not a PROXY header";
  case GL_PROXY_EV1LONG: return "PROXY v1 header too long";
  case GL_PROXY_EV1SYNTAX: return "bad PROXY v1 header";
  case GL_PROXY_EV1PROTO: return "bad PROXY v1 protocol";
  case GL_PROXY_EV1ADDR: return "bad PROXY v1 address";
  case GL_PROXY_EV1PORT: return "bad PROXY v1 port";
  case GL_PROXY_EV2VERSION: return "unsupported PROXY v2 version";
  case GL_PROXY_EV2COMMAND: return "bad PROXY v2 command";
  case GL_PROXY_EV2FAMILY: return "bad PROXY v2 address family";
  case GL_PROXY_EV2LONG: return "PROXY v2 header too long";
  case GL_PROXY_EV2ADDRLEN: return "bad PROXY v2 address length";
  case GL_PROXY_EV2TLV: return "bad PROXY v2 TLV";
  case GL_PROXY_EV2SSL: return "bad PROXY v2 SSL TLV";
  case GL_PROXY_EV2TLVS: return "too many PROXY v2 TLVs";
  case GL_PROXY_EV2CRC: return "PROXY v2 CRC32C mismatch";
  default: return "unknown PROXY error";
  }
}

const gl_proxy_tlv *gl_proxy_tlv_find(const gl_proxy *h, int type) {
  for (size_t i = 0; i < h->ntlvs; i++)
    if (h->tlvs[i].type == type) return &h->tlvs[i];
  return NULL;
}

static void set_inet(struct sockaddr_storage *ss, socklen_t *sl,
                     const void *a, uint16_t port) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  memcpy(&sin.sin_addr, a, 4);
  memcpy(ss, &sin, sizeof sin);
  *sl = sizeof sin;
}

static void set_inet6(struct sockaddr_storage *ss, socklen_t *sl,
                      const void *a, uint16_t port) {
  struct sockaddr_in6 sin6;
  memset(&sin6, 0, sizeof sin6);
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  memcpy(&sin6.sin6_addr, a, 16);
  memcpy(ss, &sin6, sizeof sin6);
  *sl = sizeof sin6;
}

static void set_unix(struct sockaddr_storage *ss, socklen_t *sl,
                     const void *path) {
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, 108);
  memcpy(ss, &sun, sizeof sun);
  *sl = sizeof sun;
}

/* ---- version 1: "PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n" ---- */

/* The end of the bytes a line may use: NEED_MORE before 107 of them, too
 * long at 107. */
#define V1_END(n) ((n) < GL_PROXY_V1_MAX ? GL_PROXY_NEED_MORE : GL_PROXY_EV1LONG)

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int is_hex(unsigned char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A field ended by c, which is not the byte that should end it: a space or
 * a line's end out of place is the line's fault, anything else the
 * field's (err). */
static int v1_misplaced(unsigned char c, int err) {
  return c == ' ' || c == '\r' || c == '\n' ? GL_PROXY_EV1SYNTAX : err;
}

/* One address of a TCP4 (v6 0) or TCP6 (v6 1) line, from p[*i], then the
 * space after it. Fills a (4 or 16 bytes) and moves *i past the space.
 * Returns 1, or NEED_MORE / an error for parse_v1 to return. */
static int v1_addr(const unsigned char *p, size_t n, size_t *i, int v6,
                   unsigned char *a) {
  char text[INET6_ADDRSTRLEN];
  size_t max = v6 ? INET6_ADDRSTRLEN - 1 : INET_ADDRSTRLEN - 1, k = 0;
  for (;; k++) {
    if (*i + k >= n) return V1_END(n);
    unsigned char c = p[*i + k];
    if (!(is_digit(c) || c == '.' || (v6 && (c == ':' || is_hex(c))))) break;
    if (k == max) return GL_PROXY_EV1ADDR;
    text[k] = (char)c;
  }
  if (p[*i + k] != ' ') return v1_misplaced(p[*i + k], GL_PROXY_EV1ADDR);
  text[k] = '\0';
  if (inet_pton(v6 ? AF_INET6 : AF_INET, text, a) != 1)
    return GL_PROXY_EV1ADDR;
  *i += k + 1;
  return 1;
}

/* One port, from p[*i], then the byte end after it: decimal 0..65535 with no
 * leading 0. Moves *i past end. Returns 1, or NEED_MORE / an error. */
static int v1_port(const unsigned char *p, size_t n, size_t *i,
                   unsigned char end, uint16_t *port) {
  unsigned long v = 0;
  size_t k = 0;
  for (;; k++) {
    if (*i + k >= n) return V1_END(n);
    unsigned char c = p[*i + k];
    if (!is_digit(c)) break;
    if ((k == 1 && v == 0) || k == 5) return GL_PROXY_EV1PORT;
    v = v * 10 + (unsigned long)(c - '0');
  }
  if (k == 0 || v > 65535) return GL_PROXY_EV1PORT;
  if (p[*i + k] != end) return v1_misplaced(p[*i + k], GL_PROXY_EV1PORT);
  *port = (uint16_t)v;
  *i += k + 1;
  return 1;
}

static int parse_v1(const unsigned char *p, size_t len, gl_proxy *out) {
  static const char *const protos[] = {"TCP4", "TCP6", "UNKNOWN"};
  size_t n = len < GL_PROXY_V1_MAX ? len : GL_PROXY_V1_MAX, i, k;
  int proto = -1, r;
  for (i = 0; i < 6; i++) {
    if (i >= n) return GL_PROXY_NEED_MORE;
    if (p[i] != (unsigned char)"PROXY "[i]) return GL_PROXY_ENOTPROXY;
  }
  /* the protocol: refused at the first byte none of the three can have */
  for (k = 0;; k++) {
    if (i + k >= n) return V1_END(n);
    unsigned char c = p[i + k];
    if (c == ' ' || c == '\r') break;
    int any = 0;
    for (int j = 0; j < 3; j++)
      if (k < strlen(protos[j]) && protos[j][k] == c &&
          memcmp(protos[j], p + i, k) == 0)
        any = 1;
    if (!any) return GL_PROXY_EV1PROTO;
  }
  for (int j = 0; j < 3; j++)
    if (k == strlen(protos[j]) && memcmp(protos[j], p + i, k) == 0) proto = j;
  if (proto < 0) return GL_PROXY_EV1PROTO;
  i += k;
  out->version = 1;
  if (proto == 2) { /* UNKNOWN: whatever comes up to the CRLF is ignored */
    for (; i + 1 < n; i++)
      if (p[i] == '\r' && p[i + 1] == '\n') return (int)(i + 2);
    return V1_END(n);
  }
  if (p[i] != ' ') return GL_PROXY_EV1SYNTAX;
  i++;
  int v6 = proto == 1;
  unsigned char sa[16], da[16];
  uint16_t sp, dp;
  if ((r = v1_addr(p, n, &i, v6, sa)) != 1) return r;
  if ((r = v1_addr(p, n, &i, v6, da)) != 1) return r;
  if ((r = v1_port(p, n, &i, ' ', &sp)) != 1) return r;
  if ((r = v1_port(p, n, &i, '\r', &dp)) != 1) return r;
  if (i >= n) return V1_END(n);
  if (p[i] != '\n') return GL_PROXY_EV1SYNTAX;
  out->command = GL_PROXY_PROXY;
  out->family = v6 ? AF_INET6 : AF_INET;
  out->transport = GL_PROXY_STREAM;
  out->src_port = sp;
  out->dst_port = dp;
  if (v6) {
    set_inet6(&out->src, &out->src_len, sa, sp);
    set_inet6(&out->dst, &out->dst_len, da, dp);
  } else {
    set_inet(&out->src, &out->src_len, sa, sp);
    set_inet(&out->dst, &out->dst_len, da, dp);
  }
  return (int)(i + 1);
}

/* ---- version 2: the signature, 4 bytes, an address block, TLVs ---- */

static unsigned be16(const unsigned char *p) {
  return (unsigned)p[0] << 8 | p[1];
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: a
 * header is checked once and is at most GL_PROXY_MAX bytes. crc is the
 * running value, ~0 to start; the result is complemented by the caller. */
static uint32_t crc32c(uint32_t crc, const unsigned char *p, size_t n) {
  while (n--) {
    crc ^= *p++;
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & -(crc & 1));
  }
  return crc;
}

/* The SSL TLV's value v[0..n): client (1 byte), verify (4), sub-TLVs that
 * fill the rest. */
static int v2_ssl(const unsigned char *v, size_t n, gl_proxy *out) {
  if (out->has_ssl || n < 5) return GL_PROXY_EV2SSL;
  out->has_ssl = 1;
  out->ssl_client = v[0];
  out->ssl_verify = be32(v + 1);
  for (size_t o = 5; o < n;) {
    if (n - o < 3) return GL_PROXY_EV2SSL;
    size_t sl = be16(v + o + 1);
    if (sl > n - o - 3) return GL_PROXY_EV2SSL;
    if (out->nssl_tlvs == GL_PROXY_MAX_SSL_TLVS) return GL_PROXY_EV2TLVS;
    gl_proxy_tlv *t = &out->ssl_tlvs[out->nssl_tlvs++];
    t->type = v[o];
    t->len = (uint16_t)sl;
    t->value = (const char *)v + o + 3;
    o += 3 + sl;
  }
  return 0;
}

/* The TLVs in p[off..end), where p is the whole header. */
static int v2_tlvs(const unsigned char *p, size_t off, size_t end,
                   gl_proxy *out) {
  size_t crc_at = 0; /* where the CRC32C value is, if any (never at 0) */
  int r;
  while (off < end) {
    if (end - off < 3) return GL_PROXY_EV2TLV;
    unsigned type = p[off];
    size_t tl = be16(p + off + 1), v = off + 3;
    if (tl > end - v) return GL_PROXY_EV2TLV;
    switch (type) {
    case GL_PP2_CRC32C:
      if (tl != 4 || crc_at) return GL_PROXY_EV2TLV;
      crc_at = v;
      break;
    case GL_PP2_UNIQUE_ID:
      if (tl > 128) return GL_PROXY_EV2TLV;
      break;
    case GL_PP2_SSL:
      if ((r = v2_ssl(p + v, tl, out)) != 0) return r;
      break;
    }
    if (out->ntlvs == GL_PROXY_MAX_TLVS) return GL_PROXY_EV2TLVS;
    gl_proxy_tlv *t = &out->tlvs[out->ntlvs++];
    t->type = (uint8_t)type;
    t->len = (uint16_t)tl;
    t->value = (const char *)p + v;
    off = v + tl;
  }
  if (crc_at) { /* over the whole header, its own value taken as zeros */
    static const unsigned char zero[4];
    uint32_t c = crc32c(0xFFFFFFFFu, p, crc_at);
    c = crc32c(c, zero, 4);
    c = ~crc32c(c, p + crc_at + 4, end - crc_at - 4);
    if (c != be32(p + crc_at)) return GL_PROXY_EV2CRC;
    out->crc_checked = 1;
  }
  return 0;
}

static int parse_v2(const unsigned char *p, size_t len, gl_proxy *out) {
  static const size_t asize[4] = {0, 12, 36, 216}; /* by family */
  size_t i;
  for (i = 0; i < 12; i++) {
    if (i >= len) return GL_PROXY_NEED_MORE;
    if (p[i] != V2_SIG[i]) return GL_PROXY_ENOTPROXY;
  }
  if (len < 13) return GL_PROXY_NEED_MORE;
  if (p[12] >> 4 != 2) return GL_PROXY_EV2VERSION;
  int cmd = p[12] & 0x0F;
  if (cmd > GL_PROXY_PROXY) return GL_PROXY_EV2COMMAND;
  if (len < 14) return GL_PROXY_NEED_MORE;
  unsigned fam = p[13] >> 4, tr = p[13] & 0x0F;
  if (cmd == GL_PROXY_PROXY && (fam > 3 || tr > 2)) return GL_PROXY_EV2FAMILY;
  if (len < 16) return GL_PROXY_NEED_MORE;
  size_t blen = be16(p + 14), end = 16 + blen;
  if (blen > GL_PROXY_V2_MAX_LEN) return GL_PROXY_EV2LONG;
  /* LOCAL's block, and one for an UNSPEC family or transport, is skipped */
  int addrs = cmd == GL_PROXY_PROXY && fam != 0 && tr != 0;
  if (addrs && blen < asize[fam]) return GL_PROXY_EV2ADDRLEN;
  if (len < end) return GL_PROXY_NEED_MORE;
  out->version = 2;
  out->command = cmd;
  out->family = AF_UNSPEC;
  out->transport = GL_PROXY_UNSPEC;
  if (!addrs) return (int)end;
  out->transport = (int)tr;
  const unsigned char *a = p + 16;
  switch (fam) {
  case 1:
    out->family = AF_INET;
    out->src_port = (uint16_t)be16(a + 8);
    out->dst_port = (uint16_t)be16(a + 10);
    set_inet(&out->src, &out->src_len, a, out->src_port);
    set_inet(&out->dst, &out->dst_len, a + 4, out->dst_port);
    break;
  case 2:
    out->family = AF_INET6;
    out->src_port = (uint16_t)be16(a + 32);
    out->dst_port = (uint16_t)be16(a + 34);
    set_inet6(&out->src, &out->src_len, a, out->src_port);
    set_inet6(&out->dst, &out->dst_len, a + 16, out->dst_port);
    break;
  default:
    out->family = AF_UNIX;
    set_unix(&out->src, &out->src_len, a);
    set_unix(&out->dst, &out->dst_len, a + 108);
    break;
  }
  int r = v2_tlvs(p, 16 + asize[fam], end, out);
  return r ? r : (int)end;
}

int gl_proxy_parse(const char *p, size_t len, gl_proxy *out) {
  memset(out, 0, sizeof *out);
  if (len == 0) return GL_PROXY_NEED_MORE;
  const unsigned char *u = (const unsigned char *)p;
  if (u[0] == 'P') return parse_v1(u, len, out);
  if (u[0] == V2_SIG[0]) return parse_v2(u, len, out);
  return GL_PROXY_ENOTPROXY;
}
