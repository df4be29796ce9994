/*
 * stats.h: counters one worker keeps. Only that worker's thread writes
 * them (GL_STAT_ADD); other threads read them with GL_STAT_GET. Relaxed
 * atomic loads and stores make that well defined at the cost of plain moves.
 */
#ifndef GL_STATS_H
#define GL_STATS_H

typedef struct gl_stats {
  long long connections;        /* open now (accepted and connected) */
  unsigned long long accepted;  /* accepted since start */
  unsigned long long closed;    /* closed since start (all kinds) */
  unsigned long long bytes_in;  /* read from sockets */
  unsigned long long bytes_out; /* written to sockets */
  unsigned long long errors;    /* socket failures, script errors, refusals */
  unsigned long long accept_errors; /* failed accept calls */
  unsigned long long dropped;   /* messages a full mailbox or inbox refused */
  unsigned long long refused;   /* connections closed at once: past a cap per
                                   client address */
  unsigned long long tls_failed;   /* TLS handshakes that failed or timed out
                                      before the script saw the connection */
  unsigned long long proxy_failed; /* PROXY headers missing, bad or late */
} gl_stats;

#define GL_STAT_ADD(field, n)                                              \
  __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + \
                                 (n),                                      \
                   __ATOMIC_RELAXED)
#define GL_STAT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

#endif
