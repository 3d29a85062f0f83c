/*
 * workers/relay/wal_stream.c: mode wal's stream: reads pgoutput from the
 * relay's slot, produces each outbox insert, marks what Kafka acknowledged
 * and confirms to the server only what is marked (wal.c's notes say why).
 * Delivery outcomes and the confirmation gate are outcome.c's rules.
 */
#include "wal_int.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/sig.h"
#include "../../common/util.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int
wal_quar_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

void
ob_wal_free_quarantine(struct ob_wal_s *w)
{
    for (int i = 0; i < w->nquar; i++)
        free(w->quar[i]);
    free(w->quar);
    w->quar = NULL;
    w->nquar = 0;
}

/* Aggregates parked behind a quarantined event, as "type/id" (a type has no '/'): the stream leaves their
 * events to polling after a replay. */
static int
wal_load_quarantine(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    PGresult        *r = ob_wal_query(rl,
                                      "SELECT DISTINCT aggregate_type || '/' || aggregate_id"
                                      " FROM outboxd.outbox_quarantine",
                                      0, NULL, "read quarantine");
    int              n, ok = 1;

    if (r == NULL)
        return -1;
    ob_wal_free_quarantine(w);
    n = PQntuples(r);
    w->quar = n ? calloc((size_t) n, sizeof(*w->quar)) : NULL;
    for (int i = 0; w->quar != NULL && i < n && ok; i++, w->nquar++)
        ok = (w->quar[i] = strdup(PQgetvalue(r, i, 0))) != NULL;
    PQclear(r);
    if (n > 0 && (w->quar == NULL || !ok)) {
        ob_wal_free_quarantine(w);
        return -1;       /* out of memory: streaming them would overtake their quarantined event */
    }
    if (w->nquar > 0)     /* qsort's array must not be NULL, even when empty */
        qsort(w->quar, (size_t) w->nquar, sizeof(*w->quar), wal_quar_cmp);
    return 0;
}

static void
wal_attach_pipe(ob_relay_t *rl)
{
    struct ob_wal_s  *w = rl->wal;
    rd_kafka_queue_t *q;

    if (w->pipe_rk == rl->rk)
        return;
    q = rd_kafka_queue_get_main(rl->rk);
    rd_kafka_queue_io_event_enable(q, w->pipe[1], "r", 1);
    rd_kafka_queue_destroy(q);
    w->pipe_rk = rl->rk;
}

static void
wal_start(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    char             err[512], app[64], cmd[512];
    PGresult        *r;

    w->retry_at_ms = ob_now_ms() + WAL_RETRY_MS;
    if (wal_load_quarantine(rl) != 0)
        return;
    snprintf(app, sizeof(app), "outboxd relay %d wal", rl->index);
    w->repl = ob_pg_connect_replication(ob_cfg_relay_dsn(rl->cfg), app, err, sizeof(err));
    if (w->repl == NULL) {
        ob_log(OB_LOG_WARN, "wal: %s", err);
        return;
    }
    /* A multi-host DSN may take the stream and the session to different servers (two primaries in a split
     * brain): the session's barrier and marks would then vouch for another server's transactions. */
    if (strcmp(PQhost(w->repl), PQhost(rl->pg)) != 0 || strcmp(PQport(w->repl), PQport(rl->pg)) != 0) {
        ob_log(OB_LOG_WARN, "wal: the stream reached %s:%s, the relay's session %s:%s; not streaming until both"
                            " reach one server", PQhost(w->repl), PQport(w->repl), PQhost(rl->pg), PQport(rl->pg));
        PQfinish(w->repl);
        w->repl = NULL;
        return;
    }
    snprintf(cmd, sizeof(cmd),
             "START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', publication_names '%s', binary 'true')",
             w->slot, w->pub);
    r = PQexec(w->repl, cmd);
    if (PQresultStatus(r) != PGRES_COPY_BOTH) {
        ob_log(OB_LOG_WARN, "wal: cannot stream from slot %s: %s", w->slot, PQresultErrorMessage(r));
        PQclear(r);
        PQfinish(w->repl);
        w->repl = NULL;
        w->ready = 0;      /* set-up looks at the slot again: invalidated? dropped? */
        return;
    }
    PQclear(r);
    wal_attach_pipe(rl);
    w->streaming = 1;
    w->base = w->done = w->marked = w->next;
    w->chead = w->ctail = 0;
    w->in_txn = w->have_map = w->halted = 0;
    w->nmark = 0;
    w->received = w->target = w->confirmed = 0;
    w->next_status_ms = ob_now_ms() + WAL_STATUS_MS;
    w->last_ack_ms = ob_now_ms();
    ob_log(OB_LOG_INFO, "wal: streaming from slot %s (publication %s, %s)", w->slot, w->pub, w->filter);
}

void
ob_wal_dr(ob_relay_t *rl, uint64_t n, rd_kafka_resp_err_t err, int64_t offset)
{
    struct ob_wal_s *w = rl->wal;
    wal_ev_t        *ev;

    if (w == NULL || n < w->base || n >= w->next)
        return;     /* a stream we stopped: its rows are streamed again */
    ev = &w->ring[n % WAL_WINDOW];
    ev->offset = offset;
    ev->acked_us = ob_wall_us();
    ev->acked_ms = ev->acked_us / 1000;
    ev->err = err;
    /* success without an offset is not verifiable: streamed again (a RETRY) */
    ev->state = ob_relay_outcome(err, offset, NULL, 0);
}

/*
 * A streamed row can be invisible to the mark for a moment: the walsender
 * sends a transaction once its commit record is flushed, and the committing
 * backend leaves the proc array (becomes visible) just after. On two busy
 * cores Kafka's acknowledgement sometimes won that race and the UPDATE
 * found nothing; since the row was then confirmed it stayed pending for
 * ever (the bench's settle step caught it). Rows the UPDATE did not find
 * are kept and tried again, and nothing past them is confirmed.
 */
static int
wal_flush_marks(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    int64_t          t0 = ob_now_us();
    int              kept = 0;

    if (w->nmark == 0)
        return 0;
    if (ob_relay_mark_rows(rl, w->marks, w->nmark, w->missing) != 0)
        return -1;
    for (int i = 0; i < w->nmark; i++) {
        if (!w->missing[i])
            continue;
        if (++w->mark_tries[i] > WAL_MARK_TRIES) {
            /* visible within seconds if it exists: it was deleted (quarantine, janitor) */
            ob_log(OB_LOG_WARN, "wal: outbox row %lld not found to mark after %d tries; assumed deleted",
                   (long long) w->marks[i].id, WAL_MARK_TRIES);
            continue;
        }
        w->marks[kept] = w->marks[i];
        w->mark_n[kept] = w->mark_n[i];
        w->mark_tries[kept++] = w->mark_tries[i];
    }
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_PUBLISHED], (uint64_t) (w->nmark - kept));
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_MARK_US], (uint64_t) (ob_now_us() - t0));
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_BATCHES], 1);
    w->nmark = kept;
    w->marked = ob_relay_marked_upto(w->mark_n, kept, w->done);
    w->mark_due_ms = ob_now_ms() + WAL_MARK_MS;
    return 0;
}

/* Marked before confirmed: a confirmed transaction is never streamed again. */
static void
wal_pop_commits(struct ob_wal_s *w)
{
    w->target = ob_relay_gate(w->commits, WAL_WINDOW, &w->chead, w->ctail, w->marked, w->target);
}

/*
 * Settles acknowledged events in order. Returns 0; -1 when the orderdb
 * session failed; or the state of the first event Kafka did not take.
 */
static int
wal_advance(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;

    while (w->done < w->next) {
        wal_ev_t *ev = &w->ring[w->done % WAL_WINDOW];
        if (ev->state == OB_DR_PENDING)
            break;
        if (ev->state != OB_DR_OK)
            return ev->state;
        if (rl->breaker != OB_BREAKER_CLOSED)
            ob_relay_set_breaker(rl, OB_BREAKER_CLOSED);
        w->last_ack_ms = ob_now_ms();
        if (w->nmark == WAL_MARK_BATCH && wal_flush_marks(rl) != 0)
            return -1;
        if (w->nmark == WAL_MARK_BATCH)
            break;     /* all of them waiting to become visible: settle later */
        if (w->nmark == 0)
            w->mark_due_ms = ob_now_ms() + WAL_MARK_MS;
        w->mark_n[w->nmark] = w->done;
        w->mark_tries[w->nmark] = 0;
        w->marks[w->nmark++] = (ob_relay_mark_t) { ev->id, ev->offset, ev->acked_ms };
        ob_relay_count_produced(rl, ev->topic, ev->partition, ev->offset);
        ob_relay_count_stages(rl, ev->committed_us, ev->streamed_us, ev->acked_us);
        w->done++;
    }
    if (w->nmark > 0 && ob_now_ms() >= w->mark_due_ms && wal_flush_marks(rl) != 0)
        return -1;
    if (w->nmark == 0)
        w->marked = w->done;
    wal_pop_commits(w);
    return 0;
}

/*
 * Kafka away is no failure for the stream (its messages never expire): it
 * stalls. The partitions' breaker field says so on the status page.
 */
static void
wal_show_stall(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    int              stalled = w->done < w->next && ob_now_ms() - w->last_ack_ms > rl->cfg->relay.delivery_timeout_ms;

    if (stalled == w->stalled)
        return;
    w->stalled = stalled;
    if (stalled)
        ob_log(OB_LOG_WARN, "wal: Kafka has acknowledged nothing for %d ms; the stream waits for it",
               rl->cfg->relay.delivery_timeout_ms);
    else
        ob_log(OB_LOG_INFO, "wal: Kafka acknowledges again; the stream goes on");
    for (int i = 0; i < rl->nparts; i++)
        atomic_store(&ob_shm->map->parts[rl->parts[i]].breaker, (int32_t) (stalled ? OB_BREAKER_OPEN : OB_BREAKER_CLOSED));
}

static int
wal_send_status(ob_relay_t *rl, int reply)
{
    struct ob_wal_s *w = rl->wal;
    char             msg[34];
    uint64_t         written = w->received > w->target ? w->received : w->target;
    int64_t          now = ob_now_ms();
    size_t           n = ob_pgo_status_update(msg, written, w->target, ob_pgo_pg_time(ob_wall_ms()), reply);

    if (PQputCopyData(w->repl, msg, (int) n) != 1 || PQflush(w->repl) != 0) {
        ob_log(OB_LOG_WARN, "wal: status update failed: %s", PQerrorMessage(w->repl));
        return -1;
    }
    w->confirmed = w->target;
    w->last_confirm_ms = now;
    w->next_status_ms = now + WAL_STATUS_MS;
    return 0;
}

static int
wal_confirm(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    int64_t          now = ob_now_ms();

    if ((w->target > w->confirmed && now - w->last_confirm_ms >= WAL_CONFIRM_MS) || now >= w->next_status_ms)
        return wal_send_status(rl, 0);
    return 0;
}

static int
wal_quarantined(struct ob_wal_s *w, const ob_relay_row_t *ev)
{
    char        key[OB_AGG_TYPE_MAX + OB_AGG_ID_MAX + 2];
    const char *k = key;

    if (w->nquar == 0)
        return 0;
    snprintf(key, sizeof(key), "%s/%s", ev->aggregate_type, ev->aggregate_id);
    return bsearch(&k, w->quar, (size_t) w->nquar, sizeof(*w->quar), wal_quar_cmp) != NULL;
}

/* The relay's copy of a decoded row; -1 when a field is larger than its bounds. */
static int
wal_fields(ob_relay_row_t *ev, const ob_pgo_outbox_row_t *row)
{
    memset(ev, 0, sizeof(*ev));
    ev->id = row->id;
    ev->partition = row->partition;
    ev->seq = row->seq;
    memcpy(ev->event_id, row->event_id, sizeof(ev->event_id));
    return ob_relay_field(ev->aggregate_type, sizeof(ev->aggregate_type), row->aggregate_type.p,
                          row->aggregate_type.len) |
           ob_relay_field(ev->aggregate_id, sizeof(ev->aggregate_id), row->aggregate_id.p, row->aggregate_id.len) |
           ob_relay_field(ev->event_type, sizeof(ev->event_type), row->event_type.p, row->event_type.len) |
           (row->content_type.p == NULL ? 0
                                        : ob_relay_field(ev->content_type, sizeof(ev->content_type),
                                                         row->content_type.p, row->content_type.len));
}

/* Produces one decoded event (ev->id and the rest filled); a refusal halts the stream. */
static void
wal_emit(ob_relay_t *rl, ob_relay_row_t *ev, const ob_relay_body_t *b, int fits)
{
    struct ob_wal_s    *w = rl->wal;
    wal_ev_t           *fl;
    rd_kafka_resp_err_t e;

    if (w->done == w->next)
        w->last_ack_ms = ob_now_ms();     /* the stall clock starts with the first event in flight */
    fl = &w->ring[w->next % WAL_WINDOW];
    *fl = (wal_ev_t) { .id = ev->id, .partition = ev->partition, .state = OB_DR_PENDING, .offset = -1,
                       .committed_us = w->txn_commit_us, .streamed_us = ob_wall_us() };
    if (!fits) {
        /* a writer past the schema's checks: refused whole (quarantined), never cut */
        ob_log(OB_LOG_ERROR, "wal: outbox row %lld has a field longer than the relay's bounds", (long long) ev->id);
        e = RD_KAFKA_RESP_ERR__INVALID_ARG;
    } else {
        e = ob_relay_produce(rl, ev, b, (void *) (uintptr_t) (OB_WAL_OPAQUE_TAG | w->next));
        fl->topic = ev->topic;
    }
    w->next++;
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* a later event of its order must not reach Kafka first: the stream reads no further and ends once
         * what went before is settled */
        w->halted = 1;
        ob_wal_dr(rl, w->next - 1, e, -1);
    } else
        atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_STREAMED], 1);
}

void
ob_wal_drop_held(struct ob_wal_s *w)
{
    for (int i = 0; i < w->nheld; i++)
        free(w->held[i].data);
    w->nheld = 0;
    w->held_bytes = 0;
}

/* Keeps a copy of the event until its Commit: 0, or -1 when there is no room (or memory) for it. */
static int
wal_hold(struct ob_wal_s *w, const ob_relay_row_t *ev, const ob_relay_body_t *b, int fits)
{
    size_t      n = b->len + b->hlen;
    wal_held_t *h = &w->held[w->nheld];

    if (w->nheld == WAL_HOLD_MAX || w->held_bytes + n > WAL_HOLD_BYTES || (h->data = malloc(n ? n : 1)) == NULL)
        return -1;
    memcpy(h->data, b->payload, b->len);
    if (b->headers != NULL)
        memcpy(h->data + b->len, b->headers, b->hlen);
    h->ev = *ev;
    h->plen = b->len;
    h->hlen = b->hlen;
    h->has_headers = b->headers != NULL;
    h->fits = fits;
    w->nheld++;
    w->held_bytes += n;
    return 0;
}

/* The held events, in order, once their commit passed the barrier; after a refusal none more. */
static void
wal_release(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;

    for (int i = 0; i < w->nheld && !w->halted; i++) {
        wal_held_t     *h = &w->held[i];
        ob_relay_body_t b = { h->data, h->plen, h->has_headers ? h->data + h->plen : NULL, h->hlen };
        wal_emit(rl, &h->ev, &b, h->fits);
    }
    ob_wal_drop_held(w);
}

/*
 * Whether the barrier lets the transaction's events go: 1 yes (held ones
 * produced), 0 not yet (the stream stops, and reads this transaction again
 * from its slot), -1 the session failed. lsn is its commit's end; 0 for a
 * transaction too large to hold until then, whose commit the server has
 * flushed already (it is being sent), so a barrier taken now covers it.
 */
static int
wal_barrier(ob_relay_t *rl, uint64_t lsn)
{
    int rc = ob_barrier_wait(rl, lsn);

    if (rc > 0) {
        wal_release(rl);
        rl->wal->txn_safe = 1;
    }
    return rc;
}

static int
wal_insert(ob_relay_t *rl, const ob_pgo_msg_t *m)
{
    struct ob_wal_s    *w = rl->wal;
    ob_pgo_outbox_row_t row;
    ob_relay_row_t      ev;
    ob_relay_body_t     b;
    char                err[256];
    int                 fits;

    if (!w->have_map || m->relid != w->map.relid)
        return 0;           /* not the outbox */
    if (ob_pgo_outbox_row(m, &w->map, &row, err, sizeof(err)) != 0) {
        ob_log(OB_LOG_ERROR, "wal: %s", err);
        return -1;
    }
    fits = wal_fields(&ev, &row) == 0;
    /* before a re-split's LSN the old filter applies: another relay owns these now */
    if (row.partition < 0 || row.partition >= OB_SHM_PARTITIONS || !rl->in_share[row.partition] || (fits && wal_quarantined(w, &ev)))
        return 0;
    b = (ob_relay_body_t) { row.payload.p, row.payload.len, row.headers.p, row.headers.len };
    if (!w->txn_safe && wal_hold(w, &ev, &b, fits) == 0)
        return 0;
    if (!w->txn_safe && wal_barrier(rl, 0) <= 0)
        return -1;
    if (!w->halted)
        wal_emit(rl, &ev, &b, fits);
    return 0;
}

static int
wal_message(ob_relay_t *rl, const ob_pgo_frame_t *f)
{
    struct ob_wal_s *w = rl->wal;
    ob_pgo_msg_t     m;
    char             err[256];
    ob_wal_commit_t *c;

    if (ob_pgo_decode(f->data, f->len, &m, err, sizeof(err)) != 0) {
        ob_log(OB_LOG_ERROR, "wal: %s", err);
        return -1;
    }
    switch (m.kind) {
    case OB_PGO_BEGIN:
        w->in_txn = 1;
        w->txn_commit_us = m.ts + WAL_PG_EPOCH_US;
        w->txn_safe = !rl->barrier;
        ob_wal_drop_held(w);
        break;
    case OB_PGO_COMMIT:
        if (w->nheld > 0 && wal_barrier(rl, m.end_lsn) <= 0)
            return -1;
        w->in_txn = 0;
        c = &w->commits[w->ctail++ % WAL_WINDOW];
        c->end_lsn = m.end_lsn;
        c->upto = w->next;
        c->recv_ms = ob_now_ms();
        if (m.end_lsn > w->received)
            w->received = m.end_lsn;
        break;
    case OB_PGO_RELATION:
        if (ob_pgo_is_outbox(&m.rel)) {
            if (ob_pgo_outbox_map(&m.rel, &w->map, err, sizeof(err)) != 0) {
                ob_log(OB_LOG_ERROR, "wal: %s", err);
                return -1;
            }
            w->have_map = 1;
        }
        break;
    case OB_PGO_INSERT:
        return wal_insert(rl, &m);
    case OB_PGO_SKIPPED:
        break;
    }
    return 0;
}

static int
wal_frame(ob_relay_t *rl, const char *buf, int len)
{
    struct ob_wal_s *w = rl->wal;
    ob_pgo_frame_t   f;
    char             err[256];

    if (ob_pgo_frame(buf, (size_t) len, &f, err, sizeof(err)) != 0) {
        ob_log(OB_LOG_ERROR, "wal: %s", err);
        return -1;
    }
    if (f.type == 'w')
        return wal_message(rl, &f);
    if (f.wal_end > w->received)
        w->received = f.wal_end;
    /* nothing in flight, nothing half-read: all the server sent is settled */
    if (!w->in_txn && w->done == w->next && w->nmark == 0 && w->chead == w->ctail && f.wal_end > w->target)
        w->target = f.wal_end;
    return f.reply_requested ? wal_send_status(rl, 0) : 0;
}

static void
wal_drain_pipe(struct ob_wal_s *w)
{
    char buf[64];

    while (read(w->pipe[0], buf, sizeof(buf)) > 0)
        ;
}

/* Waits up to ms for the replication socket (when want_socket) or a delivery report. */
static int
wal_wait(ob_relay_t *rl, int want_socket, int ms)
{
    struct ob_wal_s *w = rl->wal;
    struct pollfd    fds[2] = { { .fd = w->pipe[0], .events = POLLIN }, { .fd = PQsocket(w->repl), .events = POLLIN } };

    if (poll(fds, want_socket ? 2 : 1, ms) < 0 && errno != EINTR)
        return -1;
    if (want_socket && (fds[1].revents & (POLLIN | POLLERR | POLLHUP)) && PQconsumeInput(w->repl) != 1)
        return -1;
    return 0;
}

static void
wal_failed(ob_relay_t *rl, int state)
{
    struct ob_wal_s *w = rl->wal;
    wal_ev_t        *ev = &w->ring[w->done % WAL_WINDOW];

    if (state == OB_DR_REJECTED) {
        ob_log(OB_LOG_ERROR, "wal: event id %lld refused (%s; the relay's own refusals are logged above it);"
                             " a polling pass quarantines it",
               (long long) ev->id, rd_kafka_err2str(ev->err));
        ob_wal_update_flag(rl, 1);
        atomic_fetch_add(&ob_shm->map->parts[ev->partition].errors, 1);
    } else {
        ob_log(OB_LOG_WARN, "wal: Kafka did not acknowledge event id %lld (%s); the stream resumes from the slot",
               (long long) ev->id, rd_kafka_err2str(ev->err));
        atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_ERRORS], 1);
        atomic_fetch_add(&ob_shm->map->parts[ev->partition].errors, 1);
        ob_relay_set_breaker(rl, OB_BREAKER_OPEN);
    }
    ob_wal_stop(rl, 0);
}

/* Room for one more frame: a Commit may release a whole held transaction at once. */
static int
wal_room(const struct ob_wal_s *w)
{
    return w->next - w->done + WAL_HOLD_MAX + 1 < WAL_WINDOW && w->ctail - w->chead + 1 < WAL_WINDOW;
}

/* One read from the stream: 1 got a frame, 0 nothing now, -1 the stream ended. */
static int
wal_read(ob_relay_t *rl, int wait_ms)
{
    struct ob_wal_s *w = rl->wal;
    char            *buf = NULL;
    int              n = PQgetCopyData(w->repl, &buf, 1), rc;

    if (n == 0)
        return wal_wait(rl, 1, wait_ms) == 0 ? 0 : -1;
    if (n < 0) {
        PGresult *r = PQgetResult(w->repl);
        ob_log(OB_LOG_WARN, "wal: stream from slot %s ended: %s", w->slot,
               r ? PQresultErrorMessage(r) : PQerrorMessage(w->repl));
        PQclear(r);
        w->ready = 0;
        return -1;
    }
    rc = wal_frame(rl, buf, n);
    PQfreemem(buf);
    return rc == 0 ? 1 : -1;
}

int
ob_wal_step(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    int64_t          deadline = ob_now_ms() + WAL_STEP_MS;

    if (!w->streaming) {
        wal_start(rl);
        return 0;
    }
    while (w->streaming && !ob_sig_term && !ob_sig_quit && ob_now_ms() < deadline) {
        int rc;
        rd_kafka_poll(rl->rk, 0);
        wal_drain_pipe(w);
        rc = wal_advance(rl);
        if (rc < 0) {
            ob_wal_stop(rl, 0);
            return -1;
        }
        if (rc > 0) {
            wal_failed(rl, rc);
            break;
        }
        wal_show_stall(rl);
        if (wal_confirm(rl) != 0) {
            ob_wal_stop(rl, 0);
            break;
        }
        if (w->halted || !wal_room(w)) {
            wal_wait(rl, 0, 10);       /* full or halted: let Kafka settle, the server keeps the rest */
            continue;
        }
        /* a burst of frames, then back to settling */
        for (int i = 0; i < 256 && !w->halted && wal_room(w); i++) {
            rc = wal_read(rl, (int) (deadline - ob_now_ms() > 10 ? 10 : 1));
            if (rc <= 0)
                break;
        }
        if (rc < 0)
            ob_wal_stop(rl, 0);
    }
    ob_shm_beat(rl->slot);
    return 0;
}

void
ob_wal_stop(ob_relay_t *rl, int finish)
{
    struct ob_wal_s *w = rl->wal;

    if (w == NULL || !w->streaming)
        return;
    if (finish) {
        int64_t deadline = ob_now_ms() + rl->cfg->relay.delivery_timeout_ms;
        while (w->done < w->next && ob_now_ms() < deadline) {
            rd_kafka_poll(rl->rk, 50);
            ob_shm_beat(rl->slot);
            if (wal_advance(rl) != 0)
                break;
        }
    }
    if (rl->pg != NULL && PQstatus(rl->pg) == CONNECTION_OK && wal_flush_marks(rl) == 0) {
        wal_pop_commits(w);
        if (w->target > w->confirmed && PQstatus(w->repl) == CONNECTION_OK)
            wal_send_status(rl, 0);
    }
    PQfinish(w->repl);
    w->repl = NULL;
    ob_wal_drop_held(w);     /* read again from the slot */
    w->streaming = 0;
    w->halted = 0;
    w->base = w->done = w->marked = w->next;     /* later reports of this session are ignored */
    w->nmark = 0;
    w->stopped_ms = ob_now_ms();
    w->retry_at_ms = ob_now_ms() + (finish ? 0 : WAL_RETRY_MS);
    ob_wal_counter(rl, OB_CTR_RELAY_STREAMING, 0);
}
