/*
 * stats.h: counters one worker keeps. Only that worker's thread writes them.
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
} gl_stats;

#endif
