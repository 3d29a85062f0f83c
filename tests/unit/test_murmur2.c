/* tests/unit/test_murmur2.c: our murmur2 partitioner agrees with Kafka's Java client and librdkafka's. */
#include "common/murmur2.h"
#include "common/uuid.h"

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <string.h>

Test(murmur2, matches_kafka_java_vectors)
{
    /* librdkafka src/rdmurmur2.c java_murmur2_results: the Java client's values */
    static const struct {
        const char *key;
        uint32_t    want;
    } v[] = {
        { "kafka", 0xd067cf64 }, { "giberish123456789", 0x8f552b0c }, { "1234", 0x9fc97b14 },
        { "234", 0xe7c009ca }, { "34", 0x873930da }, { "4", 0x5a4b5ca1 },
        { "PreAmbleWillBeRemoved,ThePrePartThatIs", 0x78424f1c }, { "reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62b377 },
        { "eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4e09e }, { "AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8b43f },
        { "", 0x106e08d9 },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        cr_expect_eq((uint32_t) ob_murmur2(v[i].key, strlen(v[i].key)), v[i].want, "key \"%s\"", v[i].key);
}

Test(murmur2, partition_equals_librdkafka_murmur2_partitioner)
{
    for (int i = 0; i < 2000; i++) {
        ob_uuid_t u;
        char      key[37];
        cr_assert_eq(ob_uuid_v7(&u), 0);
        ob_uuid_format(&u, key);
        for (int p = 1; p <= 64; p *= 2) {
            int32_t theirs = rd_kafka_msg_partitioner_murmur2(NULL, key, strlen(key), p + 3, NULL, NULL);
            cr_assert_eq(ob_partition_for(key, strlen(key), p + 3), theirs, "key %s P=%d", key, p + 3);
        }
    }
}
