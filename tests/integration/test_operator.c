/*
 * tests/integration/test_operator.c: what the operator on call sees and runs:
 * the status page in a real headless browser, /metrics, the admin token,
 * reconcile, replay.
 */
#include "tests/integration/fixture.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


static const char *pipeline = "[workers]\nhttp = 2\nrelays = 2\nconsumers = 1\n";

static void
post_orders(int n, char (*ids)[37])
{
    char resp[1024];

    for (int i = 0; i < n; i++) {
        cr_assert_eq(obh_http(h.orders_port, "POST", "/orders", NULL,
                              "{\"customerId\":\"op\",\"amount\":\"2.50\",\"currency\":\"USD\"}", resp, sizeof(resp),
                              NULL, 0),
                     201, "%s", resp);
        if (ids) {
            json_t *j = json_loads(resp, 0, NULL);
            ob_strlcpy(ids[i], json_string_value(json_object_get(j, "id")), 37);
            json_decref(j);
        }
    }
}

static int
ledger_count_is(obh_t *hh, void *arg)
{
    return obh_scalar(hh->ledger_dsn, "SELECT count(*) FROM ledger_entries") == *(long long *) arg;
}

/* Runs headless Chromium on url; returns its stdout (malloc'd). */
static char *
chromium(const char *args, const char *url)
{
    char  cmd[1024], *out = malloc(1 << 20);
    FILE *p;
    size_t n;

    snprintf(cmd, sizeof(cmd),
             "chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
             "--disable-background-networking --disable-component-update --disable-sync "
             "--user-data-dir=%s/chromium %s '%s' 2>/dev/null",
             h.dir, args, url);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    n = fread(out, 1, (1 << 20) - 1, p);
    out[n] = '\0';
    pclose(p);
    return out;
}


Test(operator, status_page_renders_every_worker_and_partition_even_with_databases_down, .init = setup,
     .fini = teardown)
{
    char url[128], want[128], png[256];

    start_http(pipeline);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_CONSUMER, 0, 0, obh_ms(20000)), 0);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_RELAY, 1, 0, obh_ms(20000)), 0);
    post_orders(5, NULL);
    obh_db_allow(&h, 0, 0);
    obh_db_allow(&h, 1, 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/status", h.admin_port);
    char *dom = chromium("--dump-dom", url);
    obh_db_allow(&h, 0, 1);
    obh_db_allow(&h, 1, 1);
    cr_assert(strstr(dom, "<table id=\"workers\">") != NULL, "no workers table in the DOM:\n%.2000s", dom);
    static const struct {
        const char *kind;
        int         n;
    } kinds[] = { { "http", 2 }, { "relay", 2 }, { "consumer", 1 } };
    for (size_t k = 0; k < 3; k++)
        for (int i = 0; i < kinds[k].n; i++) {
            snprintf(want, sizeof(want), "data-kind=\"%s\" data-index=\"%d\"", kinds[k].kind, i);
            cr_assert(strstr(dom, want) != NULL, "no row for %s %d", kinds[k].kind, i);
        }
    for (int p = 0; p < h.partitions; p++) {
        snprintf(want, sizeof(want), "data-partition=\"%d\"", p);
        cr_assert(strstr(dom, want) != NULL, "no row for partition %d", p);
    }
    cr_assert(strstr(dom, "data-series=\"committed\"") != NULL);
    free(dom);
    /* a picture for the README and for a human: written under var/ */
    mkdir("var", 0755);
    snprintf(png, sizeof(png), "%s/var/status.png", getenv("PWD") ? getenv("PWD") : ".");
    char shot[300];
    snprintf(shot, sizeof(shot), "--screenshot=%s --window-size=1280,1100 --hide-scrollbars", png);
    free(chromium(shot, url));
    struct stat st;
    cr_assert_eq(stat(png, &st), 0, "no screenshot at %s", png);
    cr_assert_gt(st.st_size, 10000, "screenshot too small (%lld bytes)", (long long) st.st_size);
}

/* A strict reading of the Prometheus text format, as promtool would apply it. */
static int
metric_name_ok(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char) s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char) s[i]) || s[i] == '_' || s[i] == ':'))
            return 0;
    return 1;
}

static double
metrics_check(const char *text, const char *want_series)
{
    char   types[512][96];
    int    ntypes = 0;
    double found = -1;
    char  *copy = strdup(text), *save, *line;

    for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[96], type[32];
            cr_assert_eq(sscanf(line + 7, "%95s %31s", name, type), 2, "bad TYPE line: %s", line);
            cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 || strcmp(type, "histogram") == 0,
                      "type %s", type);
            cr_assert(strncmp(name, "outboxd_", 8) == 0, "name without outboxd_: %s", name);
            cr_assert(strcmp(type, "counter") != 0 || strstr(name, "_total") == name + strlen(name) - 6,
                      "counter %s does not end in _total", name);
            for (int i = 0; i < ntypes; i++)
                cr_assert_str_neq(types[i], name, "TYPE for %s twice", name);
            ob_strlcpy(types[ntypes++], name, sizeof(types[0]));
            continue;
        }
        cr_assert_neq(line[0], '#', "unknown comment: %s", line);
        size_t n = strcspn(line, "{ ");
        cr_assert(metric_name_ok(line, n), "bad metric name in: %s", line);
        int declared = 0;
        for (int i = 0; i < ntypes && !declared; i++) {
            size_t tl = strlen(types[i]);
            declared = strncmp(line, types[i], tl) == 0 &&
                       (n == tl || (n > tl && (strcmp(line + tl, "_bucket") == 0 || strncmp(line + tl, "_bucket", 7) == 0 ||
                                               strncmp(line + tl, "_sum", 4) == 0 || strncmp(line + tl, "_count", 6) == 0)));
        }
        cr_assert(declared, "sample before its TYPE: %s", line);
        const char *rest = line + n;
        if (*rest == '{') {
            const char *end = strchr(rest, '}');
            cr_assert_not_null(end, "unterminated labels: %s", line);
            /* label pairs: name="value" separated by commas */
            for (const char *q = rest + 1; q < end;) {
                size_t ln = strcspn(q, "=");
                cr_assert(metric_name_ok(q, ln) && q[ln + 1] == '"', "bad label in: %s", line);
                q = strchr(q + ln + 2, '"');
                cr_assert_not_null(q, "unterminated label value: %s", line);
                q++;
                if (*q == ',')
                    q++;
            }
            rest = end + 1;
        }
        cr_assert_eq(*rest, ' ', "no space before the value: %s", line);
        char  *endp;
        double v = strtod(rest + 1, &endp);
        cr_assert(endp != rest + 1 && *endp == '\0', "bad value in: %s", line);
        if (want_series && strncmp(line, want_series, strlen(want_series)) == 0 && line[strlen(want_series)] == ' ')
            found = v;
    }
    free(copy);
    return found;
}

static double
sum_series(const char *text, const char *prefix)
{
    double      sum = 0;
    const char *p = text;

    while ((p = strstr(p, prefix)) != NULL) {
        const char *sp = strchr(p, ' ');
        sum += strtod(sp + 1, NULL);
        p = sp;
    }
    return sum;
}

Test(operator, metrics_pass_a_strict_format_check_and_move_with_orders, .init = setup, .fini = teardown)
{
    static char body[1 << 18];
    char        hdrs[1024];
    long long   two = 20;

    start_http(pipeline);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_CONSUMER, 0, 0, obh_ms(20000)), 0);
    cr_assert_eq(obh_http(h.admin_port, "GET", "/metrics", NULL, NULL, body, sizeof(body), hdrs, sizeof(hdrs)), 200);
    cr_assert(strstr(hdrs, "text/plain; version=0.0.4") != NULL, "%s", hdrs);
    cr_assert_eq(metrics_check(body, "outboxd_up"), 1);
    double before = sum_series(body, "outboxd_orders_created_total{");
    post_orders(10, NULL);
    /* ten orders, two ledger entries each would be 20: wait for 10 charges */
    two = 10;
    cr_assert(obh_poll(ledger_count_is, &h, &two, obh_ms(20000)), "orders never reached the ledger");
    cr_assert_eq(obh_http(h.admin_port, "GET", "/metrics", NULL, NULL, body, sizeof(body), NULL, 0), 200);
    metrics_check(body, NULL);
    cr_assert_eq(sum_series(body, "outboxd_orders_created_total{") - before, 10);
    cr_assert_geq(sum_series(body, "outboxd_partition_produced_total{"), 10);
    cr_assert_geq(sum_series(body, "outboxd_consumer_applied_total{"), 10);
    cr_assert(strstr(body, "outboxd_http_request_duration_seconds_bucket{worker=\"0\",le=\"+Inf\"}") != NULL);
    /* the series packaging/prometheus/outboxd-rules.yml alerts on: a rename here would silence an alert */
    static const struct {
        const char *series;
        int         healthy_zero;   /* 1: must be 0 while all is well; 0: must only exist */
    } alerted[] = {
        { "outboxd_worker_fatal{kind=\"relay\",worker=\"0\"}", 1 },
        { "outboxd_worker_crashloop{kind=\"consumer\",worker=\"0\"}", 1 },
        { "outboxd_worker_restarts_total{kind=\"http\",worker=\"1\"}", 0 },
        { "outboxd_partition_breaker_open{partition=\"0\"}", 1 },
        { "outboxd_partition_committed_total{partition=\"0\"}", 0 },
        { "outboxd_partition_pending{partition=\"0\"}", 0 },
        { "outboxd_partition_oldest_pending_age_seconds{partition=\"0\"}", 0 },
        { "outboxd_relay_slot_lag_bytes{worker=\"1\"}", 1 },
        { "outboxd_relay_slot_invalidations_total{worker=\"1\"}", 1 },
        { "outboxd_consumer_dead_letters_total{worker=\"0\"}", 1 },
        { "outboxd_consumer_lag_messages{worker=\"0\"}", 0 },
    };
    for (size_t k = 0; k < sizeof(alerted) / sizeof(alerted[0]); k++) {
        double val = metrics_check(body, alerted[k].series);
        cr_assert(val >= 0, "%s missing from /metrics", alerted[k].series);
        cr_assert(!alerted[k].healthy_zero || val == 0, "%s = %g while healthy", alerted[k].series, val);
    }
    /* every published event passed each stage once; each stage took a plausible time */
    static const char *stages[] = { "kind=\"relay\",worker=\"%d\",stage=\"commit_to_claim\"",
                                    "kind=\"relay\",worker=\"%d\",stage=\"claim_to_ack\"",
                                    "kind=\"consumer\",worker=\"%d\",stage=\"produce_to_fetch\"",
                                    "kind=\"consumer\",worker=\"%d\",stage=\"fetch_to_ledger_commit\"",
                                    "kind=\"consumer\",worker=\"%d\",stage=\"occurred_to_ledger_commit\"" };
    for (size_t k = 0; k < sizeof(stages) / sizeof(stages[0]); k++) {
        double count = 0, sum = 0;
        char   labels[160], series[200];
        for (int w = 0; w < 2; w++) {
            snprintf(labels, sizeof(labels), stages[k], w);
            snprintf(series, sizeof(series), "outboxd_stage_duration_seconds_count{%s}", labels);
            count += sum_series(body, series);
            snprintf(series, sizeof(series), "outboxd_stage_duration_seconds_sum{%s}", labels);
            sum += sum_series(body, series);
        }
        cr_assert_geq(count, 10, "%s: %.0f events", stages[k], count);
        cr_assert(sum >= 0 && sum / count < 20, "%s: %.6f s in all", stages[k], sum);
    }
    /* status.json carries the same story */
    cr_assert_eq(obh_http(h.admin_port, "GET", "/status.json", NULL, NULL, body, sizeof(body), NULL, 0), 200);
    json_t *j = json_loads(body, 0, NULL);
    cr_assert_not_null(j);
    cr_assert_eq(json_array_size(json_object_get(j, "workers")), 5);
    cr_assert_eq(json_array_size(json_object_get(j, "partitions")), (size_t) h.partitions);
    json_decref(j);
}

Test(operator, admin_token_is_required_when_configured, .init = setup, .fini = teardown)
{
    char body[4096];

    start_http("[admin]\ntoken = s3cret-token\n[workers]\nhttp = 1\nrelays = 0\nconsumers = 0\n");
    cr_assert_eq(obh_http(h.admin_port, "GET", "/metrics", NULL, NULL, body, sizeof(body), NULL, 0), 401);
    cr_assert_eq(obh_http(h.admin_port, "GET", "/metrics", "Authorization: Bearer wrong-token!\r\n", NULL, body,
                          sizeof(body), NULL, 0),
                 401);
    cr_assert_eq(obh_http(h.admin_port, "GET", "/metrics", "Authorization: Bearer s3cret-token\r\n", NULL, body,
                          sizeof(body), NULL, 0),
                 200);
    cr_assert_eq(obh_http(h.admin_port, "GET", "/healthcheck", NULL, NULL, body, sizeof(body), NULL, 0), 200);
}

static int
reconcile(char *out, size_t len)
{
    const char *args[] = { "reconcile", "-c", h.conf, "--grace", "0", NULL };

    return obh_run(args, out, len);
}

Test(operator, reconcile_reports_exactly_the_injected_faults, .init = setup, .fini = teardown)
{
    static char ids[6][37];
    char        out[16384], sql[512];
    long long   charges = 6;

    start_http(pipeline);
    post_orders(6, ids);
    cr_assert(obh_poll(ledger_count_is, &h, &charges, obh_ms(30000)), "orders never reached the ledger");
    /* the relay marks after Kafka's ack, which can be after the consumer booked it */
    for (int64_t t0 = ob_now_ms();
         obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") > 0; ob_sleep_ms(20))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(20000), "events never marked published");
    cr_assert_eq(reconcile(out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "CONSISTENT: 6 orders checked") != NULL, "%s", out);

    /* an event replayed twice must still be consistent */
    const char *replay[] = { "replay", "-c", h.conf, "--order", ids[1], NULL };
    for (int round = 0; round < 2; round++) {
        cr_assert_eq(obh_run(replay, out, sizeof(out)), 0, "%s", out);
        cr_assert(strstr(out, "1 published event(s) marked pending again") != NULL, "%s", out);
        for (int64_t t0 = ob_now_ms();
             obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") > 0; ob_sleep_ms(20))
            cr_assert_lt(ob_now_ms() - t0, obh_ms(20000), "replayed event not republished");
    }
    /* the phantom: a ledger entry for an order that never existed */
    obh_sql(h.ledger_dsn, "INSERT INTO ledger_entries (event_id, order_id, seq, kind, amount, currency) VALUES "
                          "('0190a0a0-0000-7000-8000-00000000beef', '0190a0a0-0000-7000-8000-00000000dead', 1, "
                          "'charge', 99.00, 'USD')");
    /* the loss: an order whose event was deleted before it was published */
    obh_stop(&h, obh_ms(10000));
    start_http("[workers]\nhttp = 1\nrelays = 0\nconsumers = 1\n");
    char lost[1][37];
    post_orders(1, lost);
    snprintf(sql, sizeof(sql), "DELETE FROM outboxd.outbox WHERE aggregate_id = '%s'", lost[0]);
    obh_sql(h.orders_dsn, sql);
    obh_stop(&h, obh_ms(10000));
    start_http(pipeline);
    /* let the replayed event flow through (a duplicate the ledger must skip) */
    cr_assert(obh_poll(ledger_count_is, &h, &(long long) { 7 }, obh_ms(20000)));
    for (int64_t t0 = ob_now_ms();
         obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") > 0; ob_sleep_ms(20))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(20000), "replayed event not republished");
    int rc = reconcile(out, sizeof(out));
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "INCONSISTENT: 7 orders checked") != NULL, "%s", out);
    cr_assert(strstr(out, "missing: 1\n") != NULL, "%s", out);
    cr_assert(strstr(out, "phantom: 1\n") != NULL, "%s", out);
    cr_assert(strstr(out, "duplicate: 0\n") != NULL, "%s", out);
    cr_assert(strstr(out, "mismatch: 0\n") != NULL, "%s", out);
    snprintf(sql, sizeof(sql), "missing   %s  order has no ledger charge", lost[0]);
    cr_assert(strstr(out, sql) != NULL, "%s", out);
    cr_assert(strstr(out, "phantom   0190a0a0-0000-7000-8000-00000000dead") != NULL, "%s", out);
    const char *json[] = { "reconcile", "-c", h.conf, "--grace", "0", "--json", NULL };
    cr_assert_eq(obh_run(json, out, sizeof(out)), 1);
    json_t *j = json_loads(strchr(out, '{'), 0, NULL);
    cr_assert_not_null(j, "%s", out);
    cr_assert(json_is_false(json_object_get(j, "consistent")));
    cr_assert_eq(json_array_size(json_object_get(j, "findings")), 2);
    json_decref(j);
}

Test(operator, replay_of_quarantined_events_turns_reconcile_green, .init = setup, .fini = teardown)
{
    char      out[16384];
    long long three = 3;

    obh_kafka_create_topic(&h, 100);    /* every event is larger than this */
    start_http(pipeline);
    post_orders(3, NULL);
    for (int64_t t0 = ob_now_ms(); obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine") < 1;
         ob_sleep_ms(20))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(20000), "nothing quarantined");
    cr_assert_eq(reconcile(out, sizeof(out)), 1, "%s", out);
    obh_kafka_set_max_message_bytes(&h, 1000000);
    for (int64_t t0 = ob_now_ms(); obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine") < 3;
         ob_sleep_ms(20)) {
        /* rows one at a time while the culprit is isolated; some may pass once the limit is raised */
        if (obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0)
            break;
        cr_assert_lt(ob_now_ms() - t0, obh_ms(30000), "quarantine never settled");
    }
    const char *args[] = { "replay", "-c", h.conf, "--quarantined", NULL };
    cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "%s", out);
    cr_assert(obh_poll(ledger_count_is, &h, &three, obh_ms(30000)), "replayed events never booked");
    cr_assert_eq(reconcile(out, sizeof(out)), 0, "%s", out);
}
