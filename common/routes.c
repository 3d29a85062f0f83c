/*
 * common/routes.c: the [routes] table's rules (common/routes.h).
 */
#include "routes.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

static int
routes_charset(const char *s, size_t max)
{
    size_t n = strlen(s);

    return n >= 1 && n <= max &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

int
ob_topic_name_valid(const char *topic)
{
    return routes_charset(topic, OB_TOPIC_NAME_MAX) && strcmp(topic, ".") != 0 && strcmp(topic, "..") != 0;
}

int
ob_route_type_valid(const char *type)
{
    return routes_charset(type, OB_ROUTE_TYPE_MAX) && type[0] != '.' && type[0] != '_' && type[0] != '-';
}

int
ob_routes_add(ob_routes_t *rt, const char *type, const char *topic, char *why, size_t whylen)
{
    if (!ob_route_type_valid(type)) {
        snprintf(why, whylen, "an aggregate type is 1 to 64 characters of A-Z a-z 0-9 . _ -, starting with a"
                              " letter or digit");
        return -1;
    }
    if (!ob_topic_name_valid(topic)) {
        snprintf(why, whylen, "a topic name is 1 to 249 characters of A-Z a-z 0-9 . _ -, and not . or ..");
        return -1;
    }
    if (ob_routes_find(rt, type) != NULL) {
        snprintf(why, whylen, "aggregate type routed twice");
        return -1;
    }
    if (rt->n >= OB_ROUTES_MAX) {
        snprintf(why, whylen, "more than %d routes", OB_ROUTES_MAX);
        return -1;
    }
    ob_strlcpy(rt->r[rt->n].type, type, sizeof(rt->r[rt->n].type));
    ob_strlcpy(rt->r[rt->n].topic, topic, sizeof(rt->r[rt->n].topic));
    rt->n++;
    return 0;
}

const char *
ob_routes_find(const ob_routes_t *rt, const char *type)
{
    for (int i = 0; i < rt->n; i++)
        if (strcmp(rt->r[i].type, type) == 0)
            return rt->r[i].topic;
    return NULL;
}
