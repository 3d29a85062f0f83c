/*
 * supervisor/sup.h: the preforking supervisor.
 */
#ifndef OB_SUP_H
#define OB_SUP_H

#include "../common/cfg.h"
#include "../shm/shm.h"

#include <stdint.h>
#include <sys/types.h>

/* Command-line overrides; -1 = not given. */
typedef struct {
    int http;
    int relays;
    int consumers;
} ob_overrides_t;

/* One supervised child; entry i always uses shm slot i. */
typedef struct {
    unsigned in_use : 1;    /* entry allocated */
    unsigned retiring : 1;  /* no longer wanted: stop it, then free the entry */
    unsigned replace : 1;   /* HTTP rolling reload: stop once its successor is up */
    unsigned fatal : 1;     /* exited 2: wait for a reload */
    int      kind;
    int      index;
    pid_t    pid;           /* 0 when not running */
    int64_t  next_start_ms; /* monotonic; when to (re)spawn */
    int64_t  spawned_ms;
    int64_t  kill_at_ms;    /* after TERM: SIGKILL at this time; 0 = no TERM sent */
    uint32_t fails;         /* consecutive failures: drives the backoff */
    uint32_t restarts;
} ob_child_t;

typedef struct {
    ob_cfg_t      *cfg;          /* in force; replaced whole on reload */
    ob_cfg_t       boot_file;    /* the file as read at start: decides if a flag still pins a key */
    ob_overrides_t ovr;
    ob_shm_t      *shm;
    ob_child_t     ch[OB_SHM_SLOTS];
    char           pidfile[4096];
    int            stopping;     /* graceful stop under way */
    int64_t        stop_deadline_ms;
} ob_sup_t;

/* Validates, opens listeners and shm, forks workers, runs until stopped. */
int ob_sup_run(ob_cfg_t *cfg, const ob_overrides_t *ovr, int foreground);

/* Applies flags over a file config (exposed for unit tests). */
void ob_sup_apply_overrides(ob_cfg_t *cfg, const ob_overrides_t *ovr);

/* Backoff before restart number `fails` (1-based): 100 ms doubling, capped at 30 s. */
int64_t ob_sup_backoff_ms(uint32_t fails);

/* sd_notify("READY=1") and friends; no-op without NOTIFY_SOCKET. */
void ob_sd_notify(const char *state);

#endif
