/*
 * tests/harness/outbox.c: events a test makes up (ids, outbox rows written
 * as the HTTP worker would) and Kafka's log checked against the outbox.
 */
#include "tests/harness.h"
#include "common/murmur2.h"
#include "common/util.h"
#include "common/uuid.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
obh_new_uuid(char id[37])
{
    ob_uuid_t u;

    cr_assert_eq(ob_uuid_v7(&u), 0);
    ob_uuid_format(&u, id);
}

void
obh_insert_events(obh_t *h, int n, int per_order, char (*ids)[37])
{
    obh_insert_events_ex(h, n, per_order, ids, 0, 0);
}

void
obh_insert_events_ex(obh_t *h, int n, int per_order, char (*ids)[37], int one_txn, int first_bytes)
{
    PGconn *pg = obh_pg(h->orders_dsn);

    if (one_txn)
        PQclear(PQexec(pg, "BEGIN"));
    for (int i = 0; i < n; i++) {
        ob_uuid_t u;
        char      part[16], per[16], size[16];
        cr_assert_eq(ob_uuid_v7(&u), 0);
        ob_uuid_format(&u, ids[i]);
        snprintf(part, sizeof(part), "%d", ob_partition_for(ids[i], 36, h->partitions));
        snprintf(per, sizeof(per), "%d", per_order);
        snprintf(size, sizeof(size), "%d", i == 0 ? first_bytes : 0);
        const char *params[4] = { ids[i], part, per, size };
        PGresult   *r = PQexecParams(pg,
                                     "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq,"
                                     " event_type, partition, payload) SELECT gen_random_uuid(), 'order', $1::text, s,"
                                     " 'order.test', $2::int, convert_to(CASE WHEN s = 1 AND $4::int > 0"
                                     "   THEN repeat('x', $4::int) ELSE 'payload ' || s END, 'UTF8')"
                                     " FROM generate_series(1, $3::int) s",
                                     4, NULL, params, NULL, NULL, 0);
        cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
        PQclear(r);
    }
    if (one_txn)
        PQclear(PQexec(pg, "COMMIT"));
    PQfinish(pg);
}

typedef struct {
    char    key[40];
    int32_t partition;
    int32_t max_seq;
} obh_order_seen_t;

static int
obh_cmp_msg(const void *a, const void *b)
{
    const obh_msg_t *x = a, *y = b;

    if (x->partition != y->partition)
        return x->partition - y->partition;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int
obh_check_log(obh_t *h, const obh_msg_t *msgs, int n, int expect_events)
{
    obh_msg_t *m = malloc((size_t) n * sizeof(*m));
    int        dups = 0, norders = 0;
    obh_order_seen_t *seen = calloc((size_t) n + 1, sizeof(*seen));

    memcpy(m, msgs, (size_t) n * sizeof(*m));
    qsort(m, (size_t) n, sizeof(*m), obh_cmp_msg);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(m[i].partition, ob_partition_for(m[i].key, strlen(m[i].key), h->partitions),
                     "event %s of %s in partition %d, murmur2 says %d", m[i].event_id, m[i].key, m[i].partition,
                     ob_partition_for(m[i].key, strlen(m[i].key), h->partitions));
        obh_order_seen_t *o = NULL;
        for (int k = 0; k < norders && o == NULL; k++)
            if (strcmp(seen[k].key, m[i].key) == 0)
                o = &seen[k];
        if (o == NULL) {
            o = &seen[norders++];
            ob_strlcpy(o->key, m[i].key, sizeof(o->key));
            o->partition = m[i].partition;
        }
        if (m[i].seq <= o->max_seq) {
            dups++;    /* a re-send of something already in the log */
            continue;
        }
        cr_assert_eq(m[i].seq, o->max_seq + 1, "order %s: seq %d after %d at %d/%lld (gap or reorder)", m[i].key,
                     m[i].seq, o->max_seq, m[i].partition, (long long) m[i].offset);
        o->max_seq = m[i].seq;
    }
    /* every outbox event is in the log, and its row carries its true offset */
    cr_assert_eq(n - dups, expect_events, "%d distinct events in Kafka, %d expected", n - dups, expect_events);
    PGconn *pg = obh_pg(h->orders_dsn);
    for (int i = 0; i < n; i++) {
        const char *params[1] = { m[i].event_id };
        PGresult   *r = PQexecParams(pg, "SELECT kafka_offset, partition FROM outboxd.outbox WHERE event_id = $1::uuid",
                                     1, NULL, params, NULL, NULL, 0);
        cr_assert_eq(PQntuples(r), 1, "event %s from Kafka is not in the outbox", m[i].event_id);
        cr_assert_eq(atoi(PQgetvalue(r, 0, 1)), m[i].partition);
        if (dups == 0)
            cr_assert_eq(atoll(PQgetvalue(r, 0, 0)), m[i].offset, "event %s marked with offset %s, Kafka has %lld",
                         m[i].event_id, PQgetvalue(r, 0, 0), (long long) m[i].offset);
        PQclear(r);
    }
    PQfinish(pg);
    free(seen);
    free(m);
    return dups;
}
