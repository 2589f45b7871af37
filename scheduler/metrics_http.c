#include "metrics_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "check.h"
#include "util.h"

struct metrics_http {
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock; /* guards page, len, ready: the router publishes, MHD's thread reads */
    char *page;
    size_t len;
    int ready;
    double published; /* now_s() of the last publish: /healthz fails when it is old */
};

#define STALE_S 5.0 /* the router publishes every 0.1 s; a loop silent this long is stuck */

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *type, const char *body,
                              size_t n) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **state) {
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)state;
    metrics_http_t *m = cls;
    static const char *text = "text/plain; charset=utf-8";
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, "GET only\n", 9);
    pthread_mutex_lock(&m->lock);
    enum MHD_Result rc;
    if (!strcmp(url, "/healthz"))
        rc = now_s() - m->published <= STALE_S ? answer(c, MHD_HTTP_OK, text, "ok\n", 3)
                                               : answer(c, MHD_HTTP_SERVICE_UNAVAILABLE, text,
                                                        "the router's loop has not run for 5 s\n", 38);
    else if (!strcmp(url, "/metrics"))
        rc = answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", m->page ? m->page : "",
                    m->len);
    else if (!strcmp(url, "/readyz"))
        rc = m->ready ? answer(c, MHD_HTTP_OK, text, "ready\n", 6)
                      : answer(c, MHD_HTTP_SERVICE_UNAVAILABLE, text, "no version loaded yet\n", 22);
    else
        rc = answer(c, MHD_HTTP_NOT_FOUND, text, "not found: /metrics, /healthz, /readyz\n", 39);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

metrics_http_t *metrics_http_start(const char *listen, char *err, size_t errlen) {
    const char *colon = strrchr(listen, ':');
    if (!colon || !colon[1]) {
        snprintf(err, errlen, "serve.metrics_listen '%s': expected HOST:PORT or :PORT", listen);
        return NULL;
    }
    char host[256];
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host) hl = sizeof host - 1;
    memcpy(host, listen, hl);
    host[hl] = 0;
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') { /* [::1]:9464 */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *ai = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai);
    if (gai) {
        snprintf(err, errlen, "serve.metrics_listen '%s': %s", listen, gai_strerror(gai));
        return NULL;
    }
    metrics_http_t *m = XCALLOC(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->published = now_s();
    if (!host[0]) { /* every address, IPv6 and IPv4 alike where the host has IPv6 */
        uint16_t port = ai->ai_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)ai->ai_addr)->sin6_port)
                                                  : ntohs(((struct sockaddr_in *)ai->ai_addr)->sin_port);
        m->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_DUAL_STACK, port, NULL, NULL,
                                     handle, m, MHD_OPTION_CONNECTION_LIMIT, 64u,
                                     MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    }
    if (!m->daemon) {
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
        m->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, m, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                     MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                                     MHD_OPTION_END);
    }
    freeaddrinfo(ai);
    if (!m->daemon) {
        snprintf(err, errlen,
                 "serve.metrics_listen '%s': cannot listen there (in use, or not an address of "
                 "this machine)",
                 listen);
        pthread_mutex_destroy(&m->lock);
        free(m);
        return NULL;
    }
    return m;
}

void metrics_http_publish(metrics_http_t *m, const char *text, size_t n, int ready) {
    char *page = XMALLOC(n + 1);
    memcpy(page, text, n);
    page[n] = 0;
    pthread_mutex_lock(&m->lock);
    char *old = m->page;
    m->page = page;
    m->len = n;
    m->ready = ready;
    m->published = now_s();
    pthread_mutex_unlock(&m->lock);
    free(old);
}

void metrics_http_stop(metrics_http_t *m) {
    if (!m) return;
    MHD_stop_daemon(m->daemon);
    pthread_mutex_destroy(&m->lock);
    free(m->page);
    free(m);
}

void metrics_put_family(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_put_label(FILE *f, const char *v) {
    for (; *v; v++)
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
}

void metrics_put_sample(FILE *f, const char *key, const char *value, const char *name, const char *extra,
                        double v) {
    fprintf(f, "%s{%s=\"", name, key);
    metrics_put_label(f, value);
    fprintf(f, "\"%s%s} %.17g\n", extra ? "," : "", extra ? extra : "", v);
}
