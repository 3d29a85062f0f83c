/*
 * workers/relay/mark.c: marking acknowledged events published, for both
 * engines (the polling cycle marks its batch, the stream marks in batches
 * of its own), on the session that holds the partition locks.
 */
#include "relay_int.h"
#include "../../common/pg.h"
#include "../../common/pgarr.h"
#include "../../common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* published_at is when Kafka acknowledged, not when the mark ran: mode wal marks
 * in batches, and commit -> Kafka latency is read from this column. */
static const char *mark_sql =
    "UPDATE outboxd.outbox SET published = true, kafka_offset = v.off,"
    "   published_at = timestamptz 'epoch' + v.at * interval '1 millisecond'"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, off, at) WHERE outbox.id = v.id"
    " RETURNING outbox.id";

int
ob_relay_sql_ok(PGconn *pg, PGresult *r, const char *what)
{
    char err[256];

    if ((r = ob_pg_check(pg, r, NULL, err, sizeof(err))) == NULL) {
        ob_log(OB_LOG_WARN, "%s failed: %s", what, err);
        return 0;
    }
    PQclear(r);
    return 1;
}

static int
mark_id_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;

    return x < y ? -1 : x > y;
}

/* missing[i] = 1 for each row the UPDATE did not return. */
static void
mark_missing(PGresult *r, const ob_relay_mark_t *m, int n, unsigned char *missing)
{
    int      got = PQntuples(r);
    int64_t *ids = malloc((size_t) (got ? got : 1) * sizeof(*ids));

    for (int i = 0; i < got && ids != NULL; i++)
        ids[i] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    if (ids != NULL)
        qsort(ids, (size_t) got, sizeof(*ids), mark_id_cmp);
    for (int i = 0; i < n; i++)
        missing[i] = ids == NULL || bsearch(&m[i].id, ids, (size_t) got, sizeof(*ids), mark_id_cmp) == NULL;
    free(ids);
}

/*
 * Marks rows published with the offsets Kafka gave them, in one UPDATE.
 * Returns 0, or -1 when the statement failed.
 */
int
ob_relay_mark_rows(ob_relay_t *rl, const ob_relay_mark_t *m, int n, unsigned char *missing)
{
    ob_pgarr_t  a[3] = { { 0 } };
    char       *lit[3] = { NULL };
    const char *params[3];
    int         ok = 0;

    if (n == 0)
        return 0;
    for (int i = 0; i < n; i++) {
        ob_pgarr_add_int(&a[0], m[i].id);
        ob_pgarr_add_int(&a[1], m[i].offset);
        ob_pgarr_add_int(&a[2], m[i].acked_ms);
    }
    for (int k = 0; k < 3; k++)
        params[k] = lit[k] = ob_pgarr_end(&a[k]);
    if (lit[0] && lit[1] && lit[2]) {
        char      err[256];
        PGresult *r = ob_pg_check(rl->pg, PQexecParams(rl->pg, mark_sql, 3, NULL, params, NULL, NULL, 0), NULL, err,
                                  sizeof(err));
        if (r == NULL)
            ob_log(OB_LOG_WARN, "mark published failed: %s", err);
        else if (missing != NULL)
            mark_missing(r, m, n, missing);
        PQclear(r);
        ok = r != NULL;
    }
    for (int k = 0; k < 3; k++)
        free(lit[k]);
    return ok ? 0 : -1;
}

void
ob_relay_count_stages(const ob_relay_t *rl, int64_t committed_us, int64_t claimed_us, int64_t acked_us)
{
    if (committed_us > 0)
        ob_shm_stage_add(rl->slot, OB_STAGE_RELAY_CLAIM, claimed_us - committed_us);
    ob_shm_stage_add(rl->slot, OB_STAGE_RELAY_ACK, acked_us - claimed_us);
}

void
ob_relay_count_produced(const ob_relay_t *rl, int topic, int partition, int64_t offset)
{
    int t = topic >= 0 && topic < rl->ntopics ? rl->shm_topic[topic] : -1;

    atomic_fetch_add(&ob_shm->map->parts[partition].produced, 1);
    if (t >= 0) {
        atomic_fetch_add(&ob_shm->map->topics[t].parts[partition].produced, 1);
        atomic_store(&ob_shm->map->topics[t].parts[partition].last_offset, offset);
    }
}
