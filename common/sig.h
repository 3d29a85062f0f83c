/*
 * common/sig.h: signal flags and a self-pipe.
 *
 * Handlers only set a sig_atomic_t flag and write one byte to a pipe; the
 * owning loop polls the pipe with a timeout and does the work. This keeps
 * handlers async-signal-safe and lets a loop sleep without missing a signal.
 */
#ifndef OB_SIG_H
#define OB_SIG_H

#include <signal.h>
#include <stdint.h>

extern volatile sig_atomic_t ob_sig_term;    /* TERM or INT: graceful stop */
extern volatile sig_atomic_t ob_sig_quit;    /* QUIT: immediate stop */
extern volatile sig_atomic_t ob_sig_reload;  /* HUP */
extern volatile sig_atomic_t ob_sig_child;   /* CHLD */
extern volatile sig_atomic_t ob_sig_reopen;  /* USR1 */

/* Creates the self-pipe and installs handlers for TERM INT QUIT HUP CHLD USR1; ignores PIPE. */
int ob_sig_install(void);
/* In a forked child: fresh pipe, flags cleared, same handlers. */
int ob_sig_reinit_child(void);
/* Waits until a signal arrives or timeout_ms passes (-1 = forever). */
void ob_sig_wait(int64_t timeout_ms);
/* Wakes ob_sig_wait from another thread of this process. */
void ob_sig_wake(void);
/* Blocks the handled signals in the calling thread (before spawning threads). */
void ob_sig_block(sigset_t *old);
void ob_sig_restore(const sigset_t *old);

#endif
