/*
 * tests/fuzz/driver.c: a small mutation driver for LLVMFuzzerTestOneInput,
 * for machines without clang's libFuzzer. Seeds come from a corpus
 * directory; each run mutates one (bit flips, inserts, deletes, splices,
 * dictionary tokens) and feeds it to the target. Bounded by -runs and
 * -seconds; deterministic for a given -seed. A crash or abort() in the
 * target fails the run (and the sanitizer build reports it).
 *
 * The target runs on a thread with a civetweb worker's stack size.
 *
 *   fuzz_order_req [-runs=N] [-seconds=S] [-seed=N] CORPUS_DIR
 */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEDS 256
#define MAX_LEN   4096
/* civetweb 1.15's worker thread stack (Debian build: fixed at compile time). */
#define FUZZ_STACK (100 * 1024)

static const char *dict[] = {
    "\"amount\":", "\"currency\":", "\"customerId\":", "\"USD\"", "\"JPY\"", "\"KWD\"", "1e5", "-1", "0.001",
    "99999999999999999999", "\"\\u0000\"", "\"\\u0061mount\"", "{", "}", "[", "]", ",", ":", "null", "true", "\"",
    "\\", ".", "0", "1000000000000.01", "\x81\xa2id", "\xde\x00\x07",
};

static unsigned char *seeds[MAX_SEEDS];
static size_t         seed_len[MAX_SEEDS];
static int            nseeds;
static uint64_t       rng = 88172645463325252ULL;

static uint64_t
next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void
load_corpus(const char *dir)
{
    DIR           *d = opendir(dir);
    struct dirent *e;
    char           path[4096];

    while (d != NULL && (e = readdir(d)) != NULL && nseeds < MAX_SEEDS) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        seeds[nseeds] = malloc(MAX_LEN);
        seed_len[nseeds] = fread(seeds[nseeds], 1, MAX_LEN, f);
        fclose(f);
        nseeds++;
    }
    if (d != NULL)
        closedir(d);
}

static size_t
mutate(unsigned char *buf, size_t len)
{
    int rounds = 1 + (int) (next() % 4);

    for (int r = 0; r < rounds; r++) {
        size_t pos = len ? next() % (len + 1) : 0;
        switch (next() % 6) {
        case 0:     /* flip a bit */
            if (len)
                buf[pos % len] ^= (unsigned char) (1u << (next() % 8));
            break;
        case 1:     /* random byte in */
            if (len < MAX_LEN) {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = (unsigned char) next();
                len++;
            }
            break;
        case 2: {   /* delete a range */
            size_t n = len ? 1 + next() % 8 : 0;
            if (pos + n > len)
                n = len - pos;
            memmove(buf + pos, buf + pos + n, len - pos - n);
            len -= n;
            break;
        }
        case 3: {   /* dictionary token in */
            const char *t = dict[next() % (sizeof(dict) / sizeof(dict[0]))];
            size_t      n = strlen(t);
            if (len + n <= MAX_LEN) {
                memmove(buf + pos + n, buf + pos, len - pos);
                memcpy(buf + pos, t, n);
                len += n;
            }
            break;
        }
        case 4: {   /* splice the tail of another seed */
            int    s = (int) (next() % (uint64_t) nseeds);
            size_t from = seed_len[s] ? next() % seed_len[s] : 0, n = seed_len[s] - from;
            if (pos + n > MAX_LEN)
                n = MAX_LEN - pos;
            memcpy(buf + pos, seeds[s] + from, n);
            len = pos + n;
            break;
        }
        default:    /* duplicate a range */
            if (len && len * 2 <= MAX_LEN) {
                size_t n = 1 + next() % (len - pos % len);
                memmove(buf + pos + n, buf + pos, len - pos);
                memcpy(buf + pos, buf + pos % len, n);
                len += n;
            }
        }
    }
    return len;
}

typedef struct {
    long runs, seconds, done;
    int  elapsed;
} fuzz_run_t;

static void *
fuzz_loop(void *arg)
{
    fuzz_run_t   *fr = arg;
    static unsigned char buf[MAX_LEN * 2];

    for (int s = 0; s < nseeds; s++)
        LLVMFuzzerTestOneInput(seeds[s], seed_len[s]);
    time_t start = time(NULL);
    for (; fr->done < fr->runs && time(NULL) - start < fr->seconds; fr->done++) {
        int    s = (int) (next() % (uint64_t) nseeds);
        size_t len = seed_len[s];
        memcpy(buf, seeds[s], len);
        len = mutate(buf, len);
        LLVMFuzzerTestOneInput(buf, len);
    }
    fr->elapsed = (int) (time(NULL) - start);
    return NULL;
}

int
main(int argc, char **argv)
{
    fuzz_run_t     fr = { .runs = 200000, .seconds = 10 };
    const char    *dir = NULL;
    pthread_attr_t attr;
    pthread_t      th;

    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-runs=", 6) == 0)
            fr.runs = atol(argv[i] + 6);
        else if (strncmp(argv[i], "-seconds=", 9) == 0)
            fr.seconds = atol(argv[i] + 9);
        else if (strncmp(argv[i], "-seed=", 6) == 0)
            rng = (uint64_t) atoll(argv[i] + 6) | 1;
        else
            dir = argv[i];
    }
    if (dir == NULL) {
        fprintf(stderr, "usage: %s [-runs=N] [-seconds=S] [-seed=N] CORPUS_DIR\n", argv[0]);
        return 2;
    }
    load_corpus(dir);
    if (nseeds == 0) {
        fprintf(stderr, "fuzz: no seeds in %s\n", dir);
        return 2;
    }
    /* The target runs where the server runs it: on a thread with a civetweb
     * worker's stack, so a parser that recurses too deep crashes here too
     * (the 8 MB main-thread stack hid a nesting overflow). */
    pthread_attr_init(&attr);
    if (pthread_attr_setstacksize(&attr, FUZZ_STACK) != 0 || pthread_create(&th, &attr, fuzz_loop, &fr) != 0) {
        fprintf(stderr, "fuzz: cannot start a thread with a %d-byte stack\n", FUZZ_STACK);
        return 2;
    }
    pthread_join(th, NULL);
    pthread_attr_destroy(&attr);
    printf("fuzz: %ld inputs from %d seeds in %d s on a %d KiB stack, no crash\n", fr.done, nseeds, fr.elapsed,
           FUZZ_STACK / 1024);
    return 0;
}
