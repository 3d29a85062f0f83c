/*
 * common/log.h: one line per event, logfmt or JSON, with the process's
 * kind, index and pid on every line so interleaved worker output reads
 * cleanly. stderr by default; a file is reopened on SIGUSR1 (logrotate).
 */
#ifndef OB_LOG_H
#define OB_LOG_H

#include <stddef.h>

typedef enum { OB_LOG_DEBUG, OB_LOG_INFO, OB_LOG_WARN, OB_LOG_ERROR } ob_log_level_t;
typedef enum { OB_LOG_LOGFMT, OB_LOG_JSON } ob_log_format_t;

/* Sets format/destination; path "" means stderr. Returns 0 or -1 with err. */
int ob_log_open(ob_log_format_t fmt, ob_log_level_t min, const char *path,
                char *err, size_t errlen);
/* Names the process on every later line, e.g. ("relay", 1). */
void ob_log_set_identity(const char *kind, int index);
/* Reopens the file (USR1); stderr stays stderr. */
void ob_log_reopen(void);

void ob_log(ob_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Copies dsn into out with any password replaced by "***": secrets never reach a log. */
void ob_log_mask_dsn(const char *dsn, char *out, size_t outlen);

#endif
