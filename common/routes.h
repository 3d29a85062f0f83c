/*
 * common/routes.h: [routes], which topic each aggregate type goes to.
 *
 * Pure data and rules, no I/O: the config parser fills a table, the relays
 * look a row's aggregate type up in it, the supervisor names its topics in
 * shared memory. Every topic has [kafka] partitions partitions, because the
 * partition is computed once, when the event is written (outboxd.emit, the
 * HTTP workers), from the one count outboxd.settings holds.
 */
#ifndef OB_ROUTES_H
#define OB_ROUTES_H

#include <stddef.h>

#define OB_ROUTES_MAX     32
#define OB_TOPICS_MAX     16     /* distinct topics of one instance: shm's topic table */
#define OB_TOPIC_NAME_MAX 249    /* Kafka's own limit */
#define OB_ROUTE_TYPE_MAX 64     /* the outbox's aggregate_type bound */

typedef struct {
    char type[OB_ROUTE_TYPE_MAX + 1];
    char topic[OB_TOPIC_NAME_MAX + 1];
} ob_route_t;

typedef struct {
    int        n;
    ob_route_t r[OB_ROUTES_MAX];
} ob_routes_t;

/* A name Kafka accepts for a topic: 1-249 of A-Z a-z 0-9 . _ -, not "." or "..". */
int ob_topic_name_valid(const char *topic);
/* An aggregate type outboxd.emit accepts: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit. */
int ob_route_type_valid(const char *type);

/* Adds type = topic; -1 with why for a bad name, a type routed twice or a full table. */
int ob_routes_add(ob_routes_t *rt, const char *type, const char *topic, char *why, size_t whylen);
/* The topic [routes] gives type, or NULL when it has none. */
const char *ob_routes_find(const ob_routes_t *rt, const char *type);

#endif
