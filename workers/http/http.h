/*
 * workers/http/http.h: the HTTP worker: the order API, the ledger API and the admin page, one civetweb context per listener.
 * The supervisor forks into its main function (supervisor/sup.c, its table of kinds).
 */
#ifndef OB_WORKER_HTTP_H
#define OB_WORKER_HTTP_H

#include "../../common/cfg.h"
#include "../../shm/shm.h"

/* Runs the worker in slot until told to stop; returns its exit code (OB_EXIT_*). */
int ob_http_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index);

#endif
