/*
 * cli/replay_dead.c: `outboxd replay --dead-letters (--id N | --all)
 * [--dry-run]`.
 *
 * Re-applies stored dead letters, once their cause is fixed, through the
 * consumer's own apply path (workers/consumer/apply.c): the same decoding,
 * validation and ledger_apply_events() call. One that applies (booked,
 * parked behind a missing predecessor, or found already booked) is removed;
 * one that still fails stays, with its new error and a replay count.
 *
 * One transaction, a savepoint per dead letter, in Kafka order, so an
 * order's charge replayed before its cancel is seen by it, and a dry run
 * (rolled back at the end) tells the same story a real run would.
 * Constraints are checked per statement (SET CONSTRAINTS ALL IMMEDIATE), so
 * a deferred check fails the dead letter that broke it, not the commit.
 * A failure that is not a data error (the database away, a serialization
 * failure, ...) stops the replay and changes nothing.
 */
#include "cmd.h"
#include "../common/pg.h"
#include "../common/util.h"
#include "../workers/consumer/apply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One dead letter's record, decoded from hex into buffers it owns. */
typedef struct {
    ob_cons_record_t r;
    char             topic[256];
    unsigned char   *key, *value;
    char            *names[OB_CONS_MAX_HEADERS];
    unsigned char   *vals[OB_CONS_MAX_HEADERS];
} dead_t;

/* Decodes hex of len chars into a malloc'd buffer (NUL-terminated); NULL when not hex. */
static unsigned char *
unhex(const char *hex, size_t len, size_t *out_len)
{
    unsigned char *b = malloc(len / 2 + 1);

    if (b == NULL || len % 2 != 0) {
        free(b);
        return NULL;
    }
    for (size_t i = 0; i < len / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
            free(b);
            return NULL;
        }
        b[i] = (unsigned char) v;
    }
    b[len / 2] = '\0';
    *out_len = len / 2;
    return b;
}

static void
dead_free(dead_t *d)
{
    free(d->key);
    free(d->value);
    for (int i = 0; i < d->r.nheaders; i++) {
        free(d->names[i]);
        free(d->vals[i]);
    }
}

/* "namehex:valuehex,..." ('-' for a header without a value) into d's headers; -1 when malformed. */
static int
dead_headers(dead_t *d, const char *s)
{
    while (*s != '\0') {
        const char *colon = strchr(s, ':'), *end = strchr(s, ',');
        size_t      n;
        if (end == NULL)
            end = s + strlen(s);
        if (colon == NULL || colon > end || d->r.nheaders == OB_CONS_MAX_HEADERS)
            return -1;
        int k = d->r.nheaders++;
        d->names[k] = (char *) unhex(s, (size_t) (colon - s), &n);
        d->vals[k] = colon[1] == '-' ? NULL : unhex(colon + 1, (size_t) (end - colon - 1), &d->r.headers[k].value_len);
        if (d->names[k] == NULL || (colon[1] != '-' && d->vals[k] == NULL))
            return -1;
        d->r.headers[k].name = d->names[k];
        d->r.headers[k].value = d->vals[k];
        s = *end ? end + 1 : end;
    }
    return 0;
}

/* Columns of dead_sql, from row i of r, into d; -1 when the stored record is malformed. */
static int
dead_load(PGresult *res, int i, dead_t *d)
{
    memset(d, 0, sizeof(*d));
    ob_strlcpy(d->topic, PQgetvalue(res, i, 1), sizeof(d->topic));
    d->r.topic = d->topic;
    d->r.partition = atoi(PQgetvalue(res, i, 2));
    d->r.offset = atoll(PQgetvalue(res, i, 3));
    if (!PQgetisnull(res, i, 4) &&
        (d->key = unhex(PQgetvalue(res, i, 4), (size_t) PQgetlength(res, i, 4), &d->r.key_len)) == NULL)
        return -1;
    if (!PQgetisnull(res, i, 5) &&
        (d->value = unhex(PQgetvalue(res, i, 5), (size_t) PQgetlength(res, i, 5), &d->r.value_len)) == NULL)
        return -1;
    d->r.key = d->key;
    d->r.value = d->value;
    return dead_headers(d, PQgetvalue(res, i, 6));
}

static const char *dead_sql =
    "SELECT id, kafka_topic, kafka_partition, kafka_offset, encode(kafka_key, 'hex'), encode(kafka_value, 'hex'),"
    " coalesce(array_to_string(ARRAY(SELECT encode(k, 'hex') || ':' || coalesce(encode(v, 'hex'), '-')"
    "   FROM unnest(kafka_header_keys, kafka_header_values) AS h(k, v)), ','), '')"
    " FROM ledger_dead_letter WHERE $1::bigint IS NULL OR id = $1::bigint"
    " ORDER BY kafka_topic, kafka_partition, kafka_offset FOR UPDATE";

/* Runs one statement with text parameters; OB_CONS_OK or the failure's class, with err. */
static ob_cons_class_t
dead_exec(PGconn *pg, const char *sql, int n, const char *const *params, char *err, size_t errlen)
{
    char state[6];

    if (ob_pg_command(pg, sql, n, params, state, err, errlen) >= 0)
        return OB_CONS_OK;
    return PQstatus(pg) != CONNECTION_OK ? OB_CONS_AWAY : ob_cons_classify(state);
}

/* What became of one dead letter, for the operator. */
static void
dead_say(const char *id, const dead_t *d, const ob_cons_outcome_t *o, int dry_run)
{
    printf("dead letter %s (%s[%d]@%lld): ", id, d->r.topic, (int) d->r.partition, (long long) d->r.offset);
    if (o->code > 0)
        printf("%s %d ledger entr%s\n", dry_run ? "would book" : "booked", o->code, o->code == 1 ? "y" : "ies");
    else if (o->code == 0)
        printf("%s behind its missing predecessor\n", dry_run ? "would be parked" : "parked");
    else if (o->code == -1)
        printf("already booked, %s\n", dry_run ? "would be removed" : "removed");
    else if (o->code == -3)
        printf("an event of another aggregate type, not the ledger's, %s\n", dry_run ? "would be removed" : "removed");
    else
        printf("still fails%s%s: %s\n", o->state[0] ? " SQLSTATE " : "", o->state, o->why);
}

/* Replays row i inside its savepoint; 1 applied, 0 still fails, -1 stop (err set). */
static int
dead_replay_one(PGconn *pg, const ob_cons_trust_t *trust, PGresult *res, int i, int dry_run, char *err,
                size_t errlen)
{
    const char       *id = PQgetvalue(res, i, 0);
    dead_t            d;
    ob_cons_outcome_t o;
    char              state[6] = "";
    ob_cons_class_t   c;

    memset(&o, 0, sizeof(o));
    if ((c = ob_cons_exec(pg, "SAVEPOINT dead_letter", state, err, errlen)) != OB_CONS_OK)
        return -1;
    if (dead_load(res, i, &d) != 0) {
        o.code = -2;
        snprintf(o.why, sizeof(o.why), "the stored record is malformed");
    } else {
        c = ob_cons_apply(pg, trust, &d.r, 1, 0, &o, state, err, errlen);
    }
    if (c == OB_CONS_DATA) {
        /* a statement escaped the ledger's own handler (a constraint, say): undo it, keep the dead letter */
        o.code = -2;
        ob_strlcpy(o.state, state, sizeof(o.state));
        ob_cons_printable(err, strlen(err), o.why, sizeof(o.why));
        if (ob_cons_exec(pg, "ROLLBACK TO SAVEPOINT dead_letter", state, err, errlen) != OB_CONS_OK)
            return -1;
    } else if (c != OB_CONS_OK) {
        dead_free(&d);
        return -1;
    }
    const char *keep[3] = { id, o.why, o.state };
    c = o.code == -2 ? dead_exec(pg,
                                 "UPDATE ledger_dead_letter SET error = $2, sqlstate = NULLIF($3, ''),"
                                 " replays = replays + 1, last_replay_at = now() WHERE id = $1::bigint",
                                 3, keep, err, errlen)
                     : dead_exec(pg, "DELETE FROM ledger_dead_letter WHERE id = $1::bigint", 1, keep, err, errlen);
    if (c == OB_CONS_OK)
        c = ob_cons_exec(pg, "RELEASE SAVEPOINT dead_letter", state, err, errlen);
    if (c == OB_CONS_OK)
        dead_say(id, &d, &o, dry_run);
    dead_free(&d);
    return c != OB_CONS_OK ? -1 : o.code != -2;
}

int
ob_cmd_replay_dead_letters(const ob_cfg_t *cfg, const char *id, int dry_run)
{
    char        err[1024];
    int         applied = 0, failed = 0;
    PGresult   *res = NULL;
    const char *params[1] = { id };
    PGconn     *pg = ob_pg_connect(cfg->ledger.dsn, "outboxd replay", err, sizeof(err));
    ob_cons_trust_t trust;      /* a replayed record is judged as the consumer judges it, signature included */

    ob_cons_trust_init(&trust, cfg);
    if (pg == NULL) {
        fprintf(stderr, "outboxd: replay: %s\n", err);
        return 1;
    }
    if (ob_cons_exec(pg, "BEGIN", NULL, err, sizeof(err)) != OB_CONS_OK ||
        ob_cons_exec(pg, "SET CONSTRAINTS ALL IMMEDIATE", NULL, err, sizeof(err)) != OB_CONS_OK)
        goto fail;
    res = PQexecParams(pg, dead_sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, sizeof(err), "%s", PQresultErrorMessage(res));
        goto fail;
    }
    if (id != NULL && PQntuples(res) == 0) {
        snprintf(err, sizeof(err), "no dead letter with id %s", id);
        goto fail;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        int rc = dead_replay_one(pg, &trust, res, i, dry_run, err, sizeof(err));
        if (rc < 0)
            goto fail;
        applied += rc;
        failed += !rc;
    }
    if (ob_cons_exec(pg, dry_run ? "ROLLBACK" : "COMMIT", NULL, err, sizeof(err)) != OB_CONS_OK)
        goto fail;
    printf("%s%d dead letter(s) applied, %d still fail\n", dry_run ? "dry run (nothing changed): " : "", applied,
           failed);
    PQclear(res);
    PQfinish(pg);
    return failed == 0 ? 0 : 1;
fail:
    fprintf(stderr, "outboxd: replay failed, nothing changed: %s\n", err);
    PQclear(res);
    PQfinish(pg);
    return 1;
}
