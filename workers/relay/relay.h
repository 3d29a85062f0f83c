/*
 * workers/relay/relay.h: the relay worker: publishes the outbox rows of the partitions it owns to Kafka.
 * The supervisor forks into its main function (supervisor/sup.c, its table of kinds).
 */
#ifndef OB_WORKER_RELAY_H
#define OB_WORKER_RELAY_H

#include "../../common/cfg.h"
#include "../../shm/shm.h"

/* Runs the worker in slot until told to stop; returns its exit code (OB_EXIT_*). */
int ob_relay_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index);

#endif
