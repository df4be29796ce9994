/*
 * proxy.h: the PROXY protocol header (HAProxy's, versions 1 and 2) that a
 * proxy in front of the server sends before the client's first byte, to
 * tell the client's real address. Pure bytes: no I/O, no allocation, no
 * state between calls.
 *
 * The caller reads into a buffer of its own and calls gl_proxy_parse with
 * every byte it holds so far, from the connection's first one, until the
 * answer is not GL_PROXY_NEED_MORE. Reading at most GL_PROXY_MAX bytes is
 * always enough: NEED_MORE never comes back for GL_PROXY_MAX bytes or more
 * (a version 1 line ends within 107 bytes, a version 2 header within 16
 * bytes plus the length it declares, and a declared length above
 * GL_PROXY_V2_MAX_LEN is refused as soon as the first 16 bytes are in). A
 * client that does not speak the protocol is refused early: the first byte
 * that cannot continue "PROXY " or the version 2 signature is an error, so
 * "GET / HTTP/1.1" or a TLS ClientHello fails on its first byte, without
 * waiting for more.
 */
#ifndef GL_PROXY_H
#define GL_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define GL_PROXY_V1_MAX 107       /* a version 1 line, CRLF included (spec) */
#define GL_PROXY_V2_MAX_LEN 4096  /* the most a version 2 header may declare
                                     after its 16 bytes (the spec: 65535) */
#define GL_PROXY_MAX (16 + GL_PROXY_V2_MAX_LEN) /* the most ever needed */
#define GL_PROXY_MAX_TLVS 32      /* version 2 TLVs kept; more are refused */
#define GL_PROXY_MAX_SSL_TLVS 16  /* sub-TLVs of the SSL TLV; more refused */

/* What gl_proxy_parse returns besides a count of bytes. */
enum {
  GL_PROXY_NEED_MORE = 0,  /* a header so far: call again with more bytes
                              ("incomplete PROXY header", for a caller whose
                              wait for the rest ran out) */
  GL_PROXY_ENOTPROXY = -1, /* "not a PROXY header" */
  GL_PROXY_EV1LONG = -2,   /* "PROXY v1 header too long" (no CRLF in 107) */
  GL_PROXY_EV1SYNTAX = -3, /* "bad PROXY v1 header" (spaces, CRLF) */
  GL_PROXY_EV1PROTO = -4,  /* "bad PROXY v1 protocol" (not TCP4, TCP6,
                              UNKNOWN) */
  GL_PROXY_EV1ADDR = -5,   /* "bad PROXY v1 address" */
  GL_PROXY_EV1PORT = -6,   /* "bad PROXY v1 port" */
  GL_PROXY_EV2VERSION = -7, /* "unsupported PROXY v2 version" */
  GL_PROXY_EV2COMMAND = -8, /* "bad PROXY v2 command" */
  GL_PROXY_EV2FAMILY = -9,  /* "bad PROXY v2 address family" */
  GL_PROXY_EV2LONG = -10,   /* "PROXY v2 header too long" */
  GL_PROXY_EV2ADDRLEN = -11, /* "bad PROXY v2 address length" */
  GL_PROXY_EV2TLV = -12,    /* "bad PROXY v2 TLV" */
  GL_PROXY_EV2SSL = -13,    /* "bad PROXY v2 SSL TLV" */
  GL_PROXY_EV2TLVS = -14,   /* "too many PROXY v2 TLVs" */
  GL_PROXY_EV2CRC = -15     /* "PROXY v2 CRC32C mismatch" */
};

enum { GL_PROXY_LOCAL = 0, GL_PROXY_PROXY = 1 }; /* gl_proxy.command */

enum { /* gl_proxy.transport, as version 2 numbers them */
  GL_PROXY_UNSPEC = 0,
  GL_PROXY_STREAM = 1,
  GL_PROXY_DGRAM = 2
};

enum { /* TLV types (the spec's PP2_TYPE_* and PP2_SUBTYPE_SSL_*) */
  GL_PP2_ALPN = 0x01,
  GL_PP2_AUTHORITY = 0x02,
  GL_PP2_CRC32C = 0x03,
  GL_PP2_NOOP = 0x04,
  GL_PP2_UNIQUE_ID = 0x05,
  GL_PP2_SSL = 0x20,
  GL_PP2_SSL_VERSION = 0x21,
  GL_PP2_SSL_CN = 0x22,
  GL_PP2_SSL_CIPHER = 0x23,
  GL_PP2_SSL_SIG_ALG = 0x24,
  GL_PP2_SSL_KEY_ALG = 0x25,
  GL_PP2_NETNS = 0x30
};

enum { /* bits of gl_proxy.ssl_client */
  GL_PP2_CLIENT_SSL = 0x01,
  GL_PP2_CLIENT_CERT_CONN = 0x02,
  GL_PP2_CLIENT_CERT_SESS = 0x04
};

/* One TLV. value points into the buffer given to gl_proxy_parse (it is not
 * copied), so it is valid only while that buffer is, unmoved: copy what must
 * outlive it. */
typedef struct gl_proxy_tlv {
  const char *value;
  uint16_t len;
  uint8_t type;
} gl_proxy_tlv;

/* A parsed header. With command GL_PROXY_LOCAL (a version 2 LOCAL, a version
 * 1 UNKNOWN) the proxy speaks for itself: use the connection's own
 * addresses; family is AF_UNSPEC and no address or TLV is filled in. So it is
 * too for a version 2 PROXY whose family or transport is UNSPEC (its address
 * block means nothing to the receiver): command PROXY, family AF_UNSPEC; the
 * caller chooses to use the connection's addresses or to refuse it. */
typedef struct gl_proxy {
  int version;   /* 1 or 2 */
  int command;   /* GL_PROXY_LOCAL or GL_PROXY_PROXY */
  int family;    /* AF_UNSPEC, AF_INET, AF_INET6 or AF_UNIX */
  int transport; /* GL_PROXY_*; version 1's TCP4 and TCP6 are STREAM */
  /* The client's address (src) and the one it connected to (dst), with
   * ss_family set, for AF_INET, AF_INET6 and AF_UNIX. An AF_UNIX sun_path
   * holds the 108 bytes sent as they are: NUL-padded, not NUL-terminated
   * when all 108 are used (read it with strnlen), abstract when its first
   * byte is 0. */
  struct sockaddr_storage src, dst;
  socklen_t src_len, dst_len; /* the size of the sockaddr_* in src, dst */
  uint16_t src_port, dst_port; /* host order (also in src, dst); 0 for
                                  AF_UNIX */
  /* Version 2 only: every TLV in the order sent (NOOPs and unknown types
   * too), the SSL TLV's sub-TLVs apart, and whether a CRC32C TLV was there
   * (a header whose CRC32C does not match is refused). */
  size_t ntlvs;
  gl_proxy_tlv tlvs[GL_PROXY_MAX_TLVS];
  int has_ssl;          /* an SSL TLV was sent (at most one is accepted) */
  uint8_t ssl_client;   /* its GL_PP2_CLIENT_* bits */
  uint32_t ssl_verify;  /* 0: the client's certificate was verified */
  size_t nssl_tlvs;
  gl_proxy_tlv ssl_tlvs[GL_PROXY_MAX_SSL_TLVS];
  int crc_checked;      /* a CRC32C TLV was sent and it matched */
} gl_proxy;

/* Parses the header at the start of p[0..len) into *out. Returns:
 *   > 0  the header's length: the bytes after it are the client's own and
 *        are not looked at (the caller hands them on);
 *   GL_PROXY_NEED_MORE (0)  every byte so far may begin a header: call
 *        again with the same bytes and more (never for len >= GL_PROXY_MAX);
 *   < 0  one of GL_PROXY_E*: not a header, or a bad one; close the
 *        connection (gl_proxy_strerror says why).
 * Every prefix of a header gives NEED_MORE; every prefix of a bad input
 * gives NEED_MORE until the byte that makes it wrong is in, then the error
 * the whole input gives. Parsing is strict. Version 1: single spaces, ports
 * in decimal 0..65535 without a leading 0, addresses inet_pton reads (TCP4:
 * a dotted quad; TCP6: IPv6 text); an UNKNOWN line is accepted whatever
 * follows up to its CRLF. Version 2: version 2, command LOCAL or PROXY;
 * for PROXY, family and transport nibbles the spec knows (0..3, 0..2) and,
 * when neither is UNSPEC, an address block that fits the declared length
 * and TLVs that fill the rest exactly: at most one CRC32C (4 bytes, which
 * must match), at most one SSL (its sub-TLVs in bounds), a UNIQUE_ID of at
 * most 128 bytes. LOCAL's block, and an UNSPEC one, is skipped unread. p
 * may be NULL when len is 0. out is overwritten on every call; it means
 * something only after a success. Thread-safe (no state). */
int gl_proxy_parse(const char *p, size_t len, gl_proxy *out);

/* The reason for an error gl_proxy_parse returned, as a static string. */
const char *gl_proxy_strerror(int err);

/* The first TLV of that type in h (not within the SSL TLV), or NULL. */
const gl_proxy_tlv *gl_proxy_tlv_find(const gl_proxy *h, int type);

#endif
