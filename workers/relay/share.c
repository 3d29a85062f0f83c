/*
 * workers/relay/share.c: which partitions this relay publishes, shared
 * with the relays of every instance on the same orderdb.
 *
 * NOTES
 *   PostgreSQL is the coordinator, with nothing but session advisory
 *   locks. A relay holds one seat, the lock (OB_RELAY_SEAT_CLASS, s) on
 *   the session that also holds its partition locks, and reads the seats
 *   held from pg_locks once a tick. With n seats held, the relay at rank r
 *   among them owns the partitions p with p % n = r (ob_relay_share).
 *
 *   Why this is safe: the seat only says what a relay should take; the
 *   partition's advisory lock stays the fence. Two relays reading the
 *   seats at different moments may both want a partition, and only one
 *   gets its lock; neither publishes a partition whose lock it lacks. A
 *   relay releases a partition only between cycles (polling) or after its
 *   stream stopped with everything sent acknowledged and marked (wal), so
 *   the next owner claims the partition's oldest pending row after the
 *   last one marked: order holds across the handover.
 *
 *   Why one session: membership, fence and work die together. A relay
 *   killed, or a host cut off from PostgreSQL, loses its seat and its locks
 *   when the server ends the session (at once, or within peer_timeout_s),
 *   and the others take its share at their next tick. With a separate
 *   membership (a Kafka group, a lease table) a relay could be a member
 *   without its locks, or hold locks while its membership had lapsed.
 *
 *   Seats stay dense: a relay takes the lowest free seat, and when one
 *   leaves, the relay with the highest seat moves into the hole, so slot
 *   names (<prefix>_<seat>, mode wal) stay 0..n-1 and are reused.
 */
#include "relay_int.h"
#include "../../common/log.h"
#include "../../common/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
share_int_query(ob_relay_t *rl, const char *sql, int a, int b, PGresult **out, char *err, size_t errlen)
{
    char        sa[16], sb[16];
    const char *params[2] = { sa, sb };

    snprintf(sa, sizeof(sa), "%d", a);
    snprintf(sb, sizeof(sb), "%d", b);
    *out = ob_pg_query(rl->pg, sql, 2, params, NULL, err, errlen);
    return *out != NULL ? 0 : -1;
}

/* A statement answering one boolean: 1, 0, or -1 when the session failed. */
static int
share_lock_sql(ob_relay_t *rl, const char *sql, int cls, int key, char *err, size_t errlen)
{
    PGresult *r;
    int       got;

    if (share_int_query(rl, sql, cls, key, &r, err, errlen) != 0)
        return -1;
    got = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return got;
}

/* The seats held on this database, ascending; their count, or -1. */
static int
share_read_seats(ob_relay_t *rl, int *seats, char *err, size_t errlen)
{
    PGresult *r;
    int       n = 0;

    if (share_int_query(rl,
                        "SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::int::oid"
                        " AND objsubid = 2 AND granted AND objid < $2::int::oid"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                        " ORDER BY 1",
                        OB_RELAY_SEAT_CLASS, OB_RELAY_SEATS_MAX, &r, err, errlen) != 0)
        return -1;
    for (int i = 0; i < PQntuples(r) && n < OB_RELAY_SEATS_MAX; i++)
        seats[n++] = atoi(PQgetvalue(r, i, 0));
    PQclear(r);
    return n;
}

/* Takes the lowest free seat: one statement tries them in order and stops at the first it gets. */
static int
share_take_seat(ob_relay_t *rl, char *err, size_t errlen)
{
    PGresult *r;

    if (share_int_query(rl,
                        "SELECT s FROM generate_series(0, $2::int - 1) AS s WHERE pg_try_advisory_lock($1::int, s)"
                        " LIMIT 1",
                        OB_RELAY_SEAT_CLASS, OB_RELAY_SEATS_MAX, &r, err, errlen) != 0)
        return -1;
    if (PQntuples(r) == 1)
        rl->seat = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

/* Moves this relay's seat down into hole; stays where it is if another relay got there first. */
static int
share_move_seat(ob_relay_t *rl, int hole, char *err, size_t errlen)
{
    int got = share_lock_sql(rl, "SELECT pg_try_advisory_lock($1::int, $2::int)", OB_RELAY_SEAT_CLASS, hole, err,
                             errlen);

    if (got <= 0)
        return got;
    if (share_lock_sql(rl, "SELECT pg_advisory_unlock($1::int, $2::int)", OB_RELAY_SEAT_CLASS, rl->seat, err,
                       errlen) < 0)
        return -1;
    ob_log(OB_LOG_INFO, "relay seat %d left free: moved down to seat %d", rl->seat, hole);
    rl->seat = hole;
    return 1;
}

int
ob_share_plan(ob_relay_t *rl, ob_share_plan_t *plan, char *err, size_t errlen)
{
    int seats[OB_RELAY_SEATS_MAX], n, hole;

    if (rl->seat < 0 && share_take_seat(rl, err, errlen) != 0)
        return -1;
    if ((n = share_read_seats(rl, seats, err, errlen)) < 0)
        return -1;
    if ((hole = ob_relay_seat_hole(seats, n, rl->seat)) >= 0) {
        int moved = share_move_seat(rl, hole, err, errlen);
        if (moved < 0 || (moved > 0 && (n = share_read_seats(rl, seats, err, errlen)) < 0))
            return -1;
    }
    plan->seat = rl->seat;
    plan->members = n;
    plan->nparts = ob_relay_share(seats, n, rl->seat, rl->cfg->kafka.partitions, plan->parts, &plan->rank);
    return plan->seat != rl->share_seat || plan->members != rl->members || plan->rank != rl->rank;
}

/* What this relay and the status page believe; the lock itself is the caller's. */
static void
share_disown(ob_relay_t *rl, int p)
{
    ob_shm_set_owned(rl->slot, p, 0);
    atomic_store(&ob_shm->map->parts[p].owner_slot, -1);
    rl->held[p] = 0;
}

/* Lets go of partition p: shm first, so no HTTP worker wakes us for it and status shows it free. */
static int
share_release(ob_relay_t *rl, int p, char *err, size_t errlen)
{
    share_disown(rl, p);
    return share_lock_sql(rl, "SELECT pg_advisory_unlock($1::int, $2::int)", OB_RELAY_LOCK_CLASS, p, err, errlen) < 0
               ? -1
               : 0;
}

int
ob_share_apply(ob_relay_t *rl, const ob_share_plan_t *plan, char *err, size_t errlen)
{
    unsigned char keep[OB_SHM_PARTITIONS] = { 0 };

    for (int i = 0; i < plan->nparts; i++)
        keep[plan->parts[i]] = 1;
    for (int p = 0; p < OB_SHM_PARTITIONS; p++)
        if (rl->held[p] && !keep[p] && share_release(rl, p, err, errlen) != 0)
            return -1;
    memcpy(rl->in_share, keep, sizeof(keep));
    memcpy(rl->parts, plan->parts, (size_t) plan->nparts * sizeof(*plan->parts));
    rl->nparts = plan->nparts;
    rl->share_seat = plan->seat;
    rl->members = plan->members;
    rl->rank = plan->rank;
    ob_log(OB_LOG_INFO, "relay seat %d, %d of %d relays on orderdb: owns %d of %d partitions", plan->seat,
           plan->rank + 1, plan->members, plan->nparts, rl->cfg->kafka.partitions);
    return 0;
}

int
ob_share_lock(ob_relay_t *rl, char *err, size_t errlen)
{
    uint64_t held = 0;

    for (int i = 0; i < rl->nparts; i++) {
        int p = rl->parts[i], got;
        if (!rl->held[p]) {
            if ((got = share_lock_sql(rl, "SELECT pg_try_advisory_lock($1::int, $2::int)", OB_RELAY_LOCK_CLASS, p, err,
                                      errlen)) < 0)
                return -1;
            if (got) {
                rl->held[p] = 1;
                atomic_store(&ob_shm->map->parts[p].owner_slot, (int32_t) (rl->slot - ob_shm->map->slots));
                atomic_store(&ob_shm->map->parts[p].breaker, (int32_t) rl->breaker);
                ob_shm_set_owned(rl->slot, p, 1);
            }
        }
        held += rl->held[p];
    }
    atomic_store(&rl->slot->counters[OB_CTR_RELAY_LOCKS_HELD], held);
    return 0;
}

void
ob_share_forget(ob_relay_t *rl)
{
    for (int p = 0; p < OB_SHM_PARTITIONS; p++)
        if (rl->held[p])
            share_disown(rl, p);
    atomic_store(&rl->slot->counters[OB_CTR_RELAY_LOCKS_HELD], 0);
    rl->seat = -1;
}
