/*
 * common/log.c: structured logging.
 *
 * Each line is formatted into a stack buffer and written with one write(2)
 * so lines from concurrent processes sharing the descriptor never interleave
 * mid-line (O_APPEND makes each write atomic for regular files).
 */
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int             log_fd = STDERR_FILENO;
static ob_log_format_t log_fmt = OB_LOG_LOGFMT;
static ob_log_level_t  log_min = OB_LOG_INFO;
static char            log_path[4096];
static char            log_kind[16] = "supervisor";
static int             log_index = -1;

static const char *level_names[] = { "debug", "info", "warn", "error" };

int
ob_log_open(ob_log_format_t fmt, ob_log_level_t min, const char *path,
            char *err, size_t errlen)
{
    log_fmt = fmt;
    log_min = min;
    ob_strlcpy(log_path, path ? path : "", sizeof(log_path));
    if (log_path[0] == '\0') {
        if (log_fd != STDERR_FILENO)
            close(log_fd);
        log_fd = STDERR_FILENO;
        return 0;
    }
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "open(\"%s\") failed: %s", log_path, strerror(errno));
        return -1;
    }
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = fd;
    return 0;
}

void
ob_log_set_identity(const char *kind, int index)
{
    ob_strlcpy(log_kind, kind, sizeof(log_kind));
    log_index = index;
}

void
ob_log_reopen(void)
{
    char err[256];

    if (log_path[0] != '\0' && ob_log_open(log_fmt, log_min, log_path, err, sizeof(err)) != 0)
        ob_log(OB_LOG_ERROR, "log reopen failed: %s", err);
}

/* Escapes msg for a double-quoted logfmt or JSON string. */
static size_t
log_escape(char *out, size_t outlen, const char *msg)
{
    size_t n = 0;

    for (const char *p = msg; *p != '\0' && n + 7 < outlen; p++) {
        unsigned char c = (unsigned char) *p;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char) c;
        } else if (c == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else if (c < 0x20) {
            n += (size_t) snprintf(out + n, outlen - n, "\\u%04x", c);
        } else {
            out[n++] = (char) c;
        }
    }
    out[n] = '\0';
    return n;
}

void
ob_log(ob_log_level_t level, const char *fmt, ...)
{
    char       msg[2048], esc[4200], line[4600], ts[40];
    va_list    ap;
    struct tm  tm;
    int64_t    now = ob_wall_ms();
    time_t     secs = (time_t) (now / 1000);
    int        saved = errno, n;

    if (level < log_min)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_escape(esc, sizeof(esc), msg);
    gmtime_r(&secs, &tm);
    n = (int) strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - (size_t) n, ".%03dZ", (int) (now % 1000));
    if (log_fmt == OB_LOG_JSON)
        n = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s\",\"level\":\"%s\",\"kind\":\"%s\",\"index\":%d,\"pid\":%d,\"msg\":\"%s\"}\n",
                     ts, level_names[level], log_kind, log_index, (int) getpid(), esc);
    else
        n = snprintf(line, sizeof(line), "ts=%s level=%s kind=%s index=%d pid=%d msg=\"%s\"\n",
                     ts, level_names[level], log_kind, log_index, (int) getpid(), esc);
    if (n > (int) sizeof(line))
        n = (int) sizeof(line);
    if (write(log_fd, line, (size_t) n) < 0) {
        /* nowhere left to report a failed log write */
    }
    errno = saved;
}

void
ob_log_mask_dsn(const char *dsn, char *out, size_t outlen)
{
    const char *scheme = strstr(dsn, "://");
    const char *at, *colon, *pw;

    ob_strlcpy(out, dsn, outlen);
    if (scheme != NULL) {
        /* URI form: scheme://user:password@host */
        at = strchr(scheme + 3, '@');
        colon = strchr(scheme + 3, ':');
        if (at != NULL && colon != NULL && colon < at)
            snprintf(out, outlen, "%.*s:***%s", (int) (colon - dsn), dsn, at);
        return;
    }
    /* key=value form: password=secret */
    pw = strstr(dsn, "password=");
    if (pw != NULL) {
        const char *end = strchr(pw, ' ');
        snprintf(out, outlen, "%.*spassword=***%s", (int) (pw - dsn), dsn, end ? end : "");
    }
}
