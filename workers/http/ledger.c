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
    { "entries",
      "SELECT id, event_id, seq, kind, amount::text, currency, reverses_entry_id, created_at, kafka_partition,"
      " kafka_offset FROM ledger_entries WHERE order_id = $1::uuid ORDER BY seq" },
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

static json_t *
ledger_entry_json(PGresult *r, int i)
{
    const ob_currency_t *cur = ob_currency_find(PQgetvalue(r, i, 5));
    char                 amount[64];

    if (cur == NULL || ob_decimal_rescale(PQgetvalue(r, i, 4), cur->digits, amount, sizeof(amount)) != 0)
        ob_strlcpy(amount, PQgetvalue(r, i, 4), sizeof(amount));
    return json_pack("{s:I, s:s, s:i, s:s, s:s, s:s, s:o, s:s, s:i, s:I}", "id", (json_int_t) atoll(PQgetvalue(r, i, 0)),
                     "eventId", PQgetvalue(r, i, 1), "seq", atoi(PQgetvalue(r, i, 2)), "kind", PQgetvalue(r, i, 3),
                     "amount", amount, "currency", PQgetvalue(r, i, 5), "reverses",
                     PQgetisnull(r, i, 6) ? json_null() : json_integer(atoll(PQgetvalue(r, i, 6))), "createdAt",
                     PQgetvalue(r, i, 7), "kafkaPartition", atoi(PQgetvalue(r, i, 8)), "kafkaOffset",
                     (json_int_t) atoll(PQgetvalue(r, i, 9)));
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
