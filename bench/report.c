/*
 * bench/report.c: report.json, report.md and latency.svg from the parts
 * run.sh collected in DIR/parts/<name>.json.
 *
 * Every figure in the report is one of ours beside a baseline measured in
 * the same run, as a ratio: on a shared 2-core machine the absolute numbers
 * move from run to run, the ratios much less. A part that is missing (a
 * section skipped or failed) shows as "n/a" rather than stopping the report.
 */
#include "bench/obbench.h"
#include "common/util.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *dir;
    json_t     *parts;       /* name -> the part's JSON */
    json_t     *summary;     /* the derived figures, also in report.json */
    json_t     *targets;
    FILE       *md;
} report_t;

/* ---- reading parts -------------------------------------------------------- */

static json_t *
part(report_t *r, const char *name)
{
    json_t *j = json_object_get(r->parts, name);
    char    path[1024];

    if (j != NULL)
        return json_is_null(j) ? NULL : j;
    snprintf(path, sizeof(path), "%s/parts/%s.json", r->dir, name);
    j = json_load_file(path, 0, NULL);
    json_object_set_new(r->parts, name, j ? j : json_null());
    return j;
}

/* A number at a dotted path ("latency_ms.p50") of a part, or NAN. */
static double
num(report_t *r, const char *name, const char *path)
{
    json_t *j = part(r, name);
    char    key[128];

    for (const char *p = path; j != NULL && *p;) {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof(key), "%.*s", (int) n, p);
        j = json_object_get(j, key);
        p += n + (p[n] == '.');
    }
    return json_is_number(j) ? json_number_value(j) : NAN;
}

static const char *
str(report_t *r, const char *name, const char *path)
{
    json_t     *j = part(r, name);
    const char *s = j ? json_string_value(json_object_get(j, path)) : NULL;

    return s ? s : "?";
}

/* A boolean of a part: false when absent. */
static int
flag(report_t *r, const char *name, const char *key)
{
    json_t *j = part(r, name);

    return j != NULL && json_is_true(json_object_get(j, key));
}

static double
ratio(double a, double b)
{
    return isnan(a) || isnan(b) || b == 0 ? NAN : a / b;
}

static void
put(report_t *r, const char *section, const char *key, double v)
{
    json_t *s = json_object_get(r->summary, section);

    if (s == NULL) {
        s = json_object();
        json_object_set_new(r->summary, section, s);
    }
    json_object_set_new(s, key, isnan(v) ? json_null() : json_real(v));
}

/* ---- formatting ------------------------------------------------------------ */

/* Each formatter returns one of a few rotating static buffers, so several fit in one printf. */
static char *
fbuf(void)
{
    static char bufs[16][48];
    static int  next;

    return bufs[next++ % 16];
}

static const char *
fnum(double v, int decimals)
{
    char *b = fbuf();

    if (isnan(v))
        return "n/a";
    snprintf(b, 48, "%.*f", decimals, v);
    return b;
}

/* Milliseconds: more digits when small, none when large. */
static const char *
fms(double v)
{
    return fnum(v, isnan(v) ? 0 : v < 10 ? 2 : v < 1000 ? 1 : 0);
}

static const char *
fratio(double v)
{
    return fnum(v, isnan(v) ? 0 : v >= 100 ? 0 : v >= 10 ? 1 : 2);
}

static const char *
fsecs(double v)
{
    return fnum(v, isnan(v) ? 0 : v < 100 ? 1 : 0);
}

/* ---- report.md sections ------------------------------------------------------ */

/* A section whose parts are missing says so instead of printing a table of n/a. */
static int
ran(report_t *r, const char *title, const char *name)
{
    if (part(r, name) != NULL)
        return 1;
    fprintf(r->md, "%s\n\n_Not run in this invocation (see BENCH_SECTIONS), or it failed before writing "
                   "parts/%s.json._\n\n", title, name);
    return 0;
}

static void
md_header(report_t *r)
{
    char       when[64];
    time_t     now = time(NULL);
    struct tm  tm;

    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", &tm);
    fprintf(r->md, "# outboxd benchmark\n\n");
    fprintf(r->md, "Generated %s by `make bench` with BENCH_ROWS=%.0f. Absolute figures on a shared 2-core machine "
                   "move from run to run; the ratios compare figures measured in this same run.\n\n",
            when, num(r, "settings", "rows"));
    fprintf(r->md, "## Machine\n\n");
    fprintf(r->md, "- %.0f CPU(s): %s; %.0f MB RAM; Linux %s\n", num(r, "machine", "nproc"),
            str(r, "machine", "cpu"), num(r, "machine", "mem_mb"), str(r, "machine", "kernel"));
    json_t     *pg = json_object_get(part(r, "machine"), "pg_orders");
    const char *pgv = pg ? json_string_value(json_object_get(pg, "version")) : NULL;
    fprintf(r->md, "- %s; shared_buffers %s, synchronous_commit %s (both clusters alike)\n", pgv ? pgv : "PostgreSQL ?",
            pg ? json_string_value(json_object_get(pg, "shared_buffers")) : "?",
            pg ? json_string_value(json_object_get(pg, "synchronous_commit")) : "?");
    fprintf(r->md, "- Kafka %s (KRaft, single node, same machine); librdkafka %s; %s; %s\n\n",
            str(r, "machine", "kafka"), str(r, "machine", "librdkafka"), str(r, "machine", "wrk"),
            str(r, "machine", "pgbench"));
}

static void
md_settings(report_t *r)
{
    json_t     *s = part(r, "settings");
    const char *k;
    json_t     *v;

    fprintf(r->md, "## Settings\n\n| setting | value |\n|---|---|\n");
    json_object_foreach(s, k, v) {
        if (json_is_string(v))
            fprintf(r->md, "| %s | %s |\n", k, json_string_value(v));
        else if (json_is_number(v))
            fprintf(r->md, "| %s | %g |\n", k, json_number_value(v));
    }
    fprintf(r->md, "\n");
}

static void
md_intake_row(report_t *r, const char *label, const char *name, const char *rate_key, const char *lat_part,
              const char *p50_key, const char *p99_key, double errors)
{
    fprintf(r->md, "| %s | %s | %s | %s | %s |\n", label, fnum(num(r, name, rate_key), 0),
            fms(num(r, lat_part, p50_key)), fms(num(r, lat_part, p99_key)), fnum(errors, 0));
}

static void
md_intake(report_t *r)
{
    double full = num(r, "intake_full", "rps"), alone = num(r, "intake_alone", "rps");
    double pgb = num(r, "intake_pgbench", "tps");

    if (!ran(r, "## 1. Intake: POST /orders at saturation", "intake_full"))
        return;
    put(r, "intake", "full_rps", full);
    put(r, "intake", "alone_rps", alone);
    put(r, "intake", "pgbench_tps", pgb);
    put(r, "intake", "full_over_alone", ratio(full, alone));
    put(r, "intake", "full_over_pgbench", ratio(full, pgb));
    fprintf(r->md, "## 1. Intake: POST /orders at saturation\n\n");
    fprintf(r->md, "wrk, %.0f threads, %.0f connections, %.0f s, bench/post_order.lua; pgbench with the same "
                   "concurrency on the same statement (bench/pgbench_create.sql, `-M prepared`).\n\n",
            num(r, "settings", "intake_threads"), num(r, "settings", "intake_conns"),
            num(r, "settings", "intake_seconds"));
    fprintf(r->md, "| run | req/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|\n");
    md_intake_row(r, "outboxd, whole pipeline (http=2 relays=2 consumers=2)", "intake_full", "rps", "intake_full",
                  "latency_ms.p50", "latency_ms.p99", num(r, "intake_full", "errors"));
    md_intake_row(r, "outboxd, intake alone (relays=0 consumers=0)", "intake_alone", "rps", "intake_alone",
                  "latency_ms.p50", "latency_ms.p99", num(r, "intake_alone", "errors"));
    md_intake_row(r, "pgbench, the same INSERT statement", "intake_pgbench", "tps", "intake_pgbench_lat",
                  "latency_ms.p50", "latency_ms.p99", num(r, "intake_pgbench", "failed"));
    fprintf(r->md, "\n**full / alone = %s** (target ≥ 0.80) · **full / pgbench = %s** (target ≥ 0.35)\n\n",
            fratio(ratio(full, alone)), fratio(ratio(full, pgb)));
    if (part(r, "intake_full_settle"))
        fprintf(r->md, "When wrk stopped, the whole pipeline had %.0f event(s) not yet in Kafka and %.0f order(s) "
                       "not yet in the ledger; it caught up %s s later.\n\n",
                num(r, "intake_full_settle", "pending_at_start"), num(r, "intake_full_settle", "unbooked_at_start"),
                fsecs(num(r, "intake_full_settle", "seconds")));
}

static void
md_drain_row(report_t *r, const char *label, double rate, double secs, double ceiling, double naive, double intake,
             const char *note)
{
    fprintf(r->md, "| %s | %s | %s | %s | %s | %s | %s |\n", label, fnum(rate, 0), fsecs(secs),
            fratio(ratio(rate, ceiling)), fratio(ratio(rate, naive)), fratio(ratio(rate, intake)), note);
}

/* The highest intake measured: what a drain has to outrun. */
static double
max_intake(report_t *r)
{
    return fmax(num(r, "intake_full", "rps"), num(r, "intake_alone", "rps"));
}

static void
md_drain(report_t *r)
{
    double rows = num(r, "settings", "rows"), ceiling = num(r, "drain_ceiling", "events_per_s");
    double naive = num(r, "drain_naive", "events_per_s"), intake = max_intake(r);
    static const struct {
        const char *name, *key, *label;
    } runs[] = {
        { "drain_r1", "r1", "outboxd partitioned, 1 relay" },
        { "drain_r2", "r2", "outboxd partitioned, 2 relays" },
        { "drain_skip", "skip_locked", "outboxd skip_locked, 2 relays" },
    };

    char title[96];
    snprintf(title, sizeof(title), "## 2. Drain: a %.0f-event backlog to Kafka", rows);
    if (!ran(r, title, "backlog"))
        return;
    fprintf(r->md, "%s\n\n", title);
    fprintf(r->md, "The backlog (msgpack order.created events, avg %.0f bytes, murmur2 partitions) is put into "
                   "outbox in one transaction, then VACUUM ANALYZE (the state autovacuum leaves a table in while "
                   "a backlog builds up); then outboxd starts with http=0 consumers=0. The clock runs from the "
                   "first published batch, once every partition has its owner, until no row is pending; process "
                   "start-up is shown apart. Autovacuum "
                   "stays on, as in production: when it runs during a drain the column says so, because it can "
                   "change the relay's query plans mid-run.\n\n",
            num(r, "backlog", "payload_avg_bytes"));
    fprintf(r->md, "| publisher | events/s | seconds | / ceiling | / naive | × max intake | notes |\n"
                   "|---|---:|---:|---:|---:|---:|---|\n");
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        double rate = num(r, runs[i].name, "events_per_s");
        char   note[512];
        int    n = snprintf(note, sizeof(note), "start-up %s s", fsecs(num(r, runs[i].name, "startup_seconds")));
        if (!isnan(num(r, runs[i].name, "cycle_share.claim")))
            n += snprintf(note + n, sizeof(note) - (size_t) n, "; relay time: claim %.0f%%, Kafka %.0f%%, mark %.0f%%",
                          100 * num(r, runs[i].name, "cycle_share.claim"), 100 * num(r, runs[i].name, "cycle_share.kafka"),
                          100 * num(r, runs[i].name, "cycle_share.mark"));
        if (flag(r, runs[i].name, "timed_out"))
            n += snprintf(note + n, sizeof(note) - (size_t) n, "; **timed out** with %.0f published: lower bound",
                          num(r, runs[i].name, "published"));
        if (num(r, runs[i].name, "topic_messages") > num(r, runs[i].name, "published"))
            n += snprintf(note + n, sizeof(note) - (size_t) n, "; %.0f re-sent",
                          num(r, runs[i].name, "topic_messages") - num(r, runs[i].name, "published"));
        if (num(r, runs[i].name, "autovacuums") > 0 || num(r, runs[i].name, "autoanalyzes") > 0)
            snprintf(note + n, sizeof(note) - (size_t) n, "; autovacuum ×%.0f, autoanalyze ×%.0f during the run",
                     num(r, runs[i].name, "autovacuums"), num(r, runs[i].name, "autoanalyzes"));
        md_drain_row(r, runs[i].label, rate, num(r, runs[i].name, "seconds"), ceiling, naive, intake, note);
        put(r, "drain", runs[i].key, rate);
    }
    put(r, "drain", "r2_over_ceiling", ratio(num(r, "drain_r2", "events_per_s"), ceiling));
    fprintf(r->md, "| naive poller (every %.0f ms, LIMIT %.0f) | %s | %s | %s | 1 | %s | ran %.0f s, time extrapolated |\n",
            num(r, "settings", "naive_interval_ms"), num(r, "settings", "naive_limit"), fnum(naive, 1),
            fsecs(ratio(rows, naive)), fratio(ratio(naive, ceiling)), fratio(ratio(naive, intake)),
            num(r, "drain_naive", "seconds"));
    fprintf(r->md, "| librdkafka from memory (ceiling) | %s | %s | 1 | %s | %s | |\n\n", fnum(ceiling, 0),
            fsecs(num(r, "drain_ceiling", "seconds")), fratio(ratio(ceiling, naive)), fratio(ratio(ceiling, intake)));
    put(r, "drain", "ceiling", ceiling);
    put(r, "drain", "naive", naive);
    put(r, "drain", "max_intake", intake);
    fprintf(r->md, "Max intake = the higher of the two outboxd intake runs above (%s req/s). The ceiling produces "
                   "the same messages (keys, headers, explicit partitions) with the relay's producer settings, "
                   "from memory.\n\n", fnum(intake, 0));
}

static void
md_apply(report_t *r)
{
    double c1 = num(r, "apply_c1", "events_per_s"), c2 = num(r, "apply_c2", "events_per_s");

    if (!ran(r, "## 3. Apply: the drained topic into the ledger", "apply_c1"))
        return;
    put(r, "apply", "c1", c1);
    put(r, "apply", "c2", c2);
    fprintf(r->md, "## 3. Apply: the drained topic into the ledger\n\n");
    fprintf(r->md, "Fresh ledger database and consumer group per run; the clock starts once every consumer holds "
                   "its share of the partitions and events are being booked (the group join and its first "
                   "rebalance are shown apart), and stops when ledger_entries holds %.0f rows.\n\n",
            num(r, "apply_c1", "rows"));
    fprintf(r->md, "| consumers | events/s | seconds | join s | × max intake |\n|---|---:|---:|---:|---:|\n");
    fprintf(r->md, "| 1 | %s | %s | %s | %s |\n", fnum(c1, 0), fsecs(num(r, "apply_c1", "seconds")),
            fsecs(num(r, "apply_c1", "join_seconds")), fratio(ratio(c1, max_intake(r))));
    fprintf(r->md, "| 2 | %s | %s | %s | %s |\n\n", fnum(c2, 0), fsecs(num(r, "apply_c2", "seconds")),
            fsecs(num(r, "apply_c2", "join_seconds")), fratio(ratio(c2, max_intake(r))));
    fprintf(r->md, "2 consumers / 1 consumer = %s.\n\n", fratio(ratio(c2, c1)));
}

static void
md_latency_row(report_t *r, const char *label, const char *name, const char *key, const char *note)
{
    char path[64];
    double v[5];
    static const char *fields[] = { "n", "p50", "p90", "p99", "max" };

    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof(path), "%s.%s", key, fields[i]);
        v[i] = num(r, name, path);
    }
    fprintf(r->md, "| %s | %s | %s | %s | %s | %s |%s\n", label, fnum(v[0], 0), fms(v[1]), fms(v[2]), fms(v[3]),
            fms(v[4]), note);
}

static void
md_latency(report_t *r)
{
    char   note[160];
    double rate = num(r, "latency_pace", "rate");

    if (!ran(r, "## 4. End-to-end latency at half the max intake", "latency_pace"))
        return;
    fprintf(r->md, "## 4. End-to-end latency at half the max intake\n\n");
    fprintf(r->md, "POST /orders paced at %s req/s (%s) for %.0f s over %.0f keep-alive "
                   "connections by `obbench pace` (open loop: latency counts from when a request was due); "
                   "achieved %s req/s, %.0f created, %.0f errors. Then from the databases: commit → Kafka = "
                   "outboxd.outbox.published_at − created_at; commit → ledger = ledger_entries.created_at − "
                   "orders.created_at (joined across the two clusters).\n\n",
            fnum(rate, 0), str(r, "settings", "latency_rate"), num(r, "latency_pace", "seconds"),
            num(r, "latency_pace", "conns"),
            fnum(num(r, "latency_pace", "achieved_rate"), 0), num(r, "latency_pace", "created"),
            num(r, "latency_pace", "http_errors") + num(r, "latency_pace", "lost"));
    fprintf(r->md, "| path (ms) | n | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n");
    md_latency_row(r, "HTTP POST /orders (outboxd, whole pipeline)", "latency_pace", "latency_ms", "");
    md_latency_row(r, "commit → Kafka, outboxd", "latency_db", "kafka_ms", "");
    snprintf(note, sizeof(note), "%s", num(r, "latency_db", "ledger_ms.missing") > 0 ? " orders missing in ledger!" : "");
    md_latency_row(r, "commit → ledger, outboxd", "latency_db", "ledger_ms", note);
    snprintf(note, sizeof(note), " %.0f of %.0f still pending at the end: lower bounds",
             num(r, "latency_naive_db", "kafka_ms.censored"), num(r, "latency_naive_db", "kafka_ms.n"));
    md_latency_row(r, "commit → Kafka, naive poller (same load, relays=0)", "latency_naive_db", "kafka_ms", note);
    double ours = num(r, "latency_db", "ledger_ms.p50"), naive = num(r, "latency_naive_db", "kafka_ms.p50");
    fprintf(r->md, "\nnaive commit → Kafka p50 / outboxd commit → ledger p50 = **%s** (target ≥ 100; the naive "
                   "poller's ledger would come later still).\n\n![latency percentiles](latency.svg)\n\n",
            fratio(ratio(naive, ours)));
    put(r, "latency", "rate", rate);
    put(r, "latency", "kafka_p50_ms", num(r, "latency_db", "kafka_ms.p50"));
    put(r, "latency", "kafka_p99_ms", num(r, "latency_db", "kafka_ms.p99"));
    put(r, "latency", "ledger_p50_ms", ours);
    put(r, "latency", "ledger_p99_ms", num(r, "latency_db", "ledger_ms.p99"));
    put(r, "latency", "naive_kafka_p50_ms", naive);
    put(r, "latency", "naive_over_ours_p50", ratio(naive, ours));
}

/* ---- stage breakdown: the workers' own histograms (obbench stages) ------------- */

/* The stages in pipeline order, under the names of /metrics and `obbench stages`. */
static const struct {
    const char *name, *label;
} stage_rows[] = {
    { "commit_to_claim", "commit → claimed / streamed" },
    { "claim_to_ack", "claimed / streamed → Kafka acknowledged" },
    { "produce_to_fetch", "produced → consumer fetched" },
    { "fetch_to_ledger_commit", "fetched → ledger committed" },
    { "occurred_to_ledger_commit", "occurred_at → ledger committed (end to end)" },
};
#define STAGE_NROWS (sizeof(stage_rows) / sizeof(stage_rows[0]))

/* The runs that read the histograms before their stop (parts RUN_stages, RUN_db). */
static const struct {
    const char *run, *label;
} stage_runs[] = {
    { "latency", "Section 4, whole pipeline, partitioned" },
    { "latency_wal", "Section 4, whole pipeline, wal" },
    { "emit_partitioned_http", "Section 8, POST /orders, partitioned (no consumers)" },
    { "emit_partitioned_sql", "Section 8, outboxd.emit, partitioned (no consumers)" },
    { "emit_wal_http", "Section 8, POST /orders, wal (no consumers)" },
    { "emit_wal_sql", "Section 8, outboxd.emit, wal (no consumers)" },
};
#define STAGE_NRUNS (sizeof(stage_runs) / sizeof(stage_runs[0]))

/*
 * The clock of each stage, for the note under the tables and report.json:
 * a stage is only as good as the clock it starts from, and in mode
 * partitioned the relay cannot see a row's commit.
 */
static const struct {
    const char *key, *md;
} stage_clocks[] = {
    { "commit_to_claim_partitioned",
      "*commit → claimed*, mode partitioned (relay): from `created_at`, the writing transaction's `now()`, i.e. its "
      "**start**, so the writer's own transaction time is included: an upper bound on commit → claim; to the claim "
      "returning the row, on the relay's clock" },
    { "commit_to_claim_wal",
      "*commit → streamed*, mode wal (relay): from the commit timestamp of the transaction as the replication "
      "stream's Begin message gives it, to the stream decoding the row, on the relay's clock" },
    { "claim_to_ack", "*claimed / streamed → Kafka acknowledged* (relay): the relay's clock at both ends" },
    { "produce_to_fetch",
      "*produced → consumer fetched* (consumer): from the record's CreateTime, set by the relay's producer when it "
      "produced the record (right after the claim, so this stage overlaps the one before it: the stages do not add "
      "up), to the fetch, on the consumer's clock" },
    { "fetch_to_ledger_commit", "*fetched → ledger committed* (consumer): the consumer's clock at both ends" },
    { "occurred_to_ledger_commit",
      "*occurred_at → ledger committed* (consumer): from the event's `occurred_at` (the HTTP worker's clock just "
      "before the order's commit) to the ledger commit, on the consumer's clock: the end-to-end figure" },
};

static json_t *
stage_part(report_t *r, const char *run)
{
    char name[64];

    snprintf(name, sizeof(name), "%s_stages", run);
    return part(r, name);
}

/* A number of stage `stage` in run's stages part ("count", "p50_ms", ...), or NAN. */
static double
stage_num(report_t *r, const char *run, const char *stage, const char *key)
{
    char name[64], path[96];

    snprintf(name, sizeof(name), "%s_stages", run);
    snprintf(path, sizeof(path), "stages.%s.%s", stage, key);
    return num(r, name, path);
}

/* The percentiles of a stage ("p99", ...) that fell in the +Inf bucket (borrowed), or NULL. */
static json_t *
stage_beyond_list(report_t *r, const char *run, const char *stage)
{
    json_t *st = json_object_get(json_object_get(stage_part(r, run), "stages"), stage);
    json_t *b = json_object_get(st, "beyond_last_bound");

    return json_is_array(b) ? b : NULL;
}

/* Whether percentile pct ("p99") of a stage fell in the +Inf bucket (its figure is then the last bound). */
static int
stage_beyond(report_t *r, const char *run, const char *stage, const char *pct)
{
    json_t *b;
    size_t  i;

    json_array_foreach(stage_beyond_list(r, run, stage), i, b) {
        if (json_is_string(b) && strcmp(json_string_value(b), pct) == 0)
            return 1;
    }
    return 0;
}

/* A percentile cell: "> bound" when it fell beyond the histogram's last bound. */
static const char *
fstage_pct(report_t *r, const char *run, const char *stage, const char *pct)
{
    char key[16], *b;

    snprintf(key, sizeof(key), "%s_ms", pct);
    if (!stage_beyond(r, run, stage, pct))
        return fms(stage_num(r, run, stage, key));
    b = fbuf();
    snprintf(b, 48, "> %s", fms(stage_num(r, run, stage, key)));
    return b;
}

/* One run's figures into report.json's summary.stages.runs. */
static json_t *
stage_summary(report_t *r, const char *run)
{
    static const char *keys[] = { "count", "mean_ms", "p50_ms", "p99_ms" };
    json_t            *out = json_object();

    for (size_t s = 0; s < STAGE_NROWS; s++) {
        json_t *st = json_object();
        json_t *beyond = stage_beyond_list(r, run, stage_rows[s].name);
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            double  v = stage_num(r, run, stage_rows[s].name, keys[k]);
            json_t *j = isnan(v)                        ? json_null()
                        : strcmp(keys[k], "count") == 0 ? json_integer((json_int_t) v)
                                                        : json_real(v);
            json_object_set_new(st, keys[k], j);
        }
        json_object_set_new(st, "beyond_last_bound", beyond ? json_copy(beyond) : json_array());
        json_object_set_new(out, stage_rows[s].name, st);
    }
    return out;
}

static void
md_stages_run(report_t *r, const char *run, const char *label)
{
    char   db[64];
    double ledger;

    snprintf(db, sizeof(db), "%s_db", run);
    ledger = num(r, db, "ledger_ms.n");     /* section 8 has no ledger */
    fprintf(r->md, "**%s**: %s events published (outbox)", label, fnum(num(r, db, "kafka_ms.n"), 0));
    if (!isnan(ledger))
        fprintf(r->md, ", %s orders in the ledger", fnum(ledger, 0));
    fprintf(r->md, ".\n\n");
    fprintf(r->md, "| stage (ms) | p50 | p99 | mean | count |\n|---|---:|---:|---:|---:|\n");
    for (size_t s = 0; s < STAGE_NROWS; s++) {
        const char *st = stage_rows[s].name;
        fprintf(r->md, "| %s | %s | %s | %s | %s |\n", stage_rows[s].label, fstage_pct(r, run, st, "p50"),
                fstage_pct(r, run, st, "p99"), fms(stage_num(r, run, st, "mean_ms")),
                fnum(stage_num(r, run, st, "count"), 0));
    }
    fprintf(r->md, "\n");
}

/* The first run measured, or NULL. */
static const char *
stage_first_run(report_t *r)
{
    for (size_t k = 0; k < STAGE_NRUNS; k++)
        if (stage_part(r, stage_runs[k].run) != NULL)
            return stage_runs[k].run;
    return NULL;
}

/* The histograms' upper bounds in ms as `obbench stages` recorded them (borrowed), or NULL. */
static json_t *
stage_bounds_json(report_t *r)
{
    const char *run = stage_first_run(r);
    json_t     *b = run ? json_object_get(stage_part(r, run), "bounds_ms") : NULL;

    return json_is_array(b) ? b : NULL;
}

/* The bounds as text, "0.5, 1, ..., 1000", and the last one (NAN without bounds). */
static double
stage_bounds(report_t *r, char *out, size_t outlen)
{
    json_t *b;
    size_t  i, n = 0;
    double  last = NAN;

    out[0] = '\0';
    json_array_foreach(stage_bounds_json(r), i, b) {
        last = json_number_value(b);
        if (n < outlen)
            n += (size_t) snprintf(out + n, outlen - n, "%s%g", i ? ", " : "", last);
    }
    return last;
}

static void
md_stages_note(report_t *r)
{
    char   bounds[256];
    double last = stage_bounds(r, bounds, sizeof(bounds));

    fprintf(r->md, "Clocks (each stage is timed by the worker that counts it; all on this machine's wall clock):\n\n");
    for (size_t c = 0; c < sizeof(stage_clocks) / sizeof(stage_clocks[0]); c++)
        fprintf(r->md, "- %s.\n", stage_clocks[c].md);
    fprintf(r->md, "\nThe histograms are coarse (bucket bounds %s ms, then +Inf), so p50 and p99 are **estimates**, "
                   "interpolated linearly inside the bucket that holds them (as Prometheus's histogram_quantile "
                   "does); a percentile beyond the last bound is shown as \"> %g\", a lower bound. The mean is "
                   "exact (the workers sum the microseconds). CreateTime and occurred_at are whole milliseconds, "
                   "so the stages that start from them read up to 1 ms long. Section 8 runs no consumers: only the "
                   "relay stages count there, and in mode partitioned commit → claimed of `outboxd.emit` rows "
                   "includes the wait for the relay's next poll (nobody wakes it).\n\n",
            bounds, last);
}

static void
stages_put(report_t *r)
{
    json_t *runs = json_object(), *clocks = json_object(), *bounds = stage_bounds_json(r);

    for (size_t k = 0; k < STAGE_NRUNS; k++)
        if (stage_part(r, stage_runs[k].run) != NULL)
            json_object_set_new(runs, stage_runs[k].run, stage_summary(r, stage_runs[k].run));
    for (size_t c = 0; c < sizeof(stage_clocks) / sizeof(stage_clocks[0]); c++)
        json_object_set_new(clocks, stage_clocks[c].key, json_string(stage_clocks[c].md));
    json_object_set_new(r->summary, "stages",
                        json_pack("{s:O*, s:s, s:o, s:o}", "bounds_ms", bounds, "estimate",
                                  "percentiles interpolated linearly inside the histogram bucket holding them; "
                                  "beyond_last_bound: those that fell in the +Inf bucket, given as the last bound",
                                  "clocks", clocks, "runs", runs));
}

/*
 * Sections 4 and 8 measure commit -> Kafka and commit -> ledger from the
 * databases; this says which stage holds that time, one table per run.
 */
static void
md_stages(report_t *r)
{
    const char *title = "## 4b. Where the time goes: stage histograms (sections 4 and 8)";
    char        missing[512] = "";
    size_t      n = 0;

    if (stage_first_run(r) == NULL) {
        ran(r, title, "latency_stages");        /* says it was not run */
        return;
    }
    fprintf(r->md, "%s\n\n", title);
    fprintf(r->md, "Each relay and consumer keeps a histogram per stage of every event it handles (DESIGN §2; "
                   "`outboxd_stage_duration_seconds` in /metrics). `obbench stages` sums each stage over the "
                   "workers of its kind once the run has settled, just before outboxd stops, so a table covers "
                   "every event of its run. count = events the stage timed.\n\n");
    for (size_t k = 0; k < STAGE_NRUNS; k++) {
        if (stage_part(r, stage_runs[k].run) != NULL)
            md_stages_run(r, stage_runs[k].run, stage_runs[k].label);
        else if (n < sizeof(missing))
            n += (size_t) snprintf(missing + n, sizeof(missing) - n, "%s%s", n ? "; " : "", stage_runs[k].label);
    }
    if (n > 0)
        fprintf(r->md, "_Not measured in this invocation: %s._\n\n", missing);
    md_stages_note(r);
    stages_put(r);
}

/* Max RSS of a kind over the parts of one phase, in MB (NAN if none). */
static double
rss_max(report_t *r, const char *const *names, const char *kind)
{
    double best = NAN;
    char   path[64];

    snprintf(path, sizeof(path), "rss.%s.max_kb", kind);
    for (int i = 0; names[i] != NULL; i++) {
        double v = num(r, names[i], path) / 1024.0;
        if (!isnan(v) && (isnan(best) || v > best))
            best = v;
    }
    return best;
}

static void
md_memory(report_t *r)
{
    static const char *const intake[] = { "intake_full_watch", "intake_alone_watch", NULL };
    static const char *const drain[] = { "drain_r1", "drain_r2", "drain_skip", "drain_wal2", NULL };
    static const char *const apply[] = { "apply_c1", "apply_c2", NULL };
    static const char *const latency[] = { "latency_watch", "latency_wal_watch", NULL };
    static const char *const *phases[] = { intake, drain, apply, latency };
    static const char *kinds[] = { "supervisor", "http", "relay", "consumer" };
    char path[64];

    fprintf(r->md, "## 5. Memory (VmRSS, MB)\n\n");
    fprintf(r->md, "Idle = each process once the whole pipeline is up and before any load (start of section 1); "
                   "then the largest process of each kind, sampled every 100 ms, during each section.\n\n");
    fprintf(r->md, "| process | idle | intake | drain | apply | latency | max − idle |\n"
                   "|---|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof(path), "rss.%s.max_kb", kinds[k]);
        double idle = num(r, "idle", path) / 1024.0, top = NAN, v[4];
        for (int p = 0; p < 4; p++) {
            v[p] = rss_max(r, phases[p], kinds[k]);
            if (!isnan(v[p]) && (isnan(top) || v[p] > top))
                top = v[p];
        }
        fprintf(r->md, "| %s | %s | %s | %s | %s | %s | %s |\n", kinds[k], fnum(idle, 1), fnum(v[0], 1), fnum(v[1], 1),
                fnum(v[2], 1), fnum(v[3], 1), fnum(top - idle, 1));
        char key[48];
        snprintf(key, sizeof(key), "%s_growth_mb", kinds[k]);
        put(r, "memory", key, top - idle);
    }
    fprintf(r->md, "\n");
}

/* ---- CPU ---------------------------------------------------------------------- */

static void
md_cpu(report_t *r)
{
    static const struct {
        const char *part, *label;
    } runs[] = {
        { "intake_full_watch", "intake full" }, { "intake_alone_watch", "intake alone" },
        { "drain_r1", "drain 1 relay" },        { "drain_r2", "drain 2 relays" },
        { "drain_skip", "drain skip_locked" },  { "apply_c1", "apply 1 cons." },
        { "apply_c2", "apply 2 cons." },        { "latency_watch", "latency" },
        { "drain_wal2", "drain wal" },          { "latency_wal_watch", "latency wal" },
    };
    static const char *rows[] = { "http", "relay", "consumer", "supervisor", "pg http", "pg relay", "pg relay wal",
                                  "pg consumer",
                                  "pg autovacuum", "pg background", "pg other", "kafka", "others", "machine" };
    char path[64];

    fprintf(r->md, "## 6. Where the CPU went (cores busy, of %.0f)\n\n", num(r, "machine", "nproc"));
    fprintf(r->md, "CPU seconds per wall-clock second while each run measured: outboxd's processes by kind, the "
                   "PostgreSQL backends serving each kind (by application_name), autovacuum on the bench's "
                   "databases, the clusters' background processes (shared), Kafka's JVM. *others* = the whole "
                   "machine minus all of these: someone else's load, which makes a run less trustworthy.\n\n|");
    for (size_t c = 0; c < sizeof(runs) / sizeof(runs[0]); c++)
        fprintf(r->md, " | %s", runs[c].label);
    fprintf(r->md, " |\n|---");
    for (size_t c = 0; c < sizeof(runs) / sizeof(runs[0]); c++)
        fprintf(r->md, "|---:");
    fprintf(r->md, "|\n");
    for (size_t k = 0; k < sizeof(rows) / sizeof(rows[0]); k++) {
        fprintf(r->md, "| %s", strcmp(rows[k], "machine") == 0 ? "**machine (all)**" : rows[k]);
        for (size_t c = 0; c < sizeof(runs) / sizeof(runs[0]); c++) {
            snprintf(path, sizeof(path), "cpu.cores.%s", rows[k]);
            double v = num(r, runs[c].part, path);
            fprintf(r->md, " | %s", isnan(v) && part(r, runs[c].part) ? "" : fnum(v, 2));
        }
        fprintf(r->md, " |\n");
    }
    fprintf(r->md, "\n");
}

/* ---- relay mode wal beside partitioned ------------------------------------------ */

/* CPU seconds the orders cluster spent per 1 000 events during one measured part. */
static double
orders_cpu_per_k(report_t *r, const char *name, double events)
{
    return num(r, name, "cpu.db_cores.orders") * num(r, name, "cpu.seconds") / events * 1000;
}

static void
md_wal_row(report_t *r, const char *what, double poll, double wal, const char *fmt_poll, const char *fmt_wal)
{
    fprintf(r->md, "| %s | %s | %s | %s |\n", what, fmt_poll, fmt_wal, fratio(ratio(wal, poll)));
}

static void
md_wal(report_t *r)
{
    double d_poll = num(r, "drain_r2", "events_per_s"), d_wal = num(r, "drain_wal2", "events_per_s");
    double c_poll = orders_cpu_per_k(r, "drain_r2", num(r, "drain_r2", "published"));
    double c_wal = orders_cpu_per_k(r, "drain_wal2", num(r, "drain_wal2", "published"));
    double l_poll = orders_cpu_per_k(r, "latency_watch", num(r, "latency_pace", "created"));
    double l_wal = orders_cpu_per_k(r, "latency_wal_watch", num(r, "latency_wal_pace", "created"));
    double rss_poll = num(r, "drain_r2", "rss.relay.max_kb") / 1024, rss_wal = num(r, "drain_wal2", "rss.relay.max_kb") / 1024;
    static const char *paths[] = { "kafka_ms.p50", "kafka_ms.p99", "ledger_ms.p50", "ledger_ms.p99" };
    static const char *labels[] = { "commit → Kafka p50 (ms)", "commit → Kafka p99 (ms)", "commit → ledger p50 (ms)",
                                    "commit → ledger p99 (ms)" };

    if (!ran(r, "## 7. Relay mode wal beside partitioned", part(r, "drain_wal2") ? "drain_wal2" : "latency_wal_db"))
        return;
    fprintf(r->md, "## 7. Relay mode wal beside partitioned\n\n");
    fprintf(r->md, "Mode wal streams inserts from logical replication slots (pgoutput) instead of polling. Its drain "
                   "differs in one way, on purpose: the relays are streaming first, then the whole backlog arrives "
                   "as **one transaction** of %.0f rows (the case that must not blow up memory), and the clock "
                   "runs from the first published batch after its commit. Orders-database CPU = every process of "
                   "the orders cluster (backends, WAL senders, autovacuum, background writers), CPU seconds per "
                   "1 000 events. The paced load is section 4's, same rate, same length.\n\n",
            num(r, "settings", "rows"));
    fprintf(r->md, "| measure | partitioned | wal | wal / partitioned |\n|---|---:|---:|---:|\n");
    md_wal_row(r, "drain, 2 relays (events/s)", d_poll, d_wal, fnum(d_poll, 0), fnum(d_wal, 0));
    md_wal_row(r, "orders-db CPU s per 1 000 events, drain", c_poll, c_wal, fnum(c_poll, 3), fnum(c_wal, 3));
    md_wal_row(r, "largest relay RSS during the drain (MB)", rss_poll, rss_wal, fnum(rss_poll, 1), fnum(rss_wal, 1));
    for (int i = 0; i < 4; i++) {
        double a = num(r, "latency_db", paths[i]), b = num(r, "latency_wal_db", paths[i]);
        md_wal_row(r, labels[i], a, b, fms(a), fms(b));
    }
    md_wal_row(r, "orders-db CPU s per 1 000 events, paced load", l_poll, l_wal, fnum(l_poll, 3), fnum(l_wal, 3));
    md_wal_row(r, "orders-db cores busy, paced load", num(r, "latency_watch", "cpu.db_cores.orders"),
               num(r, "latency_wal_watch", "cpu.db_cores.orders"), fnum(num(r, "latency_watch", "cpu.db_cores.orders"), 2),
               fnum(num(r, "latency_wal_watch", "cpu.db_cores.orders"), 2));
    fprintf(r->md, "\n");
    put(r, "wal", "drain_events_per_s", d_wal);
    put(r, "wal", "drain_over_partitioned", ratio(d_wal, d_poll));
    put(r, "wal", "drain_orders_cpu_s_per_1000", c_wal);
    put(r, "wal", "partitioned_drain_orders_cpu_s_per_1000", c_poll);
    put(r, "wal", "paced_orders_cpu_s_per_1000", l_wal);
    put(r, "wal", "partitioned_paced_orders_cpu_s_per_1000", l_poll);
    put(r, "wal", "relay_rss_max_mb_one_txn", rss_wal);
    put(r, "wal", "ledger_p50_ms", num(r, "latency_wal_db", "ledger_ms.p50"));
    put(r, "wal", "ledger_p99_ms", num(r, "latency_wal_db", "ledger_ms.p99"));
}

/* ---- foreign SQL writers: outboxd.emit beside POST /orders ------------------------ */

/* The performance issue's target for emit, in both modes: commit -> Kafka at 500/s. */
#define EMIT_P50_MS 5.0
#define EMIT_P99_MS 20.0

static const char *const emit_modes[] = { "partitioned", "wal" };

/* A number of part emit_MODE_WHO (who: http_db, sql_db, sql_pace...). */
static double
emit_num(report_t *r, const char *mode, const char *who, const char *path)
{
    char name[64];

    snprintf(name, sizeof(name), "emit_%s_%s", mode, who);
    return num(r, name, path);
}

static const char *
emit_verdict(double p50, double p99)
{
    if (isnan(p50) || isnan(p99))
        return "?";
    return p50 <= EMIT_P50_MS && p99 <= EMIT_P99_MS ? "met" : "**missed**";
}

static void
emit_put(report_t *r, const char *mode, const char *key, double v)
{
    char k[64];

    snprintf(k, sizeof(k), "%s_%s", mode, key);
    put(r, "emit", k, v);
}

static void
md_emit_row(report_t *r, const char *mode)
{
    double h50 = emit_num(r, mode, "http_db", "kafka_ms.p50"), h99 = emit_num(r, mode, "http_db", "kafka_ms.p99");
    double e50 = emit_num(r, mode, "sql_db", "kafka_ms.p50"), e99 = emit_num(r, mode, "sql_db", "kafka_ms.p99");
    double c50 = emit_num(r, mode, "sql_pace", "latency_ms.p50"), c99 = emit_num(r, mode, "sql_pace", "latency_ms.p99");

    fprintf(r->md, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", mode, fms(h50), fms(h99), fms(e50),
            fms(e99), fratio(ratio(e50, h50)), fratio(ratio(e99, h99)), fms(c50), fms(c99), emit_verdict(e50, e99));
    emit_put(r, mode, "http_kafka_p50_ms", h50);
    emit_put(r, mode, "http_kafka_p99_ms", h99);
    emit_put(r, mode, "emit_kafka_p50_ms", e50);
    emit_put(r, mode, "emit_kafka_p99_ms", e99);
    emit_put(r, mode, "emit_over_http_p50", ratio(e50, h50));
    emit_put(r, mode, "emit_over_http_p99", ratio(e99, h99));
    emit_put(r, mode, "emit_client_p50_ms", c50);
    emit_put(r, mode, "emit_client_p99_ms", c99);
}

/* What each run actually did, so a failed or overloaded run is not read as a figure. */
static void
md_emit_run(report_t *r, const char *mode, const char *who, const char *label)
{
    char        pace[16], db[16], watch[16], name[64];
    const char *first;

    snprintf(pace, sizeof(pace), "%s_pace", who);
    snprintf(db, sizeof(db), "%s_db", who);
    snprintf(watch, sizeof(watch), "%s_watch", who);
    snprintf(name, sizeof(name), "emit_%s_%s", mode, pace);
    first = part(r, name) ? json_string_value(json_object_get(part(r, name), "first_error")) : NULL;
    double errors = strcmp(who, "http") == 0
                        ? emit_num(r, mode, pace, "http_errors") + emit_num(r, mode, pace, "lost")
                        : emit_num(r, mode, pace, "errors") + emit_num(r, mode, pace, "unsent");
    fprintf(r->md, "| %s, %s | %s | %s | %s | %s | %s | %s | %s |\n", mode, label,
            fnum(emit_num(r, mode, pace, "sent"), 0), fnum(errors, 0),
            fnum(emit_num(r, mode, pace, "achieved_rate"), 0),
            fnum(emit_num(r, mode, pace, "late"), 0), fnum(emit_num(r, mode, db, "kafka_ms.n"), 0),
            fnum(emit_num(r, mode, db, "kafka_ms.pending"), 0), fnum(emit_num(r, mode, watch, "cpu.cores.others"), 2));
    if (first != NULL)
        fprintf(r->md, "| | first error: `%s` | | | | | | |\n", first);
}

static void
md_emit(report_t *r)
{
    const char *title = "## 8. Foreign SQL writers: outboxd.emit beside POST /orders";
    double      rate = num(r, "settings", "emit_rate");

    if (!ran(r, title, part(r, "emit_wal_sql_db") ? "emit_wal_sql_db" : "emit_partitioned_sql_db"))
        return;
    fprintf(r->md, "%s\n\n", title);
    fprintf(r->md, "The same rate, %s transactions/s for %.0f s, written two ways in each relay mode, each on a fresh "
                   "orderdb and topic with 2 relays and no consumers: `POST /orders` through our 2 HTTP workers "
                   "(`obbench pace`, %.0f connections; the workers wake the relays after each commit), and "
                   "`SELECT outboxd.emit('product', id, 'product.updated', payload)` as one autocommit transaction "
                   "from %.0f SQL connections of a foreign writer (`obbench emit-pace`, open loop, http=0: nobody "
                   "wakes the relays). commit → Kafka = outboxd.outbox.published_at − created_at in both. Client = "
                   "emit-pace's own latency, from when a transaction was due until emit returned.\n\n",
            fnum(rate, 0), num(r, "settings", "latency_seconds"), num(r, "settings", "pace_conns"),
            num(r, "settings", "emit_conns"));
    fprintf(r->md, "| mode | HTTP → Kafka p50 | HTTP → Kafka p99 | emit → Kafka p50 | emit → Kafka p99 "
                   "| emit / HTTP p50 | emit / HTTP p99 | emit client p50 | emit client p99 "
                   "| target (p50 ≤ %.0f, p99 ≤ %.0f ms) |\n"
                   "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
            EMIT_P50_MS, EMIT_P99_MS);
    for (size_t i = 0; i < sizeof(emit_modes) / sizeof(emit_modes[0]); i++)
        md_emit_row(r, emit_modes[i]);
    fprintf(r->md, "\nAll figures in ms. Mode partitioned finds rows nobody woke it for only at its next poll "
                   "(poll_interval_ms, 100 ms by default); mode wal receives them from the WAL stream.\n\n");
    fprintf(r->md, "| run | sent | errors | achieved /s | late > 1 ms | in Kafka | pending | *others* cores |\n"
                   "|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < sizeof(emit_modes) / sizeof(emit_modes[0]); i++) {
        md_emit_run(r, emit_modes[i], "http", "POST /orders");
        md_emit_run(r, emit_modes[i], "sql", "outboxd.emit");
    }
    fprintf(r->md, "\n*others* = cores busy outside outboxd, PostgreSQL and Kafka (section 6), the load generator "
                   "itself included: well above its share, someone else's load distorted the run. Errors include "
                   "requests lost or never sent.\n\n");
    put(r, "emit", "rate", rate);
}

/* ---- peers: Debezium beside outboxd ------------------------------------------------ */

/* The performance issue's targets against Debezium: outboxd's drain (2 relays) at least 3x
 * Debezium's, and no more orders-database CPU per event than Debezium. */
#define PEER_DRAIN_MIN_RATIO 3.0
#define PEER_CPU_MAX_RATIO   1.0

static const char *const peer_cfgs[] = { "default", "tuned" };
static const char *const peer_labels[] = { "Debezium, default poll.interval.ms", "Debezium, poll.interval.ms 10" };
static const char *const peer_polls[] = { "default poll.interval.ms", "poll.interval.ms 10" };
#define PEER_NCFG 2

/* One publisher's figures in the peers tables; NAN where not measured. */
typedef struct {
    double drain, first_s, cpu_k, p50, p99, rss_mb, rss_idle_mb, startup;
} peer_fig_t;

static double
peer_num(report_t *r, const char *cfg, const char *what, const char *path)
{
    char name[64];

    snprintf(name, sizeof(name), "peer_%s_%s", cfg, what);
    return num(r, name, path);
}

static void
peer_figures(report_t *r, const char *cfg, peer_fig_t *f)
{
    char drain[64];

    snprintf(drain, sizeof(drain), "peer_%s_drain", cfg);
    f->drain = num(r, drain, "events_per_s");
    f->first_s = num(r, drain, "first_seconds");
    f->cpu_k = orders_cpu_per_k(r, drain, num(r, drain, "published"));
    f->p50 = peer_num(r, cfg, "db", "kafka_ms.p50");
    f->p99 = peer_num(r, cfg, "db", "kafka_ms.p99");
    f->rss_idle_mb = peer_num(r, cfg, "ready", "rss_kb") / 1024;
    /* fmax skips a NAN: the peak of whatever was sampled */
    f->rss_mb = fmax(fmax(f->rss_idle_mb, num(r, drain, "rss_kb.max") / 1024),
                     peer_num(r, cfg, "watch", "rss_kb.max") / 1024);
    f->startup = peer_num(r, cfg, "ready", "startup_seconds");
}

/* outboxd's figures of this run: drain r2 and emit partitioned, or drain wal2 and emit wal. */
static void
peer_outboxd(report_t *r, int wal, peer_fig_t *f)
{
    const char *drain = wal ? "drain_wal2" : "drain_r2", *mode = wal ? "wal" : "partitioned";

    f->drain = num(r, drain, "events_per_s");
    f->first_s = NAN;
    f->cpu_k = orders_cpu_per_k(r, drain, num(r, drain, "published"));
    f->p50 = emit_num(r, mode, "sql_db", "kafka_ms.p50");
    f->p99 = emit_num(r, mode, "sql_db", "kafka_ms.p99");
    f->rss_mb = num(r, drain, "rss.relay.max_kb") / 1024;
    f->rss_idle_mb = NAN;
    /* process start to first published batch; the wal drain's clock starts at its commit instead */
    f->startup = wal ? NAN : num(r, drain, "startup_seconds");
}

static const char *f_0(double v) { return fnum(v, 0); }
static const char *f_1(double v) { return fnum(v, 1); }
static const char *f_3(double v) { return fnum(v, 3); }

/* The measures of both tables, as offsets into peer_fig_t. */
static const struct {
    const char *label, *key;
    size_t      off;
    const char *(*fmt)(double);
} peer_rows[] = {
    { "drain of the backlog (events/s)", "drain_events_per_s", offsetof(peer_fig_t, drain), f_0 },
    { "orders-db CPU s per 1 000 events, drain", "drain_orders_cpu_s_per_1000", offsetof(peer_fig_t, cpu_k), f_3 },
    { "commit → Kafka p50 (ms), outboxd.emit at the emit rate", "kafka_p50_ms", offsetof(peer_fig_t, p50), fms },
    { "commit → Kafka p99 (ms), outboxd.emit at the emit rate", "kafka_p99_ms", offsetof(peer_fig_t, p99), fms },
    { "publisher RSS, peak (MB)", "rss_peak_mb", offsetof(peer_fig_t, rss_mb), f_1 },
    { "start-up (s)", "startup_seconds", offsetof(peer_fig_t, startup), f_1 },
};
#define PEER_NROWS (sizeof(peer_rows) / sizeof(peer_rows[0]))

static double
peer_at(const peer_fig_t *f, size_t row)
{
    return *(const double *) ((const char *) f + peer_rows[row].off);
}

/* Debezium's own figures, and a few that explain them. */
static void
md_peers_alone(report_t *r, const peer_fig_t dz[PEER_NCFG])
{
    char key[96];

    fprintf(r->md, "| measure | %s | %s |\n|---|---:|---:|\n", peer_labels[0], peer_labels[1]);
    for (size_t i = 0; i < PEER_NROWS; i++) {
        fprintf(r->md, "| %s | %s | %s |\n", peer_rows[i].label, peer_rows[i].fmt(peer_at(&dz[0], i)),
                peer_rows[i].fmt(peer_at(&dz[1], i)));
        for (int c = 0; c < PEER_NCFG; c++) {
            snprintf(key, sizeof(key), "%s_%s", peer_cfgs[c], peer_rows[i].key);
            put(r, "peers", key, peer_at(&dz[c], i));
        }
    }
    fprintf(r->md, "| drain: commit → first record in Kafka (s) | %s | %s |\n", fsecs(dz[0].first_s),
            fsecs(dz[1].first_s));
    fprintf(r->md, "| Connect JVM RSS once streaming, before any load (MB) | %s | %s |\n\n", f_1(dz[0].rss_idle_mb),
            f_1(dz[1].rss_idle_mb));
}

/* outboxd / Debezium for each measure, both outboxd modes against both Debezium runs. */
static void
md_peers_beside(report_t *r, const peer_fig_t ob[2], const peer_fig_t dz[PEER_NCFG])
{
    static const char *const obk[] = { "partitioned", "wal" };
    char                     key[128];

    fprintf(r->md, "| measure | outboxd partitioned | outboxd wal | Debezium, default poll | Debezium, poll 10 ms "
                   "| partitioned / default | partitioned / 10 ms | wal / default | wal / 10 ms |\n"
                   "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < PEER_NROWS; i++) {
        fprintf(r->md, "| %s | %s | %s | %s | %s", peer_rows[i].label, peer_rows[i].fmt(peer_at(&ob[0], i)),
                peer_rows[i].fmt(peer_at(&ob[1], i)), peer_rows[i].fmt(peer_at(&dz[0], i)),
                peer_rows[i].fmt(peer_at(&dz[1], i)));
        for (int m = 0; m < 2; m++)
            for (int c = 0; c < PEER_NCFG; c++) {
                double v = ratio(peer_at(&ob[m], i), peer_at(&dz[c], i));
                fprintf(r->md, " | %s", fratio(v));
                snprintf(key, sizeof(key), "%s_over_%s_%s", obk[m], peer_cfgs[c], peer_rows[i].key);
                put(r, "peers", key, v);
            }
        fprintf(r->md, " |\n");
    }
    fprintf(r->md, "\nRatios are outboxd / Debezium: above 1 is better for outboxd in the drain row, below 1 in "
                   "every other row. outboxd's figures are this run's: drain = section 2's 2 relays "
                   "(partitioned) and section 7's wal drain; commit → Kafka = section 8's outboxd.emit runs; "
                   "RSS = its largest relay process during that drain (it runs two, and a supervisor, section 5); "
                   "start-up = process start to first published batch (section 2; not measured for wal).\n\n");
}

static void
peer_drain_note(report_t *r, const char *cfg, char *note, size_t len)
{
    char name[64];
    int  n;

    snprintf(name, sizeof(name), "peer_%s_drain", cfg);
    n = snprintf(note, len, "%s partition(s) holding another count than the outbox",
                 fnum(num(r, name, "partition_mismatches"), 0));
    if (flag(r, name, "timed_out"))
        snprintf(note + n, len - (size_t) n, "; **timed out**: its rate is a lower bound");
}

/* What each Debezium run did: records read back and compared, load errors, someone else's load. */
static void
md_peers_runs(report_t *r)
{
    fprintf(r->md, "| run | records compared | as outboxd sends them | re-sent | in Kafka / rows | notes "
                   "| *others* cores |\n|---|---:|---:|---:|---:|---|---:|\n");
    for (int c = 0; c < PEER_NCFG; c++) {
        const char *cfg = peer_cfgs[c];
        char        note[256];
        peer_drain_note(r, cfg, note, sizeof(note));
        fprintf(r->md, "| %s, drain | %s | %s | %s | %s / %s | %s | %s |\n", cfg,
                fnum(peer_num(r, cfg, "drain_check", "read"), 0), fnum(peer_num(r, cfg, "drain_check", "alike"), 0),
                fnum(peer_num(r, cfg, "drain_check", "duplicates"), 0), fnum(peer_num(r, cfg, "drain", "published"), 0),
                fnum(peer_num(r, cfg, "drain", "rows"), 0), note, fnum(peer_num(r, cfg, "drain", "cpu.cores.others"), 2));
        snprintf(note, sizeof(note), "emit: %s sent, %s errors or unsent, %s late > 1 ms, %s/s achieved",
                 fnum(peer_num(r, cfg, "pace", "sent"), 0),
                 fnum(peer_num(r, cfg, "pace", "errors") + peer_num(r, cfg, "pace", "unsent"), 0),
                 fnum(peer_num(r, cfg, "pace", "late"), 0), fnum(peer_num(r, cfg, "pace", "achieved_rate"), 0));
        fprintf(r->md, "| %s, emit | %s | %s | %s | %s / %s | %s | %s |\n", cfg, fnum(peer_num(r, cfg, "db", "read"), 0),
                fnum(peer_num(r, cfg, "db", "alike"), 0), fnum(peer_num(r, cfg, "db", "duplicates"), 0),
                fnum(peer_num(r, cfg, "db", "matched"), 0),
                fnum(peer_num(r, cfg, "db", "matched") + peer_num(r, cfg, "db", "kafka_ms.pending"), 0), note,
                fnum(peer_num(r, cfg, "watch", "cpu.cores.others"), 2));
    }
    fprintf(r->md, "\n");
}

/* The first record that differs from outboxd's, and the headers Debezium adds on top. */
static void
md_peers_records(report_t *r)
{
    static const char *const checks[] = { "drain_check", "db" };
    json_t                  *extra = NULL;

    for (int c = 0; c < PEER_NCFG; c++)
        for (int k = 0; k < 2; k++) {
            char    name[64];
            json_t *p;
            snprintf(name, sizeof(name), "peer_%s_%s", peer_cfgs[c], checks[k]);
            if ((p = part(r, name)) == NULL)
                continue;
            const char *first = json_string_value(json_object_get(p, "first_mismatch"));
            if (first != NULL)
                fprintf(r->md, "- **%s: a record differs from outboxd's**: `%s`\n", name, first);
            extra = extra ? extra : json_object_get(p, "extra_headers");
        }
    fprintf(r->md, "- Every record read back was compared with its outbox row as outboxd's relay would send it: "
                   "key, value bytes, partition, and the headers event-id, event-type, aggregate-id, "
                   "aggregate-seq, content-type, aggregate-type. Headers Debezium adds on top:");
    size_t  i;
    json_t *v;
    json_array_foreach(extra, i, v) fprintf(r->md, "%s `%s`", i ? "," : "", json_string_value(v));
    fprintf(r->md, "%s.\n\n", json_array_size(extra) ? "" : " none seen");
}

/* Where the cores went during each Debezium drain. */
static void
md_peers_cpu(report_t *r)
{
    for (int c = 0; c < PEER_NCFG; c++) {
        char name[64];
        snprintf(name, sizeof(name), "peer_%s_drain", peer_cfgs[c]);
        if (part(r, name) == NULL)
            continue;
        fprintf(r->md, "- %s drain, cores busy: Connect JVM %s, orders cluster %s (its WAL sender %s), Kafka %s, "
                       "machine %s, *others* %s.\n", peer_cfgs[c], fnum(num(r, name, "cpu.cores.connect"), 2),
                fnum(num(r, name, "cpu.db_cores.orders"), 2), fnum(num(r, name, "cpu.cores.pg walsender"), 2),
                fnum(num(r, name, "cpu.cores.kafka"), 2), fnum(num(r, name, "cpu.cores.machine"), 2),
                fnum(num(r, name, "cpu.cores.others"), 2));
    }
    fprintf(r->md, "\n");
}

static void
md_peers(report_t *r)
{
    const char *title = "## 9. Debezium beside outboxd (peers)";
    peer_fig_t  dz[PEER_NCFG], ob[2];
    int         drain = part(r, "drain_r2") != NULL, emit = part(r, "emit_partitioned_sql_db") != NULL;

    if (!ran(r, title, part(r, "peer_default_ready") ? "peer_default_ready" : "peers"))
        return;
    for (int c = 0; c < PEER_NCFG; c++)
        peer_figures(r, peer_cfgs[c], &dz[c]);
    fprintf(r->md, "%s\n\n", title);
    fprintf(r->md, "Kafka Connect %s standalone worker (`%s`, %s) with debezium-connector-postgres %s and the outbox "
                   "EventRouter: pgoutput, slot and publication (outboxd.outbox, inserts) created before any row, "
                   "snapshot.mode=no_data, keys through StringConverter, values through BinaryDataConverter, "
                   "outboxd's partition column as the Kafka partition and its headers from the row "
                   "(bench/peers/). Run twice, with poll.interval.ms at its default (500 ms) and at %.0f ms, each "
                   "one worker: start-up (JVM launched → task RUNNING and slot active), then the drain (the %.0f "
                   "rows of section 2, committed as one transaction while it streams, as section 7 drains mode "
                   "wal; clock from the first record in Kafka until the topic holds them all, from the topic's "
                   "watermarks), then section 8's foreign writer (`outboxd.emit`, %s/s from %.0f connections for "
                   "%.0f s) on a warm worker. commit → Kafka = the broker's LogAppendTime of the record − the "
                   "row's created_at. The section took %s s.\n\n",
            str(r, "peers", "connect"), str(r, "peers", "jvm"), str(r, "peers", "java"), str(r, "peers", "debezium"),
            num(r, "peers", "tuned_poll_interval_ms"), num(r, "peer_default_drain", "rows"),
            fnum(num(r, "settings", "emit_rate"), 0), num(r, "settings", "emit_conns"),
            num(r, "settings", "latency_seconds"), fnum(num(r, "peers", "seconds"), 0));
    md_peers_alone(r, dz);
    if (drain || emit) {
        peer_outboxd(r, 0, &ob[0]);
        peer_outboxd(r, 1, &ob[1]);
        md_peers_beside(r, ob, dz);
    }
    if (!drain || !emit)
        fprintf(r->md, "_Section%s %s did not run in this invocation: %s._\n\n", drain || emit ? "" : "s",
                !drain && !emit ? "drain and emit" : !drain ? "drain" : "emit",
                drain || emit ? "the ratios that need it are n/a" : "Debezium's figures alone, no ratios");
    md_peers_runs(r);
    md_peers_records(r);
    md_peers_cpu(r);
    put(r, "peers", "seconds", num(r, "peers", "seconds"));
}

/* ---- 10. relays on several hosts ------------------------------------------------- */

/* Each run with more hosts has a control: the same number of relays in one instance. */
static const struct {
    const char *name, *label, *control;
} host_runs[] = {
    { "hosts_h1", "1 host × 2 relays", NULL },
    { "hosts_h2", "2 hosts × 2 relays", "hosts_h1x4" },
    { "hosts_h3", "3 hosts × 2 relays", "hosts_h1x6" },
    { "hosts_h1x4", "1 host × 4 relays (control)", NULL },
    { "hosts_h1x6", "1 host × 6 relays (control)", NULL },
};

#define HOSTS_NRUNS (sizeof(host_runs) / sizeof(host_runs[0]))
/* "≈ 1": a 10 % loss is beyond this machine's run-to-run noise, which coordination would have to explain */
#define HOSTS_RATIO_MIN 0.90

/* "6 / 6" of a run's hosts: the partitions each owned at the end, or what each published. */
static const char *
hosts_list(report_t *r, const char *name, const char *key, int *spread)
{
    json_t *hosts = json_object_get(part(r, name), "hosts");
    char   *b = fbuf();
    size_t  n = 0, i;
    json_t *h;
    long    lo = -1, hi = -1;

    b[0] = '\0';
    json_array_foreach(hosts, i, h) {
        long v = (long) json_integer_value(json_object_get(h, key));
        if (n < 48)
            n += (size_t) snprintf(b + n, 48 - n, "%s%ld", i ? " / " : "", v);
        lo = lo < 0 || v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (spread != NULL)
        *spread = (int) (hi - lo);
    return n ? b : "n/a";
}

/* CPU seconds per event of one component during a run, in microseconds. */
static double
hosts_us_per_event(report_t *r, const char *name, const char *cores_path)
{
    return num(r, name, cores_path) / num(r, name, "events_per_s") * 1e6;
}

static void
md_hosts_model(report_t *r)
{
    const char *h1 = "hosts_h1";
    double      relay = hosts_us_per_event(r, h1, "cpu.cores.relay");
    double      pg = hosts_us_per_event(r, h1, "cpu.db_cores.orders");
    double      kafka = hosts_us_per_event(r, h1, "cpu.cores.kafka");
    double      machine = hosts_us_per_event(r, h1, "cpu.cores.machine");

    put(r, "hosts", "relay_us_per_event", relay);
    put(r, "hosts", "orders_db_us_per_event", pg);
    put(r, "hosts", "kafka_us_per_event", kafka);
    fprintf(r->md,
            "**Scaling model.** A drain is CPU-bound, so its rate is set by the CPU each event costs where it "
            "runs. In the 1-host run an event cost %s µs of relay CPU, %s µs in the orders database and %s µs in "
            "Kafka (%s µs of the whole machine, of %.0f cores). Here every host shares the same %.0f cores, so "
            "adding hosts moves the relays' CPU around and the rate stays put, which is what the ratios show. "
            "Where each host has C cores of its own, H hosts publish at most\n\n"
            "    min( H · C / %s µs,  C_pg / %s µs,  C_kafka / %s µs )  events/s\n\n"
            "with C_pg and C_kafka the cores of the orders primary and of the brokers (Kafka's share spreads "
            "over its brokers by partition leadership). Per core: a relay host publishes %s events/s, the "
            "orders database serves %s, Kafka takes %s. So hosts add throughput until the orders database's "
            "cores are the limit; the relays' CPU per event is the term that grows with H. Coordination adds "
            "no per-event term: a relay reads the seats once a tick, whatever the rate.\n\n",
            fnum(relay, 1), fnum(pg, 1), fnum(kafka, 1), fnum(machine, 1), num(r, "machine", "nproc"),
            num(r, "machine", "nproc"), fnum(relay, 1), fnum(pg, 1), fnum(kafka, 1), fnum(1e6 / relay, 0),
            fnum(1e6 / pg, 0), fnum(1e6 / kafka, 0));
}

static void
md_hosts(report_t *r)
{
    const char *title = "## 10. Scale-out: relays on 1, 2 and 3 hosts";
    double      base = num(r, "hosts_h1", "events_per_s");

    if (!ran(r, title, "hosts_h1"))
        return;
    fprintf(r->md, "%s\n\n", title);
    fprintf(r->md, "Each host is a network namespace with its own address and its own outboxd (supervisor, shm "
                   "segment, relays), reaching this machine's PostgreSQL and Kafka through a bridge, as another "
                   "machine would. The hosts share the drain's backlog and topic; they start together on the "
                   "filled outbox. The clock runs from the moment every partition is owned, fairly among the "
                   "hosts (within one), until no row is pending: before that, the host whose relays took the "
                   "first seats publishes everything until the others' seats are read (*settled after*). The "
                   "partitions each host owned are read at the end, before anyone stops; the events each "
                   "published are those of the timed window.\n\n");
    fprintf(r->md, "| run | events/s | seconds | × 1 host | × control | settled after s | partitions per host | "
                   "events per host | relay cores | orders-db cores | Kafka cores | machine |\n"
                   "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < HOSTS_NRUNS; i++) {
        const char *n = host_runs[i].name;
        double      rate = num(r, n, "events_per_s");
        int         spread = 0;
        if (part(r, n) == NULL)
            continue;
        const char *owned = hosts_list(r, n, "partitions", &spread);
        double      control = host_runs[i].control ? num(r, host_runs[i].control, "events_per_s") : NAN;
        fprintf(r->md, "| %s | %s | %s | %s | %s | %s | %s%s | %s | %s | %s | %s | %s |\n", host_runs[i].label,
                fnum(rate, 0), fsecs(num(r, n, "seconds")), fratio(ratio(rate, base)),
                host_runs[i].control ? fratio(ratio(rate, control)) : "",
                fsecs(num(r, n, "startup_seconds")), owned, spread > 1 ? " **unfair**" : "",
                hosts_list(r, n, "published_timed", NULL), fnum(num(r, n, "cpu.cores.relay"), 2),
                fnum(num(r, n, "cpu.db_cores.orders"), 2), fnum(num(r, n, "cpu.cores.kafka"), 2),
                fnum(num(r, n, "cpu.cores.machine"), 2));
        put(r, "hosts", n + strlen("hosts_"), rate);
    }
    for (size_t i = 0; i < HOSTS_NRUNS; i++)
        if (host_runs[i].control != NULL) {
            char key[32];
            snprintf(key, sizeof(key), "%s_over_control", host_runs[i].name + strlen("hosts_"));
            put(r, "hosts", key, ratio(num(r, host_runs[i].name, "events_per_s"),
                                       num(r, host_runs[i].control, "events_per_s")));
        }
    fprintf(r->md, "\nMore hosts here also means more relays, which changes how their claims, sends and marks "
                   "overlap on these cores, so × 1 host mixes two effects. Each control runs "
                   "the same relays in one instance: × control is what spreading them over hosts costs, which "
                   "is the cost of coordination.\n\n");
    md_hosts_model(r);
}

/* ---- targets: what outboxd must reach beside its baselines ------------------- */

static void
target(report_t *r, const char *what, double v, double limit, int at_least, const char *fmt_v)
{
    int met = !isnan(v) && (at_least ? v >= limit : v <= limit);

    fprintf(r->md, "| %s | %s | %s %s | %s |\n", what, isnan(v) ? "n/a" : fmt_v, at_least ? "≥" : "≤",
            fnum(limit, limit < 1 ? 2 : 0), isnan(v) ? "?" : met ? "met" : "**missed**");
    json_array_append_new(r->targets, json_pack("{s:s, s:o, s:f, s:s, s:b}", "target", what, "value",
                                                isnan(v) ? json_null() : json_real(v), "limit", limit, "sense",
                                                at_least ? ">=" : "<=", "met", met));
}

static void
md_emit_targets(report_t *r, const char *mode)
{
    char   what[128];
    double p50 = emit_num(r, mode, "sql_db", "kafka_ms.p50"), p99 = emit_num(r, mode, "sql_db", "kafka_ms.p99");
    double rate = num(r, "settings", "emit_rate");

    snprintf(what, sizeof(what), "outboxd.emit commit → Kafka p50 (ms), %s, %s/s", mode, fnum(rate, 0));
    target(r, what, p50, EMIT_P50_MS, 0, fms(p50));
    snprintf(what, sizeof(what), "outboxd.emit commit → Kafka p99 (ms), %s, %s/s", mode, fnum(rate, 0));
    target(r, what, p99, EMIT_P99_MS, 0, fms(p99));
}

/* outboxd's default mode (2 relays, partitioned) against each Debezium run. */
static void
md_peer_targets(report_t *r)
{
    char   what[160];
    double r2 = num(r, "drain_r2", "events_per_s");
    double cpu = orders_cpu_per_k(r, "drain_r2", num(r, "drain_r2", "published"));

    if (part(r, "peer_default_drain") == NULL && part(r, "peer_tuned_drain") == NULL)
        return;
    for (int c = 0; c < PEER_NCFG; c++) {
        peer_fig_t dz;
        peer_figures(r, peer_cfgs[c], &dz);
        snprintf(what, sizeof(what), "drain (2 relays) / Debezium's drain, %s", peer_polls[c]);
        target(r, what, ratio(r2, dz.drain), PEER_DRAIN_MIN_RATIO, 1, fratio(ratio(r2, dz.drain)));
    }
    for (int c = 0; c < PEER_NCFG; c++) {
        peer_fig_t dz;
        peer_figures(r, peer_cfgs[c], &dz);
        snprintf(what, sizeof(what), "orders-db CPU per event, drain: outboxd (2 relays) / Debezium, %s (measured)",
                 peer_polls[c]);
        target(r, what, ratio(cpu, dz.cpu_k), PEER_CPU_MAX_RATIO, 0, fratio(ratio(cpu, dz.cpu_k)));
    }
}

static void
md_hosts_targets(report_t *r)
{
    char what[96];

    if (part(r, "hosts_h1") == NULL)
        return;
    for (size_t i = 0; i < HOSTS_NRUNS; i++) {
        if (host_runs[i].control == NULL)
            continue;
        double v = ratio(num(r, host_runs[i].name, "events_per_s"), num(r, host_runs[i].control, "events_per_s"));
        snprintf(what, sizeof(what), "drain, %s / the same relays in one instance", host_runs[i].label);
        target(r, what, v, HOSTS_RATIO_MIN, 1, fratio(v));
    }
}

static void
md_targets(report_t *r)
{
    double full = num(r, "intake_full", "rps");
    double r2 = num(r, "drain_r2", "events_per_s");
    double growth = NAN;
    json_t *mem = json_object_get(r->summary, "memory");
    const char *k;
    json_t *v;

    json_object_foreach(mem, k, v) {
        if (json_is_number(v) && (isnan(growth) || json_number_value(v) > growth))
            growth = json_number_value(v);
    }
    fprintf(r->md, "## Targets\n\n| target | measured | wanted | |\n|---|---:|---:|---|\n");
    target(r, "intake: whole pipeline / intake alone", ratio(full, num(r, "intake_alone", "rps")), 0.80, 1,
           fratio(ratio(full, num(r, "intake_alone", "rps"))));
    target(r, "intake: whole pipeline / pgbench", ratio(full, num(r, "intake_pgbench", "tps")), 0.35, 1,
           fratio(ratio(full, num(r, "intake_pgbench", "tps"))));
    target(r, "drain (2 relays) / max intake", ratio(r2, max_intake(r)), 10, 1, fratio(ratio(r2, max_intake(r))));
    target(r, "drain (2 relays) / librdkafka ceiling", ratio(r2, num(r, "drain_ceiling", "events_per_s")), 0.30, 1,
           fratio(ratio(r2, num(r, "drain_ceiling", "events_per_s"))));
    target(r, "commit → ledger p50 (ms)", num(r, "latency_db", "ledger_ms.p50"), 5, 0,
           fms(num(r, "latency_db", "ledger_ms.p50")));
    target(r, "commit → ledger p99 (ms)", num(r, "latency_db", "ledger_ms.p99"), 25, 0,
           fms(num(r, "latency_db", "ledger_ms.p99")));
    double naive = ratio(num(r, "latency_naive_db", "kafka_ms.p50"), num(r, "latency_db", "ledger_ms.p50"));
    target(r, "naive commit → Kafka p50 / ours commit → ledger p50", naive, 100, 1, fratio(naive));
    target(r, "largest RSS growth of any process (MB)", growth, 64, 0, fnum(growth, 1));
    for (size_t i = 0; i < sizeof(emit_modes) / sizeof(emit_modes[0]); i++)
        md_emit_targets(r, emit_modes[i]);
    md_peer_targets(r);
    md_hosts_targets(r);
    fprintf(r->md, "\n");
    if (part(r, "peer_default_drain") != NULL || part(r, "peer_tuned_drain") != NULL)
        fprintf(r->md, "The orders-db CPU target against Debezium is measured as it is and expected to be missed "
                       "today: outboxd marks every event published in the orders database (an UPDATE per row, and "
                       "the vacuum that follows), where Debezium only reads the WAL.\n\n");
}

/* ---- latency.svg ----------------------------------------------------------------- */

#define SVG_W  760
#define SVG_H  500
#define SVG_L  70      /* plot area margins; the legend sits under the x axis */
#define SVG_R  20
#define SVG_T  40
#define SVG_B  120
#define SVG_XMAX 4.5   /* "nines" axis: 0 = p0 .. 4 = p99.99, max drawn at 4.5 */

/* Position of a percentile on the nines axis: log10(1 / (1 - p)), max at the end. */
static double
svg_nines(double p)
{
    return p >= 100 ? SVG_XMAX : fmin(4.0, log10(1.0 / (1.0 - p / 100.0)));
}

static double
svg_x(double nines)
{
    return SVG_L + nines / SVG_XMAX * (SVG_W - SVG_L - SVG_R);
}

static double
svg_y(double ms, double lo, double hi)
{
    double v = log10(fmax(ms, pow(10, lo)));

    return SVG_T + (hi - v) / (hi - lo) * (SVG_H - SVG_T - SVG_B);
}

static const struct {
    const char *part, *key, *label, *color;
} svg_series[] = {
    { "latency_pace", "latency_ms", "HTTP POST /orders", "#7f7f7f" },
    { "latency_db", "kafka_ms", "commit → Kafka (outboxd)", "#1f77b4" },
    { "latency_db", "ledger_ms", "commit → ledger (outboxd)", "#2ca02c" },
    { "latency_naive_db", "kafka_ms", "commit → Kafka (naive poller, lower bound)", "#d62728" },
};

static json_t *
svg_curve(report_t *r, int i)
{
    json_t *p = part(r, svg_series[i].part);

    return json_object_get(json_object_get(p, svg_series[i].key), "curve");
}

static void
svg_range(report_t *r, double *lo, double *hi)
{
    double mn = INFINITY, mx = -INFINITY;

    for (size_t i = 0; i < sizeof(svg_series) / sizeof(svg_series[0]); i++) {
        size_t  k;
        json_t *pt;
        json_array_foreach(svg_curve(r, (int) i), k, pt) {
            double v = json_number_value(json_array_get(pt, 1));
            if (v > 0) {
                mn = fmin(mn, v);
                mx = fmax(mx, v);
            }
        }
    }
    *lo = isinf(mn) ? -1 : floor(log10(mn));
    *hi = isinf(mx) ? 3 : ceil(log10(mx));
    if (*hi <= *lo)
        *hi = *lo + 1;
}

static void
svg_axes(FILE *f, double lo, double hi)
{
    static const struct {
        double      p;
        const char *label;
    } xt[] = { { 0, "p0" },       { 50, "p50" },         { 90, "p90" },   { 99, "p99" },
               { 99.9, "p99.9" }, { 99.99, "p99.99" }, { 100, "max" } };

    for (size_t i = 0; i < sizeof(xt) / sizeof(xt[0]); i++) {
        double x = svg_x(svg_nines(xt[i].p));
        fprintf(f, "<line x1='%.1f' y1='%d' x2='%.1f' y2='%d' stroke='#ddd'/>\n", x, SVG_T, x, SVG_H - SVG_B);
        fprintf(f, "<text x='%.1f' y='%d' text-anchor='middle'>%s</text>\n", x, SVG_H - SVG_B + 16, xt[i].label);
    }
    for (double e = lo; e <= hi; e++) {
        double y = svg_y(pow(10, e), lo, hi);
        fprintf(f, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#ddd'/>\n", SVG_L, y, SVG_W - SVG_R, y);
        if (e < 3)
            fprintf(f, "<text x='%d' y='%.1f' text-anchor='end'>%g ms</text>\n", SVG_L - 6, y + 4, pow(10, e));
        else
            fprintf(f, "<text x='%d' y='%.1f' text-anchor='end'>%g s</text>\n", SVG_L - 6, y + 4, pow(10, e - 3));
    }
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#444'/>\n", SVG_L, SVG_T,
            SVG_W - SVG_L - SVG_R, SVG_H - SVG_T - SVG_B);
    fprintf(f, "<text x='%d' y='%d' text-anchor='middle'>percentile (log scale of 1/(1-p))</text>\n",
            (SVG_L + SVG_W - SVG_R) / 2, SVG_H - SVG_B + 36);
}

static void
write_svg(report_t *r)
{
    char   path[1024];
    double lo, hi;
    FILE  *f;

    snprintf(path, sizeof(path), "%s/latency.svg", r->dir);
    if ((f = fopen(path, "w")) == NULL)
        bench_die("cannot write %s", path);
    svg_range(r, &lo, &hi);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' font-family='sans-serif' "
               "font-size='12'>\n<rect width='100%%' height='100%%' fill='white'/>\n", SVG_W, SVG_H);
    fprintf(f, "<text x='%d' y='22' font-size='14'>Latency percentiles at %s req/s (log scales)</text>\n", SVG_L,
            fnum(num(r, "latency_pace", "rate"), 0));
    svg_axes(f, lo, hi);
    for (size_t i = 0; i < sizeof(svg_series) / sizeof(svg_series[0]); i++) {
        json_t *curve = svg_curve(r, (int) i), *pt;
        size_t  k;
        if (json_array_size(curve) == 0)
            continue;
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' points='", svg_series[i].color);
        json_array_foreach(curve, k, pt) {
            fprintf(f, "%.1f,%.1f ", svg_x(svg_nines(json_number_value(json_array_get(pt, 0)))),
                    svg_y(json_number_value(json_array_get(pt, 1)), lo, hi));
        }
        fprintf(f, "'/>\n");
        /* legend: two columns under the axis title */
        int lx = SVG_L + (int) (i % 2) * 330, ly = SVG_H - 50 + (int) (i / 2) * 20;
        fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='%s' stroke-width='2'/>", lx, ly, lx + 20, ly,
                svg_series[i].color);
        fprintf(f, "<text x='%d' y='%d'>%s</text>\n", lx + 26, ly + 4, svg_series[i].label);
    }
    fprintf(f, "</svg>\n");
    fclose(f);
}

/* ---- report.json ----------------------------------------------------------------- */

static void
write_json(report_t *r)
{
    char    path[1024];
    json_t *j = json_pack("{s:I, s:O*, s:O*, s:O, s:O, s:O}", "generated_wall_ms", (json_int_t) ob_wall_ms(),
                          "machine", part(r, "machine"), "settings", part(r, "settings"), "summary", r->summary,
                          "targets", r->targets, "results", r->parts);

    snprintf(path, sizeof(path), "%s/report.json", r->dir);
    if (json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) != 0)
        bench_die("cannot write %s", path);
    json_decref(j);
}

/* report --dir DIR */
int
cmd_report(int argc, char **argv)
{
    report_t r = { .dir = bench_opt(argc, argv, "--dir", "var/bench") };
    char     path[1024];

    r.parts = json_object();
    r.summary = json_object();
    r.targets = json_array();
    snprintf(path, sizeof(path), "%s/report.md", r.dir);
    if ((r.md = fopen(path, "w")) == NULL)
        bench_die("cannot write %s", path);
    md_header(&r);
    md_intake(&r);
    md_drain(&r);
    md_apply(&r);
    md_latency(&r);
    md_stages(&r);
    md_memory(&r);
    md_cpu(&r);
    md_wal(&r);
    md_emit(&r);
    md_peers(&r);
    md_hosts(&r);
    md_targets(&r);
    md_settings(&r);
    fclose(r.md);
    write_svg(&r);
    write_json(&r);
    bench_note("report: %s/report.md, report.json, latency.svg", r.dir);
    json_decref(r.parts);
    json_decref(r.summary);
    json_decref(r.targets);
    return 0;
}
