/*
 * tests/harness/harness_int.h: what the harness's files share and tests
 * do not need; tests include tests/harness.h only.
 */
#ifndef OB_HARNESS_INT_H
#define OB_HARNESS_INT_H

#include "tests/harness.h"

/* The stack's ledger cluster (scripts/stack.sh); tests reach it through h->ledger_dsn. */
#define STACK_LEDGER "postgresql://outboxd@127.0.0.1:55433/"

/* Deletes h->topic and its routed "<topic>-..." topics with the Kafka admin
 * API; a topic that is already gone is fine. */
void obh_kafka_drop_topic(obh_t *h);

#endif
