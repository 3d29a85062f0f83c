/*
 * cli/version.c: `outboxd --version`. The libraries' versions are the ones
 * loaded at run time, not the headers': after a library upgrade they are
 * what a bug report needs.
 */
#include "cmd.h"

#include <civetweb.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>

#ifndef OB_VERSION
#error "OB_VERSION comes from the file VERSION, through the Makefile"
#endif

void
ob_cmd_version(FILE *out)
{
    int pq = PQlibVersion();

    fprintf(out, "outboxd %s\nlibrdkafka %s\nlibpq %d.%d\ncivetweb %s\n", OB_VERSION, rd_kafka_version_str(),
            pq / 10000, pq % 10000, mg_version());
}

const char *
ob_cmd_version_string(void)
{
    return OB_VERSION;
}
