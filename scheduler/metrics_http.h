/* The router's HTTP side for operators (serve.metrics_listen): GET /metrics answers the Prometheus
 * text exposition format, GET /healthz 200 while the router's loop runs (503 once it has not
 * published for 5 s: stuck), GET /readyz 200 once it serves a version (503 before). libmicrohttpd answers on
 * its own thread from the page the router last published, so the router's state is only ever touched by the
 * router's thread. */
#ifndef TESSERA_METRICS_HTTP_H
#define TESSERA_METRICS_HTTP_H

#include <stddef.h>

typedef struct metrics_http metrics_http_t;

/* Listens on `listen` ("HOST:PORT", or ":PORT" for every address). NULL with a message when the
 * address is malformed or cannot be bound. */
metrics_http_t *metrics_http_start(const char *listen, char *err, size_t errlen);
/* Replaces the page /metrics serves (n bytes of text, copied) and the readiness /readyz reports. */
void metrics_http_publish(metrics_http_t *m, const char *text, size_t n, int ready);
/* Stops the server (NULL is a no-op). */
void metrics_http_stop(metrics_http_t *m);

#endif
