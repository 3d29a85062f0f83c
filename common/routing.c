/*
 * common/routing.c: outboxd.routing kept equal to [routes] (common/routing.h).
 */
#include "routing.h"
#include "pg.h"
#include "pgarr.h"

#include <stdio.h>
#include <stdlib.h>

int
ob_routing_sync(PGconn *pg, const ob_cfg_t *cfg, char *err, size_t errlen)
{
    ob_pgarr_t  types = { 0 };
    char       *lit;
    long        n;

    for (int i = 0; i < cfg->routes.n; i++)
        ob_pgarr_add(&types, cfg->routes.r[i].type);
    if ((lit = ob_pgarr_end(&types)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *params[2] = { cfg->kafka.strict_routes ? "true" : "false", lit };
    n = ob_pg_command(pg,
                      "INSERT INTO outboxd.routing AS r (singleton, strict_routes, routed_types)"
                      " VALUES (true, $1::boolean, $2::text[])"
                      " ON CONFLICT (singleton) DO UPDATE SET strict_routes = EXCLUDED.strict_routes,"
                      " routed_types = EXCLUDED.routed_types, updated_at = now()"
                      " WHERE (r.strict_routes, r.routed_types) IS DISTINCT FROM (EXCLUDED.strict_routes, EXCLUDED.routed_types)",
                      2, params, NULL, err, errlen);
    free(lit);
    return n < 0 ? -1 : 0;
}
