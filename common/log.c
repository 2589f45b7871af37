#include "log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static char g_role[16] = "tessera";
static int g_rank = -1;
static log_level_t g_level = LOG_INFO;

void log_set_identity(const char *role, int rank) {
    snprintf(g_role, sizeof g_role, "%s", role);
    g_rank = rank;
}

void log_set_level(log_level_t level) {
    g_level = level;
}

void log_init_from_env(void) {
    const char *v = getenv("TESSERA_LOG_LEVEL");
    if (!v) return;
    if (!strcasecmp(v, "debug"))
        g_level = LOG_DEBUG;
    else if (!strcasecmp(v, "info"))
        g_level = LOG_INFO;
    else if (!strcasecmp(v, "warn"))
        g_level = LOG_WARN;
    else if (!strcasecmp(v, "error"))
        g_level = LOG_ERROR;
}

void log_msg(log_level_t level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < g_level) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%-5s %04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %d ", names[level],
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, g_role, g_rank);
    if (n < 0) return;
    va_list ap;
    va_start(ap, fmt);
    if ((size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One write per line so lines of different ranks do not interleave mid-line. */
    fprintf(stderr, "%s\n", line);
}
