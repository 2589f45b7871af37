/* The router's HTTP side for operators (serve.metrics_listen): GET /metrics answers the Prometheus
 * text exposition format, GET /healthz 200 while the router's loop runs (503 once it has not
 * published for 5 s: stuck), GET /readyz 200 once it serves a version (503 before). libmicrohttpd answers on
 * its own thread from the page the router last published, so the router's state is only ever touched by the
 * router's thread. */
#ifndef TESSERA_METRICS_HTTP_H
#define TESSERA_METRICS_HTTP_H

#include <stddef.h>
#include <stdio.h>

typedef struct metrics_http metrics_http_t;

/* Listens on `listen` ("HOST:PORT", or ":PORT" for every address). NULL with a message when the
 * address is malformed or cannot be bound. */
metrics_http_t *metrics_http_start(const char *listen, char *err, size_t errlen);
/* Replaces the page /metrics serves (n bytes of text, copied) and the readiness /readyz reports. */
void metrics_http_publish(metrics_http_t *m, const char *text, size_t n, int ready);
/* Stops the server (NULL is a no-op). */
void metrics_http_stop(metrics_http_t *m);

/* Writing a page: a family's HELP and TYPE lines, then its samples. */
void metrics_put_family(FILE *f, const char *name, const char *type, const char *help);
/* name{KEY="VALUE"[,extra]} v: VALUE escaped, extra ready-made labels (k="v",...) or NULL. */
void metrics_put_sample(FILE *f, const char *key, const char *value, const char *name, const char *extra,
                        double v);
/* A label value as the exposition format wants it: backslash, quote and newline escaped. */
void metrics_put_label(FILE *f, const char *v);

#endif
