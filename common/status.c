/* common/status.c: see status.h. */
#include "status.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *breaker_names[] = { "closed", "open", "half-open" };

void
ob_status_collect(ob_shm_t *shm, ob_status_t *v)
{
    ob_shm_hdr_snapshot(&shm->map->hdr, &v->hdr);
    v->now_wall_ms = ob_wall_ms();
    v->now_mono_ms = ob_now_ms();
    for (int p = 0; p < OB_SHM_PARTITIONS; p++) {
        ob_shm_part_t *src = &shm->map->parts[p], *dst = &v->parts[p];
        atomic_store(&dst->owner_slot, atomic_load(&src->owner_slot));
        atomic_store(&dst->breaker, atomic_load(&src->breaker));
        atomic_store(&dst->committed, atomic_load(&src->committed));
        atomic_store(&dst->pending, atomic_load(&src->pending));
        atomic_store(&dst->oldest_pending_ms, atomic_load(&src->oldest_pending_ms));
        atomic_store(&dst->produced, atomic_load(&src->produced));
        atomic_store(&dst->errors, atomic_load(&src->errors));
        v->owner[p] = -1;
    }
    v->ntopics = atomic_load(&shm->map->hdr.ntopics);
    v->ntopics = v->ntopics < 0 ? 0 : v->ntopics > OB_SHM_TOPICS ? OB_SHM_TOPICS : v->ntopics;
    for (int t = 0; t < v->ntopics; t++) {
        memcpy(v->topics[t].name, shm->map->topics[t].name, sizeof(v->topics[t].name));
        for (int p = 0; p < OB_SHM_PARTITIONS; p++) {
            ob_shm_tpart_t *src = &shm->map->topics[t].parts[p], *dst = &v->topics[t].parts[p];
            atomic_store(&dst->produced, atomic_load(&src->produced));
            atomic_store(&dst->last_offset, atomic_load(&src->last_offset));
        }
    }
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_snapshot(&shm->map->slots[i], &v->slots[i]);
        if (v->slots[i].state == OB_SLOT_EMPTY)
            continue;
        for (int p = 0; p < OB_SHM_PARTITIONS; p++)
            if (ob_shm_is_owned(&v->slots[i], p))
                v->owner[p] = v->owner[p] == -1 ? i : -2;
    }
}

uint64_t
ob_status_topic_produced(const ob_status_t *v, int t)
{
    uint64_t sum = 0;

    for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++)
        sum += atomic_load(&((ob_shm_tpart_t *) &v->topics[t].parts[p])->produced);
    return sum;
}

double
ob_status_beat_age(const ob_status_t *v, const ob_shm_slot_t *s)
{
    int64_t beat = atomic_load(&((ob_shm_slot_t *) s)->heartbeat_ms);

    return beat ? (double) (v->now_mono_ms - beat) / 1000.0 : -1.0;
}

static uint64_t
ctr(const ob_shm_slot_t *s, int k)
{
    return atomic_load(&((ob_shm_slot_t *) s)->counters[k]);
}

static double
oldest_age_s(const ob_status_t *v, const ob_shm_part_t *p)
{
    int64_t oldest = atomic_load(&((ob_shm_part_t *) p)->oldest_pending_ms);

    return oldest > 0 && v->now_wall_ms > oldest ? (double) (v->now_wall_ms - oldest) / 1000.0 : 0.0;
}

/* The per-kind counters a worker slot carries, by name. */
static json_t *
status_counters_json(const ob_shm_slot_t *s)
{
    switch (s->kind) {
    case OB_KIND_HTTP:
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "requests_2xx", (json_int_t) ctr(s, OB_CTR_HTTP_REQ_2XX),
                         "requests_4xx", (json_int_t) ctr(s, OB_CTR_HTTP_REQ_4XX), "requests_5xx",
                         (json_int_t) ctr(s, OB_CTR_HTTP_REQ_5XX), "in_flight",
                         (json_int_t) ctr(s, OB_CTR_HTTP_INFLIGHT), "orders_created",
                         (json_int_t) ctr(s, OB_CTR_HTTP_ORDERS_CREATED), "db_errors",
                         (json_int_t) ctr(s, OB_CTR_HTTP_DB_ERRORS));
    case OB_KIND_RELAY:
        return json_pack("{s:I, s:I, s:I, s:I, s:{s:b, s:b, s:I, s:I, s:I, s:I}}", "batches",
                         (json_int_t) ctr(s, OB_CTR_RELAY_BATCHES), "published",
                         (json_int_t) ctr(s, OB_CTR_RELAY_PUBLISHED), "unacknowledged",
                         (json_int_t) ctr(s, OB_CTR_RELAY_ERRORS), "locks_held",
                         (json_int_t) ctr(s, OB_CTR_RELAY_LOCKS_HELD), "wal", "streaming",
                         ctr(s, OB_CTR_RELAY_STREAMING) != 0, "polling_pass", ctr(s, OB_CTR_RELAY_CATCHUP) != 0,
                         "streamed", (json_int_t) ctr(s, OB_CTR_RELAY_STREAMED), "slot_lag_bytes",
                         (json_int_t) ctr(s, OB_CTR_RELAY_SLOT_LAG_BYTES), "slot_lag_ms",
                         (json_int_t) ctr(s, OB_CTR_RELAY_SLOT_LAG_MS), "slot_invalidations",
                         (json_int_t) ctr(s, OB_CTR_RELAY_SLOT_INVALIDATIONS));
    default:
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:I, s:I}", "applied",
                         (json_int_t) ctr(s, OB_CTR_CONS_APPLIED), "duplicates",
                         (json_int_t) ctr(s, OB_CTR_CONS_DUPLICATES), "parked", (json_int_t) ctr(s, OB_CTR_CONS_PARKED),
                         "dead_letters", (json_int_t) ctr(s, OB_CTR_CONS_DEAD_LETTERS), "assigned_partitions",
                         (json_int_t) ctr(s, OB_CTR_CONS_ASSIGNED), "lag_messages",
                         (json_int_t) ctr(s, OB_CTR_CONS_LAG), "apply_lag_ms",
                         (json_int_t) ctr(s, OB_CTR_CONS_APPLY_LAG_MS), "stalled", ctr(s, OB_CTR_CONS_STALLED) != 0,
                         "no_progress_ms", (json_int_t) ctr(s, OB_CTR_CONS_NO_PROGRESS_MS), "other_aggregates",
                         (json_int_t) ctr(s, OB_CTR_CONS_OTHER_AGGREGATES));
    }
}

static json_t *
status_slot_json(const ob_status_t *v, const ob_shm_slot_t *s, int slot)
{
    json_t *owned = json_array();

    for (int p = 0; p < OB_SHM_PARTITIONS; p++)
        if (ob_shm_is_owned(s, p))
            json_array_append_new(owned, json_integer(p));
    return json_pack("{s:i, s:s, s:i, s:i, s:s, s:I, s:i, s:f, s:i, s:s, s:o, s:o}", "slot", slot, "kind",
                     ob_kind_name(s->kind), "index", s->index, "pid", s->pid, "state", ob_slot_state_name(s->state),
                     "uptime_s", (json_int_t) (s->pid ? (v->now_wall_ms - s->started_wall_ms) / 1000 : 0),
                     "restarts", (int) s->restarts, "heartbeat_age_s", ob_status_beat_age(v, s), "generation",
                     (int) s->generation, "reason", s->reason, "partitions", owned, "counters",
                     status_counters_json(s));
}

/* Last n seconds of the ring, oldest first, as per-second rates. */
static json_t *
status_rates_json(const ob_status_t *v, int n)
{
    json_t *out = json_array();
    int     head = (int) v->hdr.ring_head;

    for (int k = n; k >= 1; k--) {
        const ob_shm_rate_t *a = &v->hdr.ring[(head - k - 1 + 2 * OB_SHM_RING) % OB_SHM_RING];
        const ob_shm_rate_t *b = &v->hdr.ring[(head - k + 2 * OB_SHM_RING) % OB_SHM_RING];
        if (a->wall_s == 0 || b->wall_s <= a->wall_s)
            continue;
        json_array_append_new(out, json_pack("{s:I, s:I, s:I, s:I}", "t", (json_int_t) b->wall_s, "committed",
                                             (json_int_t) (b->committed - a->committed), "produced",
                                             (json_int_t) (b->produced - a->produced), "applied",
                                             (json_int_t) (b->applied - a->applied)));
    }
    return out;
}

/* Each topic [routes] and [kafka] topic have named since the start, with its partitions' progress. */
static json_t *
status_topics_json(const ob_status_t *v)
{
    json_t *out = json_array();

    for (int t = 0; t < v->ntopics; t++) {
        json_t *parts = json_array();
        for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++) {
            ob_shm_tpart_t *tp = (ob_shm_tpart_t *) &v->topics[t].parts[p];
            json_array_append_new(parts, json_pack("{s:i, s:I, s:I}", "partition", p, "produced",
                                                   (json_int_t) atomic_load(&tp->produced), "last_offset",
                                                   (json_int_t) atomic_load(&tp->last_offset)));
        }
        json_array_append_new(out, json_pack("{s:s, s:I, s:o}", "topic", v->topics[t].name, "produced",
                                             (json_int_t) ob_status_topic_produced(v, t), "partitions", parts));
    }
    return out;
}

json_t *
ob_status_json(const ob_status_t *v)
{
    json_t *workers = json_array(), *parts = json_array();
    char    digest[24];

    snprintf(digest, sizeof(digest), "%016llx", (unsigned long long) v->hdr.cfg_digest);
    for (int i = 0; i < OB_SHM_SLOTS; i++)
        if (v->slots[i].state != OB_SLOT_EMPTY)
            json_array_append_new(workers, status_slot_json(v, &v->slots[i], i));
    for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++) {
        const ob_shm_part_t *pt = &v->parts[p];
        int                  b = atomic_load(&((ob_shm_part_t *) pt)->breaker);
        json_array_append_new(
            parts, json_pack("{s:i, s:o, s:I, s:I, s:I, s:f, s:I, s:s}", "partition", p, "owner",
                             v->owner[p] >= 0 ? json_sprintf("relay %d", v->slots[v->owner[p]].index)
                                              : v->owner[p] == -2 ? json_string("SEVERAL") : json_null(),
                             "committed", (json_int_t) atomic_load(&((ob_shm_part_t *) pt)->committed), "produced",
                             (json_int_t) atomic_load(&((ob_shm_part_t *) pt)->produced), "pending",
                             (json_int_t) atomic_load(&((ob_shm_part_t *) pt)->pending), "oldest_pending_age_s",
                             oldest_age_s(v, pt), "errors",
                             (json_int_t) atomic_load(&((ob_shm_part_t *) pt)->errors), "breaker",
                             breaker_names[b >= 0 && b <= 2 ? b : 0]));
    }
    return json_pack("{s:{s:s, s:i, s:I, s:I, s:s, s:s, s:s, s:o, s:s}, s:o, s:o, s:o, s:o}", "supervisor", "name",
                     v->hdr.name, "pid", (int) v->hdr.sup_pid, "uptime_s",
                     (json_int_t) ((v->now_wall_ms - v->hdr.start_wall_ms) / 1000), "generation",
                     (json_int_t) v->hdr.generation, "config", v->hdr.cfg_path, "config_digest", digest,
                     "last_reload", v->hdr.reload_ok < 0 ? "never" : v->hdr.reload_ok ? "ok" : "failed",
                     "last_reload_at_ms", v->hdr.reload_ok < 0 ? json_null() : json_integer(v->hdr.reload_wall_ms),
                     "last_reload_message", v->hdr.reload_msg, "workers", workers, "partitions", parts, "topics",
                     status_topics_json(v), "rates",
                     status_rates_json(v, 120));
}

/* ---- text buffers ---- */

typedef struct {
    char  *s;
    size_t len, cap;
} sbuf_t;

static void
sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    int     n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n >= 0 && b->s != NULL && b->len + (size_t) n < b->cap) {
            b->len += (size_t) n;
            return;
        }
        size_t cap = (b->cap + (size_t) n + 1) * 2;
        char  *s = realloc(b->s, cap);
        if (s == NULL)
            return;
        b->s = s;
        b->cap = cap;
    }
}

/* ---- Prometheus ---- */

static void
metric_head(sbuf_t *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP outboxd_%s %s\n# TYPE outboxd_%s %s\n", name, help, name, type);
}

typedef struct {
    const char *name, *help;
    int         kind, counter;
    int         is_counter;
} slot_metric_t;

static const slot_metric_t slot_metrics[] = {
    { "orders_created_total", "Orders created by this HTTP worker.", OB_KIND_HTTP, OB_CTR_HTTP_ORDERS_CREATED, 1 },
    { "http_database_errors_total", "Requests that failed on the database.", OB_KIND_HTTP, OB_CTR_HTTP_DB_ERRORS, 1 },
    { "http_requests_in_flight", "Requests being served.", OB_KIND_HTTP, OB_CTR_HTTP_INFLIGHT, 0 },
    { "http_body_timeouts_total", "Request bodies cut off at request_timeout_ms (408).", OB_KIND_HTTP,
      OB_CTR_HTTP_BODY_TIMEOUTS, 1 },
    { "http_body_refused_total", "Requests refused (503) because every body slot was taken.", OB_KIND_HTTP,
      OB_CTR_HTTP_BODY_REFUSED, 1 },
    { "relay_batches_total", "Publish cycles completed.", OB_KIND_RELAY, OB_CTR_RELAY_BATCHES, 1 },
    { "relay_published_total", "Events acknowledged by Kafka and marked published.", OB_KIND_RELAY,
      OB_CTR_RELAY_PUBLISHED, 1 },
    { "relay_unacknowledged_total", "Events Kafka did not acknowledge (left pending).", OB_KIND_RELAY,
      OB_CTR_RELAY_ERRORS, 1 },
    { "relay_partition_locks", "Partition advisory locks held.", OB_KIND_RELAY, OB_CTR_RELAY_LOCKS_HELD, 0 },
    { "relay_claim_microseconds_total", "Time spent claiming pending rows (the claim query).", OB_KIND_RELAY,
      OB_CTR_RELAY_CLAIM_US, 1 },
    { "relay_kafka_microseconds_total", "Time spent producing and waiting for delivery reports.", OB_KIND_RELAY,
      OB_CTR_RELAY_KAFKA_US, 1 },
    { "relay_mark_microseconds_total", "Time spent marking rows published (transaction included).", OB_KIND_RELAY,
      OB_CTR_RELAY_MARK_US, 1 },
    { "relay_wal_streaming", "Mode wal: 1 while the replication stream runs.", OB_KIND_RELAY, OB_CTR_RELAY_STREAMING,
      0 },
    { "relay_wal_polling_pass", "Mode wal: 1 while a polling pass must finish before streaming.", OB_KIND_RELAY,
      OB_CTR_RELAY_CATCHUP, 0 },
    { "relay_wal_streamed_total", "Mode wal: events produced from the replication stream.", OB_KIND_RELAY,
      OB_CTR_RELAY_STREAMED, 1 },
    { "relay_slot_lag_bytes", "Mode wal: WAL between the server's position and the slot's confirmed one.",
      OB_KIND_RELAY, OB_CTR_RELAY_SLOT_LAG_BYTES, 0 },
    { "relay_slot_lag_milliseconds", "Mode wal: age of the oldest received, unconfirmed commit (or time since "
      "the stream stopped).", OB_KIND_RELAY, OB_CTR_RELAY_SLOT_LAG_MS, 0 },
    { "relay_standby_barrier", "1 while events wait for a synchronous standby to have them before they are produced.",
      OB_KIND_RELAY, OB_CTR_RELAY_BARRIER, 0 },
    { "relay_standby_barrier_microseconds_total", "Time spent waiting for a synchronous standby to confirm.",
      OB_KIND_RELAY, OB_CTR_RELAY_BARRIER_US, 1 },
    { "relay_standby_barrier_timeouts_total", "Standby waits given up after 1 s; their events stayed pending.",
      OB_KIND_RELAY, OB_CTR_RELAY_BARRIER_TIMEOUTS, 1 },
    { "relay_slot_invalidations_total", "Mode wal: slots found invalidated or dropped, then recreated.",
      OB_KIND_RELAY, OB_CTR_RELAY_SLOT_INVALIDATIONS, 1 },
    { "consumer_applied_total", "Events booked in the ledger.", OB_KIND_CONSUMER, OB_CTR_CONS_APPLIED, 1 },
    { "consumer_duplicates_total", "Events skipped as already applied.", OB_KIND_CONSUMER, OB_CTR_CONS_DUPLICATES,
      1 },
    { "consumer_parked_total", "Events parked waiting for a predecessor.", OB_KIND_CONSUMER, OB_CTR_CONS_PARKED, 1 },
    { "consumer_other_aggregates_total", "Events of other aggregate types than order, passed over.",
      OB_KIND_CONSUMER, OB_CTR_CONS_OTHER_AGGREGATES, 1 },
    { "consumer_dead_letters_total", "Events moved to the dead letter table.", OB_KIND_CONSUMER,
      OB_CTR_CONS_DEAD_LETTERS, 1 },
    { "consumer_assigned_partitions", "Kafka partitions assigned.", OB_KIND_CONSUMER, OB_CTR_CONS_ASSIGNED, 0 },
    { "consumer_lag_messages", "Events not applied yet: the batch in hand plus high watermark minus position.",
      OB_KIND_CONSUMER, OB_CTR_CONS_LAG, 0 },
    { "consumer_stalled", "1 while events wait and none was applied for [ledger] stall_after.", OB_KIND_CONSUMER,
      OB_CTR_CONS_STALLED, 0 },
    { "consumer_no_progress_milliseconds", "Since the consumer last applied a batch or had nothing waiting.",
      OB_KIND_CONSUMER, OB_CTR_CONS_NO_PROGRESS_MS, 0 },
};

static void
metrics_workers(sbuf_t *b, const ob_status_t *v)
{
    metric_head(b, "worker_up", "gauge", "1 when the worker slot has a running, heartbeating process.");
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        if (s->state != OB_SLOT_EMPTY)
            sb_printf(b, "outboxd_worker_up{kind=\"%s\",worker=\"%d\"} %d\n", ob_kind_name(s->kind), s->index,
                      s->state == OB_SLOT_RUNNING);
    }
    /* fatal is not down: it waits for the operator (a reload), so an alert on it must not wait for a restart */
    metric_head(b, "worker_fatal", "gauge", "1 when the worker exited fatal (exit 2) and waits for a reload.");
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        if (s->state != OB_SLOT_EMPTY)
            sb_printf(b, "outboxd_worker_fatal{kind=\"%s\",worker=\"%d\"} %d\n", ob_kind_name(s->kind), s->index,
                      s->state == OB_SLOT_FATAL);
    }
    /* the supervisor's own verdict (SUP_CRASHLOOP_FAILS quick failures in a row); restarts_total alone cannot
     * tell three crashes in a minute from three in a week */
    metric_head(b, "worker_crashloop", "gauge", "1 while the worker waits out a backoff after several quick failures.");
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        if (s->state != OB_SLOT_EMPTY)
            sb_printf(b, "outboxd_worker_crashloop{kind=\"%s\",worker=\"%d\"} %d\n", ob_kind_name(s->kind),
                      s->index, s->state == OB_SLOT_CRASHLOOP);
    }
    metric_head(b, "worker_restarts_total", "counter", "Restarts of the worker slot.");
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        if (s->state != OB_SLOT_EMPTY)
            sb_printf(b, "outboxd_worker_restarts_total{kind=\"%s\",worker=\"%d\"} %u\n", ob_kind_name(s->kind),
                      s->index, s->restarts);
    }
    metric_head(b, "worker_heartbeat_age_seconds", "gauge", "Seconds since the worker last heartbeat.");
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        if (s->state != OB_SLOT_EMPTY && s->pid > 0)
            sb_printf(b, "outboxd_worker_heartbeat_age_seconds{kind=\"%s\",worker=\"%d\"} %.3f\n",
                      ob_kind_name(s->kind), s->index, ob_status_beat_age(v, s) < 0 ? 0 : ob_status_beat_age(v, s));
    }
    for (size_t m = 0; m < OB_ARRAY_LEN(slot_metrics); m++) {
        const slot_metric_t *sm = &slot_metrics[m];
        metric_head(b, sm->name, sm->is_counter ? "counter" : "gauge", sm->help);
        for (int i = 0; i < OB_SHM_SLOTS; i++) {
            const ob_shm_slot_t *s = &v->slots[i];
            if (s->state != OB_SLOT_EMPTY && s->kind == sm->kind)
                sb_printf(b, "outboxd_%s{worker=\"%d\"} %llu\n", sm->name, s->index,
                          (unsigned long long) ctr(s, sm->counter));
        }
    }
}

static void
metrics_http(sbuf_t *b, const ob_status_t *v)
{
    static const char *classes[] = { "2xx", "4xx", "5xx" };
    static const char *le[OB_HTTP_LAT_BUCKETS] = { "0.001", "0.002", "0.005", "0.01", "0.025", "0.05",
                                                   "0.1",   "0.25",  "0.5",   "1",    "2.5",   "+Inf" };

    metric_head(b, "http_requests_total", "counter", "HTTP requests answered, by status class.");
    for (int i = 0; i < OB_SHM_SLOTS; i++)
        for (int c = 0; c < 3; c++)
            if (v->slots[i].state != OB_SLOT_EMPTY && v->slots[i].kind == OB_KIND_HTTP)
                sb_printf(b, "outboxd_http_requests_total{worker=\"%d\",class=\"%s\"} %llu\n", v->slots[i].index,
                          classes[c], (unsigned long long) ctr(&v->slots[i], OB_CTR_HTTP_REQ_2XX + c));
    metric_head(b, "http_request_duration_seconds", "histogram", "Time to answer an HTTP request.");
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        uint64_t             cum = 0;
        if (s->state == OB_SLOT_EMPTY || s->kind != OB_KIND_HTTP)
            continue;
        for (int k = 0; k < OB_HTTP_LAT_BUCKETS; k++) {
            cum += ctr(s, OB_CTR_HTTP_LAT_BASE + k);
            sb_printf(b, "outboxd_http_request_duration_seconds_bucket{worker=\"%d\",le=\"%s\"} %llu\n", s->index,
                      le[k], (unsigned long long) cum);
        }
        sb_printf(b, "outboxd_http_request_duration_seconds_sum{worker=\"%d\"} %.6f\n", s->index,
                  (double) ctr(s, OB_CTR_HTTP_LAT_SUM_US) / 1e6);
        sb_printf(b, "outboxd_http_request_duration_seconds_count{worker=\"%d\"} %llu\n", s->index,
                  (unsigned long long) cum);
    }
}

/* One stage histogram of slot s, as a Prometheus histogram's series. */
static void
metrics_stage(sbuf_t *b, const ob_shm_slot_t *s, const char *kind, int stage, const char *name)
{
    static const char *le[OB_STAGE_BUCKETS] = { "0.0005", "0.001", "0.002", "0.003", "0.005", "0.01",
                                                "0.02",   "0.05",  "0.1",   "0.25",  "1",     "+Inf" };
    int                base = OB_CTR_STAGE_BASE + stage * OB_STAGE_WIDTH;
    uint64_t           cum = 0;

    for (int k = 0; k < OB_STAGE_BUCKETS; k++) {
        cum += ctr(s, base + k);
        sb_printf(b, "outboxd_stage_duration_seconds_bucket{kind=\"%s\",worker=\"%d\",stage=\"%s\",le=\"%s\"} %llu\n",
                  kind, s->index, name, le[k], (unsigned long long) cum);
    }
    sb_printf(b, "outboxd_stage_duration_seconds_sum{kind=\"%s\",worker=\"%d\",stage=\"%s\"} %.6f\n", kind, s->index,
              name, (double) ctr(s, base + OB_STAGE_BUCKETS) / 1e6);
    sb_printf(b, "outboxd_stage_duration_seconds_count{kind=\"%s\",worker=\"%d\",stage=\"%s\"} %llu\n", kind,
              s->index, name, (unsigned long long) cum);
}

/*
 * Where an event's time goes, stage by stage, each from the clock the
 * worker has (DESIGN §2): commit -> claimed (partitioned: from created_at,
 * the writer's transaction start; wal: from the commit time the stream
 * gives) -> acknowledged by Kafka -> fetched by a consumer (from the
 * record's timestamp, the relay's produce) -> ledger committed, and the
 * whole from the event's occurred_at.
 */
static void
metrics_stages(sbuf_t *b, const ob_status_t *v)
{
    static const char *relay[OB_STAGE_RELAY_COUNT] = { "commit_to_claim", "claim_to_ack" };
    static const char *cons[OB_STAGE_CONS_COUNT] = { "produce_to_fetch", "fetch_to_ledger_commit",
                                                     "occurred_to_ledger_commit" };

    metric_head(b, "stage_duration_seconds", "histogram", "Time an event spent in each stage of the pipeline.");
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        if (s->state == OB_SLOT_EMPTY)
            continue;
        if (s->kind == OB_KIND_RELAY)
            for (int k = 0; k < OB_STAGE_RELAY_COUNT; k++)
                metrics_stage(b, s, "relay", k, relay[k]);
        if (s->kind == OB_KIND_CONSUMER)
            for (int k = 0; k < OB_STAGE_CONS_COUNT; k++)
                metrics_stage(b, s, "consumer", k, cons[k]);
    }
}

static void
metrics_partitions(sbuf_t *b, const ob_status_t *v)
{
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        { "partition_committed_total", "counter", "Events committed for the partition by this instance's HTTP workers." },
        { "partition_produced_total", "counter", "Events of the partition acknowledged by Kafka." },
        { "partition_pending", "gauge", "Pending outbox rows, counted up to 10000 (the relay stops counting there)." },
        { "partition_oldest_pending_age_seconds", "gauge", "Age of the oldest pending event." },
        { "partition_errors_total", "counter", "Events not acknowledged or rejected." },
        { "partition_breaker_open", "gauge", "1 while the relay's circuit breaker is open or half-open." },
    };

    for (size_t f = 0; f < OB_ARRAY_LEN(fam); f++) {
        metric_head(b, fam[f].name, fam[f].type, fam[f].help);
        for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++) {
            ob_shm_part_t *pt = (ob_shm_part_t *) &v->parts[p];
            double         val = 0;
            switch (f) {
            case 0: val = (double) atomic_load(&pt->committed); break;
            case 1: val = (double) atomic_load(&pt->produced); break;
            case 2: val = (double) atomic_load(&pt->pending); break;
            case 3: val = oldest_age_s(v, pt); break;
            case 4: val = (double) atomic_load(&pt->errors); break;
            default: val = atomic_load(&pt->breaker) != OB_BREAKER_CLOSED;
            }
            sb_printf(b, "outboxd_%s{partition=\"%d\"} %.17g\n", fam[f].name, p, val);
        }
    }
}

static void
metrics_topics(sbuf_t *b, const ob_status_t *v)
{
    metric_head(b, "topic_produced_total", "counter", "Events acknowledged by Kafka, per topic and partition.");
    for (int t = 0; t < v->ntopics; t++)
        for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++)
            sb_printf(b, "outboxd_topic_produced_total{topic=\"%s\",partition=\"%d\"} %llu\n", v->topics[t].name, p,
                      (unsigned long long) atomic_load(&((ob_shm_tpart_t *) &v->topics[t].parts[p])->produced));
    metric_head(b, "topic_last_offset", "gauge", "Kafka offset of the last event produced, -1 before the first.");
    for (int t = 0; t < v->ntopics; t++)
        for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++)
            sb_printf(b, "outboxd_topic_last_offset{topic=\"%s\",partition=\"%d\"} %lld\n", v->topics[t].name, p,
                      (long long) atomic_load(&((ob_shm_tpart_t *) &v->topics[t].parts[p])->last_offset));
}

char *
ob_status_metrics(const ob_status_t *v)
{
    sbuf_t b = { 0 };

    metric_head(&b, "up", "gauge", "1 while the supervisor runs.");
    sb_printf(&b, "outboxd_up 1\n");
    metric_head(&b, "config_generation", "gauge", "Successful reloads since start.");
    sb_printf(&b, "outboxd_config_generation %llu\n", (unsigned long long) v->hdr.generation);
    metric_head(&b, "last_reload_ok", "gauge", "1 if the last reload succeeded (or none happened), 0 if it failed.");
    sb_printf(&b, "outboxd_last_reload_ok %d\n", v->hdr.reload_ok != 0);
    metric_head(&b, "uptime_seconds", "gauge", "Seconds since the supervisor started.");
    sb_printf(&b, "outboxd_uptime_seconds %lld\n", (long long) ((v->now_wall_ms - v->hdr.start_wall_ms) / 1000));
    metrics_workers(&b, v);
    metrics_http(&b, v);
    metrics_stages(&b, v);
    metrics_partitions(&b, v);
    metrics_topics(&b, v);
    return b.s;
}

/* ---- HTML ---- */

static void
html_escape(sbuf_t *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '&': sb_printf(b, "&amp;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        default: sb_printf(b, "%c", *s);
        }
    }
}

/* An inline SVG polyline of one series of per-second rates, newest right. */
static void
html_sparkline(sbuf_t *b, const ob_status_t *v, int series, const char *label)
{
    double vals[OB_SHM_RING];
    int    n = 0, head = (int) v->hdr.ring_head;
    double max = 1;

    for (int k = 180; k >= 1; k--) {
        const ob_shm_rate_t *a = &v->hdr.ring[(head - k - 1 + 2 * OB_SHM_RING) % OB_SHM_RING];
        const ob_shm_rate_t *c = &v->hdr.ring[(head - k + 2 * OB_SHM_RING) % OB_SHM_RING];
        if (a->wall_s == 0 || c->wall_s <= a->wall_s)
            continue;
        uint64_t d = series == 0 ? c->committed - a->committed : series == 1 ? c->produced - a->produced
                                                                               : c->applied - a->applied;
        vals[n] = (double) d / (double) (c->wall_s - a->wall_s);
        if (vals[n] > max)
            max = vals[n];
        n++;
    }
    sb_printf(b, "<div class=spark data-series=\"%s\"><span>%s/s: <b>%.0f</b> (max %.0f)</span>"
                 "<svg width=360 height=40 viewBox=\"0 0 360 40\"><polyline fill=none stroke=\"#2a6\" points=\"",
              label, label, n ? vals[n - 1] : 0.0, max);
    for (int i = 0; i < n; i++)
        sb_printf(b, "%.1f,%.1f ", 360.0 * i / (n > 1 ? n - 1 : 1), 38.0 - 36.0 * vals[i] / max);
    sb_printf(b, "\"/></svg></div>\n");
}

static void
html_workers(sbuf_t *b, const ob_status_t *v)
{
    sb_printf(b, "<h2>Workers</h2><table id=workers><tr><th>kind</th><th>index</th><th>pid</th><th>state</th>"
                 "<th>uptime</th><th>restarts</th><th>heartbeat age</th><th>note</th></tr>\n");
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        if (s->state == OB_SLOT_EMPTY)
            continue;
        sb_printf(b, "<tr class=\"worker %s\" data-kind=\"%s\" data-index=\"%d\" data-pid=\"%d\"><td>%s</td><td>%d</td>"
                     "<td>%d</td><td class=state>%s</td><td>%llds</td><td>%u</td><td>%.1fs</td><td>",
                  ob_slot_state_name(s->state), ob_kind_name(s->kind), s->index, s->pid, ob_kind_name(s->kind),
                  s->index, s->pid, ob_slot_state_name(s->state),
                  (long long) (s->pid ? (v->now_wall_ms - s->started_wall_ms) / 1000 : 0), s->restarts,
                  ob_status_beat_age(v, s));
        if (s->kind == OB_KIND_CONSUMER && s->pid > 0 && ctr(s, OB_CTR_CONS_STALLED))
            sb_printf(b, "<b class=stalled>STALLED: nothing applied for %llus while events wait; see the log</b> ",
                      (unsigned long long) (ctr(s, OB_CTR_CONS_NO_PROGRESS_MS) / 1000));
        html_escape(b, s->reason);
        sb_printf(b, "</td></tr>\n");
    }
    sb_printf(b, "</table>\n");
}

static void
html_partitions(sbuf_t *b, const ob_status_t *v)
{
    uint64_t maxp = 1;

    for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++)
        if (atomic_load(&((ob_shm_part_t *) &v->parts[p])->pending) > maxp)
            maxp = atomic_load(&((ob_shm_part_t *) &v->parts[p])->pending);
    sb_printf(b, "<h2>Partitions</h2><table id=partitions><tr><th>partition</th><th>owner</th><th>backlog</th>"
                 "<th>oldest pending</th><th>produced</th><th>errors</th><th>breaker</th></tr>\n");
    for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++) {
        ob_shm_part_t *pt = (ob_shm_part_t *) &v->parts[p];
        uint64_t       pending = atomic_load(&pt->pending);
        int            br = atomic_load(&pt->breaker);
        char           owner[32];
        if (v->owner[p] >= 0)
            snprintf(owner, sizeof(owner), "relay %d", v->slots[v->owner[p]].index);
        else
            snprintf(owner, sizeof(owner), "%s", v->owner[p] == -2 ? "SEVERAL" : "none");
        sb_printf(b, "<tr class=partition data-partition=\"%d\"><td>%d</td><td>%s</td><td><div class=bar>"
                     "<i style=\"width:%d%%\"></i></div>%llu</td><td>%.1fs</td><td>%llu</td><td>%llu</td>"
                     "<td class=\"breaker %s\">%s</td></tr>\n",
                  p, p, owner, (int) (100 * pending / maxp), (unsigned long long) pending, oldest_age_s(v, pt),
                  (unsigned long long) atomic_load(&pt->produced),
                  (unsigned long long) atomic_load(&pt->errors), breaker_names[br >= 0 && br <= 2 ? br : 0],
                  breaker_names[br >= 0 && br <= 2 ? br : 0]);
    }
    sb_printf(b, "</table>\n");
}

/* A topic's produced count, and the partitions that have a last offset. */
static void
html_topics(sbuf_t *b, const ob_status_t *v)
{
    sb_printf(b, "<h2>Topics</h2><table id=topics><tr><th>topic</th><th>produced</th><th>last offsets"
                 " (partition:offset)</th></tr>\n");
    for (int t = 0; t < v->ntopics; t++) {
        sb_printf(b, "<tr class=topic><td>");
        html_escape(b, v->topics[t].name);
        sb_printf(b, "</td><td>%llu</td><td>", (unsigned long long) ob_status_topic_produced(v, t));
        for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++) {
            int64_t off = atomic_load(&((ob_shm_tpart_t *) &v->topics[t].parts[p])->last_offset);
            if (off >= 0)
                sb_printf(b, "%d:%lld ", p, (long long) off);
        }
        sb_printf(b, "</td></tr>\n");
    }
    sb_printf(b, "</table>\n");
}

char *
ob_status_html(const ob_status_t *v)
{
    sbuf_t b = { 0 };

    sb_printf(&b, "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2>"
                  "<title>outboxd %s</title><style>body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
                  "table{border-collapse:collapse;margin-bottom:1em}td,th{padding:2px 10px;border-bottom:1px solid #ddd;"
                  "text-align:left}tr.crashloop td.state,tr.fatal td.state,td.open,td.half-open{color:#b00;"
                  "font-weight:bold}tr.running td.state,td.closed{color:#070}.bar{display:inline-block;width:120px;"
                  "height:10px;background:#eee;margin-right:6px}.bar i{display:block;height:10px;background:#c73}"
                  ".spark{display:inline-block;margin-right:2em}.spark span{display:block}</style></head><body>\n",
              v->hdr.name);
    sb_printf(&b, "<h1>outboxd <span id=name>");
    html_escape(&b, v->hdr.name);
    sb_printf(&b, "</span></h1><p id=supervisor>supervisor pid <b>%d</b>, up %llds, config generation <b>%llu</b>, "
                  "last reload: <b class=reload>%s</b> ",
              (int) v->hdr.sup_pid, (long long) ((v->now_wall_ms - v->hdr.start_wall_ms) / 1000),
              (unsigned long long) v->hdr.generation,
              v->hdr.reload_ok < 0 ? "never" : v->hdr.reload_ok ? "ok" : "FAILED");
    html_escape(&b, v->hdr.reload_msg);
    sb_printf(&b, "</p>\n<h2>Throughput, last 3 minutes</h2>\n");
    html_sparkline(&b, v, 0, "committed");
    html_sparkline(&b, v, 1, "published");
    html_sparkline(&b, v, 2, "applied");
    html_workers(&b, v);
    html_partitions(&b, v);
    html_topics(&b, v);
    sb_printf(&b, "<p>Served from shared memory; refreshes every 2 s. <a href=status.json>status.json</a> "
                  "<a href=metrics>metrics</a></p></body></html>\n");
    return b.s;
}
