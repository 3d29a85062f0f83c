/* workers/relay/relay_int.h: internals shared by the relay's files. */
#ifndef OB_RELAY_INT_H
#define OB_RELAY_INT_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

/* OB_EXIT_OK when the topic has `partitions` partitions (creating it if
 * absent), OB_EXIT_RETRY when Kafka did not answer, OB_EXIT_FATAL when the
 * count differs. */
int ob_relay_check_topic(rd_kafka_t *rk, const char *topic, int partitions, char *err, size_t errlen);

#endif
