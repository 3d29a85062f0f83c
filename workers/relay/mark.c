/*
 * workers/relay/mark.c: marking acknowledged events published, for both
 * engines (the polling cycle marks its batch, the stream marks in batches
 * of its own), on the session that holds the partition locks.
 */
#include "relay_int.h"
#include "../../common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* published_at is when Kafka acknowledged, not when the mark ran: mode wal marks
 * in batches, and commit -> Kafka latency is read from this column. */
static const char *mark_sql =
    "UPDATE outbox SET published = true, kafka_offset = v.off,"
    "   published_at = timestamptz 'epoch' + v.at * interval '1 millisecond'"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, off, at) WHERE outbox.id = v.id"
    " RETURNING outbox.id";

int
ob_relay_sql_ok(PGresult *r, const char *what)
{
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok)
        ob_log(OB_LOG_WARN, "%s failed: %s", what, PQresultErrorMessage(r));
    PQclear(r);
    return ok;
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
    size_t      cap = (size_t) n * 24 + 8, len[3] = { 1, 1, 1 };
    char       *lit[3] = { malloc(cap), malloc(cap), malloc(cap) };
    const char *params[3] = { lit[0], lit[1], lit[2] };
    int         ok = 0;

    if (n > 0 && lit[0] && lit[1] && lit[2]) {
        lit[0][0] = lit[1][0] = lit[2][0] = '{';
        for (int i = 0; i < n; i++) {
            const char *sep = i ? "," : "";
            len[0] += (size_t) sprintf(lit[0] + len[0], "%s%lld", sep, (long long) m[i].id);
            len[1] += (size_t) sprintf(lit[1] + len[1], "%s%lld", sep, (long long) m[i].offset);
            len[2] += (size_t) sprintf(lit[2] + len[2], "%s%lld", sep, (long long) m[i].acked_ms);
        }
        for (int k = 0; k < 3; k++)
            strcpy(lit[k] + len[k], "}");
        PGresult *r = PQexecParams(rl->pg, mark_sql, 3, NULL, params, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        if (ok && missing != NULL)
            mark_missing(r, m, n, missing);
        ok = ob_relay_sql_ok(r, "mark published");
    }
    for (int k = 0; k < 3; k++)
        free(lit[k]);
    return n == 0 || ok ? 0 : -1;
}

void
ob_relay_count_produced(int partition, int64_t offset)
{
    ob_shm_part_t *pt = &ob_shm->map->parts[partition];

    atomic_fetch_add(&pt->produced, 1);
    atomic_store(&pt->last_offset, offset);
}
