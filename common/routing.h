/*
 * common/routing.h: outboxd.routing, the row through which outboxd.emit
 * learns whether [kafka] strict_routes refuses an aggregate type.
 */
#ifndef OB_ROUTING_H
#define OB_ROUTING_H

#include "cfg.h"

#include <libpq-fe.h>
#include <stddef.h>

/*
 * Makes outboxd.routing say what cfg says (written only when it differs,
 * so relays starting in a loop do not churn it); 0, or -1 with err.
 * `outboxd migrate` and relay 0 at its start both call it.
 */
int ob_routing_sync(PGconn *pg, const ob_cfg_t *cfg, char *err, size_t errlen);

#endif
