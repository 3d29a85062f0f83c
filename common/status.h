/*
 * common/status.h: one consistent view of the shm segment, and its
 * renderings (JSON, Prometheus text, HTML). The CLI (`outboxd status`) and
 * the admin listener (/status.json, /metrics, /status) share them, so they
 * always agree, and they need nothing but shm: they work with PostgreSQL
 * and Kafka down.
 */
#ifndef OB_STATUS_H
#define OB_STATUS_H

#include "../shm/shm.h"

#include <jansson.h>
#include <stddef.h>

typedef struct {
    ob_shm_hdr_t  hdr;
    ob_shm_slot_t slots[OB_SHM_SLOTS];
    ob_shm_part_t parts[OB_SHM_PARTITIONS];
    int           owner[OB_SHM_PARTITIONS];   /* slot holding the partition, -1 none, -2 several */
    int           ntopics;
    ob_shm_topic_t topics[OB_SHM_TOPICS];
    int64_t       now_wall_ms;
    int64_t       now_mono_ms;
} ob_status_t;

/* Fills v from shm (never blocks a writer). */
void ob_status_collect(ob_shm_t *shm, ob_status_t *v);
/* Events of topics[t] acknowledged by Kafka, all partitions. */
uint64_t ob_status_topic_produced(const ob_status_t *v, int t);
/* Heartbeat age in seconds, -1 when the worker never beat. */
double ob_status_beat_age(const ob_status_t *v, const ob_shm_slot_t *s);

/* The documented /status.json document (see README, "Status fields"). */
json_t *ob_status_json(const ob_status_t *v);
/* Prometheus text exposition (malloc'd, NUL-terminated). */
char *ob_status_metrics(const ob_status_t *v);
/* The self-refreshing HTML status page (malloc'd). */
char *ob_status_html(const ob_status_t *v);

#endif
