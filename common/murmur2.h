/*
 * common/murmur2.h: Kafka's default partitioner hash.
 *
 * The partition of an event is computed when the order is inserted and
 * stored in its outbox row; it must be the partition a Java client (or
 * librdkafka's murmur2_random) would pick for the same key, so that tools
 * producing by key and outboxd agree on where an order's events live.
 */
#ifndef OB_MURMUR2_H
#define OB_MURMUR2_H

#include <stddef.h>
#include <stdint.h>

/* Kafka's Java murmur2 (seed 0x9747b28c), as a signed 32-bit value. */
int32_t ob_murmur2(const void *key, size_t len);
/* toPositive(murmur2(key)) % partitions, as Kafka's DefaultPartitioner. */
int ob_partition_for(const void *key, size_t len, int partitions);

#endif
