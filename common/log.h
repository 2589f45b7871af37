/* Logging: one line per event, `level time role rank message key=value...`, to stderr. */
#ifndef TESSERA_LOG_H
#define TESSERA_LOG_H

#include <stdio.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;

/* Sets the role and rank printed on every line (role is copied). */
void log_set_identity(const char *role, int rank);
/* Lines below `level` are dropped. TESSERA_LOG_LEVEL=debug|info|warn|error sets it at start. */
void log_set_level(log_level_t level);
void log_init_from_env(void);

void log_msg(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
