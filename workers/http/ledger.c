/*
 * workers/http/ledger.c: the ledger API on the ledger listener (DESIGN §5):
 * GET /ledger/total (the shape of /orders/total, so the two compare
 * directly), GET /ledger/orders/{id} (its entries in seq order), /readyz.
 * Read-only: the ledger is written by consumers only.
 */
#include "db.h"
#include "reply.h"
#include "routes.h"
#include "../../common/money.h"
#include "../../common/util.h"
#include "../../common/uuid.h"

#include <stdlib.h>
#include <string.h>

/* Prepared on every ledgerdb connection (db.c); here, beside what reads their results. */
const ob_http_stmt_t ob_ledger_statements[] = {
    /* (currency, sum, count) rows, as ob_http_totals_json (reply.c) reads them;
     * count = orders booked and not reversed, as /orders/total counts orders not cancelled */
    { "total",
      "SELECT currency, sum(amount)::text,"
      " count(*) FILTER (WHERE kind = 'charge') - count(*) FILTER (WHERE kind = 'credit_note')"
      " FROM ledger_entries GROUP BY ROLLUP (currency) ORDER BY currency NULLS LAST" },
    /* columns E_*, as ledger_entry_json reads them */
    { "entries",
      "SELECT e.id, e.event_id, e.seq, e.kind, e.amount::text, e.currency, e.reverses_entry_id, e.created_at,"
      " e.kafka_partition, e.kafka_offset, t.traceparent FROM ledger_entries e"
      " LEFT JOIN ledger_traces t ON t.event_id = e.event_id WHERE e.order_id = $1::uuid ORDER BY e.seq" },
    { NULL, NULL },
};

static int
ledger_failed(struct mg_connection *conn, PGconn *pg, PGresult *r)
{
    char err[512];
    int  status = ob_http_db_failure(pg, r, err, sizeof(err));

    if (status == 503)
        return ob_http_unavailable(conn, "ledger database unavailable, retry later", err);
    return ob_http_error(conn, 500, "internal error");
}

static int
ledger_total(ob_http_t *hw, struct mg_connection *conn)
{
    char      err[512];
    PGconn   *pg;
    PGresult *r = ob_http_read(hw, OB_DB_LEDGER, "total", 0, NULL, &pg, err, sizeof(err));
    int       status;

    if (r == NULL)
        return ob_http_unavailable(conn, "ledger database unavailable, retry later", err);
    status = PQresultStatus(r) == PGRES_TUPLES_OK ? ob_http_reply(conn, 200, ob_http_totals_json(r), NULL)
                                                  : ledger_failed(conn, pg, r);
    PQclear(r);
    return status;
}

/* Columns of the entries statement, in order. */
enum { E_ID, E_EVENT, E_SEQ, E_KIND, E_AMOUNT, E_CURRENCY, E_REVERSES, E_CREATED, E_PARTITION, E_OFFSET, E_TRACE };

static json_t *
ledger_entry_json(PGresult *r, int i)
{
    const ob_currency_t *cur = ob_currency_find(PQgetvalue(r, i, E_CURRENCY));
    char                 amount[64];

    if (cur == NULL || ob_decimal_rescale(PQgetvalue(r, i, E_AMOUNT), cur->digits, amount, sizeof(amount)) != 0)
        ob_strlcpy(amount, PQgetvalue(r, i, E_AMOUNT), sizeof(amount));
    return json_pack("{s:I, s:s, s:i, s:s, s:s, s:s, s:o, s:s, s:i, s:I, s:o}", "id",
                     (json_int_t) atoll(PQgetvalue(r, i, E_ID)), "eventId", PQgetvalue(r, i, E_EVENT), "seq",
                     atoi(PQgetvalue(r, i, E_SEQ)), "kind", PQgetvalue(r, i, E_KIND), "amount", amount, "currency",
                     PQgetvalue(r, i, E_CURRENCY), "reverses",
                     PQgetisnull(r, i, E_REVERSES) ? json_null() : json_integer(atoll(PQgetvalue(r, i, E_REVERSES))),
                     "createdAt", PQgetvalue(r, i, E_CREATED), "kafkaPartition", atoi(PQgetvalue(r, i, E_PARTITION)),
                     "kafkaOffset", (json_int_t) atoll(PQgetvalue(r, i, E_OFFSET)), "traceparent",
                     PQgetisnull(r, i, E_TRACE) ? json_null() : json_string(PQgetvalue(r, i, E_TRACE)));
}

static int
ledger_order(ob_http_t *hw, struct mg_connection *conn, const char *id)
{
    char        err[512];
    const char *params[1] = { id };
    PGconn     *pg;
    PGresult   *r = ob_http_read(hw, OB_DB_LEDGER, "entries", 1, params, &pg, err, sizeof(err));
    int         status;

    if (r == NULL)
        return ob_http_unavailable(conn, "ledger database unavailable, retry later", err);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        status = ledger_failed(conn, pg, r);
    } else if (PQntuples(r) == 0) {
        status = ob_http_error(conn, 404, "no ledger entries for this order");
    } else {
        json_t *entries = json_array();
        for (int i = 0; i < PQntuples(r); i++)
            json_array_append_new(entries, ledger_entry_json(r, i));
        status = ob_http_reply(conn, 200, json_pack("{s:s, s:o}", "orderId", id, "entries", entries), NULL);
    }
    PQclear(r);
    return status;
}

int
ob_ledger_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri)
{
    const char *uri = ri->local_uri;
    ob_uuid_t   u;
    char        id[37];

    if (strcmp(ri->request_method, "GET") != 0)
        return ob_http_reply(conn, 405, json_pack("{s:s}", "error", "method not allowed"), "Allow: GET\r\n");
    if (strcmp(uri, "/readyz") == 0)
        return ob_http_ready(hw, conn, OB_DB_LEDGER);
    if (strcmp(uri, "/ledger/total") == 0)
        return ledger_total(hw, conn);
    if (strncmp(uri, "/ledger/orders/", 15) == 0) {
        if (ob_uuid_parse(uri + 15, &u) != 0)
            return ob_http_error(conn, 404, "no ledger entries for this order");
        ob_uuid_format(&u, id);
        return ledger_order(hw, conn, id);
    }
    return ob_http_error(conn, 404, "no such route");
}
