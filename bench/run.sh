#!/usr/bin/env bash
# bench/run.sh: `make bench`. Runs the sections of bench/README.md on
# the local stack and writes var/bench/report.md, report.json, latency.svg.
#
# Everything it touches is its own: databases orderdb_bench_<pid> and
# ledgerdb_bench_<pid>, topics outbox-events-bench-<pid>-*, the shm name
# bench-<pid>, free ports; for the peers, a Kafka Connect worker on a
# loopback port and a slot and publication bench_<pid>_dbz_*. All of it is
# removed at exit, whatever happens; only processes this script started are
# ever signalled, by pid.
#
# Sizes (environment):
#   BENCH_ROWS=1000000        backlog events for the drain (section 2)
#   BENCH_APPLY_ROWS=ROWS     events the consumers must book (section 3)
#   BENCH_INTAKE_S=10         each wrk / pgbench run (section 1)
#   BENCH_NAIVE_S=20          the naive poller's fixed run (section 2)
#   BENCH_LATENCY_S=20        the paced load (sections 4 and 8)
#   BENCH_LATENCY_RATE=       req/s for section 4; default half the full intake
#   BENCH_EMIT_RATE=500       transactions/s of section 8, through outboxd.emit and through POST /orders
#   BENCH_SECTIONS="intake drain hosts apply latency emit peers"   a subset, while developing.
#                             hosts = relays on 1, 2, 3 network-namespace hosts (section 10):
#                             about 3 min at 1M rows; needs root (skipped otherwise)
#                             peers = Debezium beside outboxd (section 9): about 3 min at
#                             1M rows (165 s measured), always run last so its ratios use
#                             this run's drain and emit; its jars are fetched once by
#                             bench/peers/deps.sh (make bench-peers-deps)
#   BENCH_PACE_CONNS=16       connections of the paced load (section 4)
#   BENCH_DRAIN_TIMEOUT_S=200, BENCH_APPLY_TIMEOUT_S=150   per run, so the whole stays bounded (about 20 min)
#   BENCH_OUT=var/bench       where the report, parts and work files go
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OB_BIN="${OB_BIN:-$ROOT/build/outboxd}"
OBBENCH="${OBBENCH:-$ROOT/build/bench/obbench}"

BENCH_ROWS="${BENCH_ROWS:-1000000}"
BENCH_APPLY_ROWS="${BENCH_APPLY_ROWS:-$BENCH_ROWS}"
BENCH_INTAKE_S="${BENCH_INTAKE_S:-10}"
BENCH_NAIVE_S="${BENCH_NAIVE_S:-20}"
BENCH_LATENCY_S="${BENCH_LATENCY_S:-20}"
BENCH_LATENCY_RATE="${BENCH_LATENCY_RATE:-}"
BENCH_EMIT_RATE="${BENCH_EMIT_RATE:-500}"
BENCH_SECTIONS="${BENCH_SECTIONS:-intake drain hosts apply latency emit peers}"
BENCH_DRAIN_TIMEOUT_S="${BENCH_DRAIN_TIMEOUT_S:-200}"
BENCH_APPLY_TIMEOUT_S="${BENCH_APPLY_TIMEOUT_S:-150}"

# The same concurrency for wrk and pgbench, or the intake ratio compares different loads.
INTAKE_THREADS=2
INTAKE_CONNS=32
# 16 = the civetweb threads of ONE http worker: with more keep-alive
# connections than that, an uneven accept split parks some of them until a
# thread frees (keep_alive_timeout, 5 s); see bench/README.md.
PACE_CONNS="${BENCH_PACE_CONNS:-16}"
EMIT_CONNS=8             # a service's connection pool, not one per request
PARTITIONS=12
NAIVE_INTERVAL_MS=1000
NAIVE_LIMIT=10

OUT="${BENCH_OUT:-$ROOT/var/bench}"   # BENCH_OUT: another directory, so a second bench run cannot overwrite this one
PARTS="$OUT/parts"
WORK="$OUT/work"         # configs, outboxd logs, raw wrk/pgbench output: kept for a post-mortem
BACKLOG_FILE="$WORK/backlog.copy"    # the drain's backlog, kept for the peers (~350 MB at 1M rows; removed at exit)

eval "$(bash scripts/stack.sh env)"
ORDERS_SERVER="postgresql://outboxd@127.0.0.1:$OB_PG_ORDERS_PORT/postgres"
LEDGER_SERVER="postgresql://outboxd@127.0.0.1:$OB_PG_LEDGER_PORT/postgres"
BROKERS="$OB_KAFKA_BROKERS"
TAG="bench_$$"
ORDERS_DB="orderdb_$TAG"
LEDGER_DB="ledgerdb_$TAG"
ORDERS_DSN="postgresql://outboxd@127.0.0.1:$OB_PG_ORDERS_PORT/$ORDERS_DB"
LEDGER_DSN="postgresql://outboxd@127.0.0.1:$OB_PG_LEDGER_PORT/$LEDGER_DB"
TOPIC_PREFIX="outbox-events-bench-$$"
NAME="bench-$$"
read -r ORDERS_PORT LEDGER_PORT ADMIN_PORT <<<"$("$OBBENCH" free-ports 3)"
KAFKA_PID="$(cat "$ROOT/var/run/kafka.pid" 2>/dev/null || echo 0)"   # for its CPU share only

OB_PID=""          # the outboxd under test, when one runs
HOST_PIDS=()       # the outboxd of each network-namespace host (section 10), while they run
HOSTS_MADE=0       # section 10 brought the hosts up, so the clean-up takes them down
CONNECT_PID=""     # the Kafka Connect worker of section 9, when one runs
PEER_SLOT=""       # its replication slot, while it exists
WATCH_PID=""       # the RSS/CPU watcher, when one runs
NAIVE_PID=""       # the naive poller of section 4, when it runs
FG_PID=""          # the step `run` waits for
TOPICS=()          # topics to delete at exit
T0=$SECONDS

say() { printf '[bench %4ds] %s\n' $((SECONDS - T0)) "$*" >&2; }

# ---------------------------------------------------------------------------
# Clean-up: always, and only what this run made
# ---------------------------------------------------------------------------
cleanup() {
    local rc=$? pid t
    trap - EXIT INT TERM
    stop_outboxd || true
    stop_hosts || true
    stop_connect || true
    [[ -z "$PEER_SLOT" ]] || peer_slot_drop "$PEER_SLOT" 2>/dev/null || true
    drop_slots 2>/dev/null || true
    for pid in "$FG_PID" "$WATCH_PID" "$NAIVE_PID"; do     # cleared once reaped, so never a recycled pid
        [[ -z "$pid" ]] || kill -TERM "$pid" 2>/dev/null || true
    done
    rm -f "$BACKLOG_FILE"
    ((HOSTS_MADE == 0)) || bash scripts/netns.sh down >/dev/null 2>&1 || true
    for t in "${TOPICS[@]}"; do
        "$OBBENCH" topic delete "$BROKERS" "$t" 2>/dev/null || true
    done
    "$OBBENCH" db drop "$ORDERS_SERVER" "$ORDERS_DB" 2>/dev/null || true
    "$OBBENCH" db drop "$LEDGER_SERVER" "$LEDGER_DB" 2>/dev/null || true
    ((rc == 0)) || say "failed (exit $rc); outboxd logs and raw outputs are in $WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run CMD...: CMD in the background, waited for. Bash runs a trap only once
# the foreground command is done, so a TERM would otherwise wait for a
# minutes-long step; `wait` returns at once and the clean-up stops CMD by pid.
run() {
    local rc=0
    "$@" &
    FG_PID=$!
    wait "$FG_PID" || rc=$?
    FG_PID=""
    return "$rc"
}

# ---------------------------------------------------------------------------
# outboxd under test
# ---------------------------------------------------------------------------

# write_conf RUN HTTP RELAYS CONSUMERS MODE TOPIC GROUP [NAME]: a config of
# our own; NAME (the shm segment) is another instance's, for section 10.
write_conf() {
    local run="$1" http="$2" relays="$3" consumers="$4" mode="$5" topic="$6" group="$7" name="${8:-$NAME}"
    cat >"$WORK/$run.conf" <<EOF
; written by bench/run.sh for run "$run"; defaults everywhere else
[supervisor]
name = $name
pidfile = $WORK/$name.pid
[orders]
listen = 127.0.0.1:$ORDERS_PORT
dsn = $ORDERS_DSN
[ledger]
listen = 127.0.0.1:$LEDGER_PORT
dsn = $LEDGER_DSN
group = $group
[kafka]
brokers = $BROKERS
topic = $topic
partitions = $PARTITIONS
[workers]
http = $http
relays = $relays
consumers = $consumers
[relay]
mode = $mode
slot_prefix = $TAG
[admin]
listen = 127.0.0.1:$ADMIN_PORT
[log]
file = $WORK/$run.log
EOF
    # BENCH_CONF_EXTRA: INI text (\n for newlines) appended to every run's
    # config, to measure one setting against the defaults.
    if [[ -n "${BENCH_CONF_EXTRA:-}" ]]; then printf '%b\n' "$BENCH_CONF_EXTRA" >>"$WORK/$run.conf"; fi
    echo "$WORK/$run.conf"
}

# start_outboxd CONF [FLAGS...]
start_outboxd() {
    local conf="$1"; shift
    "$OB_BIN" -f -c "$conf" "$@" </dev/null >>"$WORK/outboxd.stderr" 2>&1 &
    OB_PID=$!
}

# ready ARGS...: wait until the workers asked for run and hold their partitions.
ready() {
    "$OBBENCH" ready --name "$NAME" --pid "$OB_PID" --partitions "$PARTITIONS" --timeout 60 "$@"
}

# stages RUN: the workers' stage histograms, part RUN_stages. Only while
# outboxd still runs (its segment goes with it), and once settled, so every
# event of the run has been counted.
stages() {
    "$OBBENCH" stages --name "$NAME" --pid "$OB_PID" >"$PARTS/${1}_stages.json"
}

# stop_pid PID: graceful stop (TERM), SIGKILL after 30 s; our pid only.
stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "outboxd $pid did not stop within 30 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stop_outboxd() {
    [[ -z "$OB_PID" ]] || stop_pid "$OB_PID"
    OB_PID=""
}

# ---------------------------------------------------------------------------
# Databases and topics
# ---------------------------------------------------------------------------
sql() { "$OBBENCH" sql "$@"; }

# An empty orderdb: no rows, and a checkpoint so no run pays for another's dirty pages.
reset_orders() { sql "$ORDERS_DSN" "TRUNCATE orders, outboxd.outbox" "CHECKPOINT"; }

# `outboxd migrate` brings both databases up to date (a no-op for one already there).
# It applies orderdb's and ledgerdb's streams only for a config whose orders
# API and consumers run, so this one has them, though it never starts.
migrate() { "$OB_BIN" migrate -c "$(write_conf migrate 2 0 2 partitioned unused unused)" >>"$WORK/migrate.log" 2>&1; }

# ledger_entries refuses TRUNCATE (immutability trigger): a new database instead.
fresh_ledger() {
    "$OBBENCH" db drop "$LEDGER_SERVER" "$LEDGER_DB"
    "$OBBENCH" db create "$LEDGER_SERVER" "$LEDGER_DB"
    migrate
}

# A new orderdb: no rows and no planner statistics left over from a backlog
# (stale "everything is pending" statistics change the relay's plans; see README).
fresh_orders() {
    "$OBBENCH" db drop "$ORDERS_SERVER" "$ORDERS_DB"
    "$OBBENCH" db create "$ORDERS_SERVER" "$ORDERS_DB"
    migrate
}

create_databases() {
    "$OBBENCH" db create "$ORDERS_SERVER" "$ORDERS_DB"
    "$OBBENCH" db create "$LEDGER_SERVER" "$LEDGER_DB"
    migrate
}

# new_topic SUFFIX [CONFIG=VALUE...]: a fresh 12-partition topic, named in
# TOPIC and remembered for the clean-up (so not called in a $(...) subshell).
TOPIC=""
new_topic() {
    TOPIC="$TOPIC_PREFIX-$1"
    "$OBBENCH" topic create "$BROKERS" "$TOPIC" "$PARTITIONS" "${@:2}"
    TOPICS+=("$TOPIC")
}

drop_topic() { "$OBBENCH" topic delete "$BROKERS" "$1"; }

# json_num FILE KEY: a top-level number of a part, without needing jq.
json_num() { grep -o "\"$2\":[-0-9.e+]*" "$1" | head -n 1 | cut -d: -f2; }

# ---------------------------------------------------------------------------
# Background helpers: RSS watcher
# ---------------------------------------------------------------------------
watch_start() {
    "$OBBENCH" watch --name "$NAME" --orders-dsn "$ORDERS_DSN" --ledger-dsn "$LEDGER_DSN" \
        --kafka-pid "$KAFKA_PID" >"$PARTS/$1.json" &
    WATCH_PID=$!
}
watch_stop() {
    kill -TERM "$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" || true
    WATCH_PID=""
}

# ---------------------------------------------------------------------------
# 1. Intake
# ---------------------------------------------------------------------------

# run_wrk PART: saturating POST /orders; the Lua done() hook prints the JSON.
run_wrk() {
    run wrk -t "$INTAKE_THREADS" -c "$INTAKE_CONNS" -d "${BENCH_INTAKE_S}s" --latency \
        -s bench/post_order.lua "http://127.0.0.1:$ORDERS_PORT/orders" >"$WORK/$1.wrk.txt"
    grep '^BENCH_JSON ' "$WORK/$1.wrk.txt" | cut -d' ' -f2- >"$PARTS/$1.json"
    say "  $1: $(json_num "$PARTS/$1.json" rps) req/s"
}

intake_full() {
    local topic conf
    say "intake: whole pipeline (http=2 relays=2 consumers=2)"
    reset_orders
    new_topic intake
    topic="$TOPIC"
    conf="$(write_conf intake_full 2 2 2 partitioned "$topic" "$NAME-intake")"
    start_outboxd "$conf"
    ready --http 2 --relays 2 --consumers 2
    sleep 1                  # let start-up allocations settle before the idle sample
    "$OBBENCH" rss --name "$NAME" >"$PARTS/idle.json"
    watch_start intake_full_watch
    run_wrk intake_full
    watch_stop
    run "$OBBENCH" settle --orders-dsn "$ORDERS_DSN" --ledger-dsn "$LEDGER_DSN" --timeout 120 \
        >"$PARTS/intake_full_settle.json"
    stop_outboxd
    drop_topic "$topic"
}

intake_alone() {
    local conf
    say "intake: alone (--relays 0 --consumers 0)"
    reset_orders
    conf="$(write_conf intake_alone 2 2 2 partitioned "$TOPIC_PREFIX-unused" "$NAME-unused")"
    start_outboxd "$conf" --relays 0 --consumers 0
    ready --http 2
    watch_start intake_alone_watch
    run_wrk intake_alone
    watch_stop
    stop_outboxd
}

intake_pgbench() {
    local out="$WORK/pgbench.txt" tps n failed
    say "intake: pgbench, same statement, -c $INTAKE_CONNS -j $INTAKE_THREADS"
    reset_orders
    rm -f "$WORK"/pgbench_log.*
    run pgbench -n -M prepared -c "$INTAKE_CONNS" -j "$INTAKE_THREADS" -T "$BENCH_INTAKE_S" \
        -f bench/pgbench_create.sql -l --log-prefix="$WORK/pgbench_log" "$ORDERS_DSN" >"$out" 2>&1
    tps="$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out" | head -n 1)"
    n="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")"
    failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")"
    printf '{"tps":%s,"transactions":%s,"failed":%s}\n' "${tps:-null}" "${n:-null}" "${failed:-0}" \
        >"$PARTS/intake_pgbench.json"
    "$OBBENCH" pgbench-log "$WORK"/pgbench_log.* >"$PARTS/intake_pgbench_lat.json"
    say "  intake_pgbench: $tps tps"
}

section_intake() {
    intake_full
    intake_alone
    intake_pgbench
}

# ---------------------------------------------------------------------------
# 2. Drain
# ---------------------------------------------------------------------------
APPLY_TOPIC=""
APPLY_AVAILABLE=0

# drain_run RUN RELAYS MODE: the backlog in place, then outboxd with relays only.
drain_run() {
    local run="$1" relays="$2" mode="$3" topic conf
    say "drain: $run ($relays relay(s), $mode)"
    new_topic "$run"
    topic="$TOPIC"
    conf="$(write_conf "drain_$run" 0 "$relays" 0 "$mode" "$topic" "$NAME-unused")"
    run "$OBBENCH" fill --dsn "$ORDERS_DSN"
    start_outboxd "$conf"
    run "$OBBENCH" drain --name "$NAME" --pid "$OB_PID" --dsn "$ORDERS_DSN" --rows "$BENCH_ROWS" \
        --timeout "$BENCH_DRAIN_TIMEOUT_S" --brokers "$BROKERS" --topic "$topic" --partitions "$PARTITIONS" \
        --kafka-pid "$KAFKA_PID" >"$PARTS/drain_$run.json"
    stop_outboxd
    say "  drain_$run: $(json_num "$PARTS/drain_$run.json" events_per_s) events/s"
    if [[ "$run" == r2 ]]; then
        APPLY_TOPIC="$topic"      # a realistic full topic for section 3
        APPLY_AVAILABLE="$(json_num "$PARTS/drain_$run.json" published)"
    else
        drop_topic "$topic"
    fi
}

# drain_wal_run RUN RELAYS: relay mode wal, streaming before the backlog
# arrives as ONE transaction of BENCH_ROWS rows (the memory-bound case); the
# clock starts at its commit.
drain_wal_run() {
    local run="$1" relays="$2" topic conf
    say "drain: $run ($relays relay(s), wal; the backlog as one transaction)"
    new_topic "$run"
    topic="$TOPIC"
    sql "$ORDERS_DSN" "TRUNCATE outboxd.outbox"
    conf="$(write_conf "drain_$run" 0 "$relays" 0 wal "$topic" "$NAME-unused")"
    start_outboxd "$conf"
    ready --relays "$relays" --mode wal
    run "$OBBENCH" fill --dsn "$ORDERS_DSN" --streaming 1
    run "$OBBENCH" drain --name "$NAME" --pid "$OB_PID" --dsn "$ORDERS_DSN" --rows "$BENCH_ROWS" \
        --timeout "$BENCH_DRAIN_TIMEOUT_S" --brokers "$BROKERS" --topic "$topic" --partitions "$PARTITIONS" \
        --kafka-pid "$KAFKA_PID" >"$PARTS/drain_$run.json"
    stop_outboxd
    drop_slots
    say "  drain_$run: $(json_num "$PARTS/drain_$run.json" events_per_s) events/s"
    drop_topic "$topic"
}

# Slots of this run's orderdb: a database with slots cannot be dropped.
drop_slots() {
    sql "$ORDERS_SERVER" "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$ORDERS_DB' AND NOT active"
}

section_drain() {
    local topic
    say "drain: generating a $BENCH_ROWS-event backlog"
    run "$OBBENCH" backlog --dsn "$ORDERS_DSN" --rows "$BENCH_ROWS" --partitions "$PARTITIONS" >"$PARTS/backlog.json"

    say "drain: librdkafka ceiling"
    new_topic ceiling
    topic="$TOPIC"
    run "$OBBENCH" ceiling --dsn "$ORDERS_DSN" --brokers "$BROKERS" --topic "$topic" >"$PARTS/drain_ceiling.json"
    drop_topic "$topic"

    drain_run r1 1 partitioned
    drain_run r2 2 partitioned
    drain_run skip 2 skip_locked
    drain_wal_run wal2 2

    say "drain: naive poller for $BENCH_NAIVE_S s"
    run "$OBBENCH" fill --dsn "$ORDERS_DSN"
    new_topic naive
    topic="$TOPIC"
    run "$OBBENCH" naive --dsn "$ORDERS_DSN" --brokers "$BROKERS" --topic "$topic" --seconds "$BENCH_NAIVE_S" \
        --interval-ms "$NAIVE_INTERVAL_MS" --limit "$NAIVE_LIMIT" >"$PARTS/drain_naive.json"
    drop_topic "$topic"
    # the peers drain these very rows, after sections that drop this database
    if peers_wanted; then run "$OBBENCH" backlog-save --dsn "$ORDERS_DSN" --file "$BACKLOG_FILE"; fi
    # the hosts drain them too; otherwise the side table (1/3 of orderdb's size) is dropped
    if hosts_wanted; then
        sql "$ORDERS_DSN" "TRUNCATE outboxd.outbox"
        BACKLOG_KEPT=1
    else
        backlog_drop
    fi
}

BACKLOG_KEPT=0     # the drain left its side table for the hosts

backlog_drop() {
    sql "$ORDERS_DSN" "DROP TABLE IF EXISTS outbox_backlog" "TRUNCATE outboxd.outbox"
    BACKLOG_KEPT=0
}

# ---------------------------------------------------------------------------
# 10. Hosts: one backlog drained by relays on 1, 2 and 3 hosts
# ---------------------------------------------------------------------------
# Each host is a network namespace of scripts/netns.sh with its own address,
# reaching this machine's PostgreSQL and Kafka through the bridge, and runs
# its own outboxd (its own supervisor, shm segment and relays) on the same
# orderdb and topic, as a second machine would. Runs right after the drain,
# on its backlog (or one of its own when the drain section is left out).
HOSTS_RELAYS=2     # per host: one instance, as in the drain's r2 run
HOSTS_MAX=3

hosts_wanted() { [[ " $BENCH_SECTIONS " == *" hosts "* ]]; }

# hosts_up: the namespaces ob-h1..3, made here unless they exist uncut (a
# chaos run's hosts are reused, never rebuilt under it). 1 when impossible.
hosts_up() {
    local st
    if [[ "$(id -u)" != 0 ]] || ! command -v iptables >/dev/null; then
        say "hosts: skipped (network namespaces need root and iptables)"
        return 1
    fi
    st="$(bash scripts/netns.sh status)"
    if [[ "$(grep -c '^ob-h[1-3] .* cuts: 0$' <<<"$st")" == "$HOSTS_MAX" ]]; then return 0; fi
    bash scripts/netns.sh up "$HOSTS_MAX" >>"$WORK/netns.log" 2>&1
    HOSTS_MADE=1
}

stop_hosts() {
    local pid
    for pid in "${HOST_PIDS[@]}"; do stop_pid "$pid"; done
    HOST_PIDS=()
}

# hosts_run RUN HOSTS RELAYS: the backlog in place, then one outboxd per host
# (relays only), started together; drained and counted together.
hosts_run() {
    local run="$1" hosts="$2" relays="$3" topic conf k names="" pids=""
    say "hosts: $run ($hosts host(s) of $relays relay(s) each)"
    new_topic "$run"
    topic="$TOPIC"
    run "$OBBENCH" fill --dsn "$ORDERS_DSN"
    for ((k = 1; k <= hosts; k++)); do
        conf="$(write_conf "${run}_h$k" 0 "$relays" 0 partitioned "$topic" "$NAME-unused" "$NAME-h$k")"
        ip netns exec "ob-h$k" "$OB_BIN" -f -c "$conf" </dev/null >>"$WORK/outboxd.stderr" 2>&1 &
        HOST_PIDS+=($!)
        names+="${names:+,}$NAME-h$k"
        pids+="${pids:+,}$!"
    done
    run "$OBBENCH" drain --name "$names" --pid "$pids" --dsn "$ORDERS_DSN" --rows "$BENCH_ROWS"         --timeout "$BENCH_DRAIN_TIMEOUT_S" --brokers "$BROKERS" --topic "$topic" --partitions "$PARTITIONS"         --kafka-pid "$KAFKA_PID" >"$PARTS/hosts_$run.json"
    stop_hosts
    say "  hosts_$run: $(json_num "$PARTS/hosts_$run.json" events_per_s) events/s"
    drop_topic "$topic"
}

section_hosts() {
    hosts_up || return 0
    if ((BACKLOG_KEPT == 0)); then
        say "hosts: generating a $BENCH_ROWS-event backlog"
        run "$OBBENCH" backlog --dsn "$ORDERS_DSN" --rows "$BENCH_ROWS" --partitions "$PARTITIONS" >"$PARTS/hosts_backlog.json"
    fi
    hosts_run h1 1 "$HOSTS_RELAYS"
    hosts_run h2 2 "$HOSTS_RELAYS"
    hosts_run h3 3 "$HOSTS_RELAYS"
    # controls: the relays of h2 and h3 in one instance, so what crossing hosts costs shows apart from adding relays
    hosts_run h1x4 1 $((2 * HOSTS_RELAYS))
    hosts_run h1x6 1 $((3 * HOSTS_RELAYS))
    backlog_drop
}

# ---------------------------------------------------------------------------
# 3. Apply
# ---------------------------------------------------------------------------
section_apply() {
    local c conf rows="$BENCH_APPLY_ROWS"
    [[ -n "$APPLY_TOPIC" ]] || { say "apply: skipped (needs the drain section's topic)"; return 0; }
    ((rows <= APPLY_AVAILABLE)) || rows="$APPLY_AVAILABLE"     # a drain that timed out left fewer
    for c in 1 2; do
        say "apply: $c consumer(s), $rows events"
        fresh_ledger
        conf="$(write_conf "apply_c$c" 0 0 "$c" partitioned "$APPLY_TOPIC" "$NAME-apply$c")"
        start_outboxd "$conf"
        # no `ready` first: the clock must see the very first batch
        run "$OBBENCH" apply --name "$NAME" --pid "$OB_PID" --dsn "$LEDGER_DSN" --rows "$rows" \
            --consumers "$c" --partitions "$PARTITIONS" \
            --timeout "$BENCH_APPLY_TIMEOUT_S" --kafka-pid "$KAFKA_PID" >"$PARTS/apply_c$c.json"
        stop_outboxd
        say "  apply_c$c: $(json_num "$PARTS/apply_c$c.json" events_per_s) events/s"
    done
    drop_topic "$APPLY_TOPIC"
}

# ---------------------------------------------------------------------------
# 4. Latency at half the max intake
# ---------------------------------------------------------------------------
latency_rate() {
    local rps
    if [[ -n "$BENCH_LATENCY_RATE" ]]; then
        echo "$BENCH_LATENCY_RATE"
    elif [[ -s "$PARTS/intake_full.json" ]] && rps="$(json_num "$PARTS/intake_full.json" rps)" && [[ -n "$rps" ]]; then
        awk -v r="$rps" 'BEGIN { printf "%.0f\n", r / 2 }'
    else
        echo "set BENCH_LATENCY_RATE or run the intake section" >&2
        return 1
    fi
}

# latency_run RUN MODE RATE: the whole pipeline paced at RATE; parts RUN_*.
latency_run() {
    local run="$1" mode="$2" rate="$3" topic conf
    say "latency: outboxd whole pipeline ($mode) at $rate req/s for $BENCH_LATENCY_S s"
    fresh_orders
    fresh_ledger
    new_topic "$run"
    topic="$TOPIC"
    conf="$(write_conf "$run" 2 2 2 "$mode" "$topic" "$NAME-$run")"
    start_outboxd "$conf"
    ready --http 2 --relays 2 --consumers 2 --mode "$mode"
    watch_start "${run}_watch"
    run "$OBBENCH" pace --port "$ORDERS_PORT" --rate "$rate" --seconds "$BENCH_LATENCY_S" --conns "$PACE_CONNS" \
        >"$PARTS/${run}_pace.json"
    run "$OBBENCH" settle --orders-dsn "$ORDERS_DSN" --ledger-dsn "$LEDGER_DSN" --timeout 60 >"$PARTS/${run}_settle.json"
    watch_stop
    "$OBBENCH" latency --orders-dsn "$ORDERS_DSN" --ledger-dsn "$LEDGER_DSN" >"$PARTS/${run}_db.json"
    stages "$run"
    stop_outboxd
    drop_slots
    drop_topic "$topic"
}

latency_naive() {
    local rate="$1" topic conf until
    say "latency: naive poller under the same load"
    fresh_orders
    new_topic latency-naive
    topic="$TOPIC"
    conf="$(write_conf latency_naive 2 0 0 partitioned "$topic" "$NAME-unused")"
    start_outboxd "$conf"
    ready --http 2
    "$OBBENCH" naive --dsn "$ORDERS_DSN" --brokers "$BROKERS" --topic "$topic" --seconds "$((BENCH_LATENCY_S + 1))" \
        --interval-ms "$NAIVE_INTERVAL_MS" --limit "$NAIVE_LIMIT" >"$PARTS/latency_naive_poller.json" &
    NAIVE_PID=$!
    run "$OBBENCH" pace --port "$ORDERS_PORT" --rate "$rate" --seconds "$BENCH_LATENCY_S" --conns "$PACE_CONNS" \
        >"$PARTS/latency_naive_pace.json"
    wait "$NAIVE_PID"
    NAIVE_PID=""
    until="$(json_num "$PARTS/latency_naive_poller.json" stopped_wall_ms)"
    "$OBBENCH" latency --orders-dsn "$ORDERS_DSN" --until-ms "$until" >"$PARTS/latency_naive_db.json"
    stop_outboxd
    drop_topic "$topic"
}

section_latency() {
    local rate
    rate="$(latency_rate)"
    latency_run latency partitioned "$rate"
    latency_run latency_wal wal "$rate"
    latency_naive "$rate"
}

# ---------------------------------------------------------------------------
# 8. Foreign SQL writers: outboxd.emit beside POST /orders
# ---------------------------------------------------------------------------

# emit_start RUN HTTP MODE: a fresh orderdb and topic (in TOPIC), 2 relays and
# no consumers in both runs of a mode (the ledger plays no part in commit ->
# Kafka), so only who writes the rows differs.
emit_start() {
    local run="$1" http="$2" mode="$3" conf
    fresh_orders
    new_topic "$run"
    conf="$(write_conf "$run" "$http" 2 0 "$mode" "$TOPIC" "$NAME-unused")"
    start_outboxd "$conf"
    ready --http "$http" --relays 2 --mode "$mode"
    watch_start "${run}_watch"
}

# emit_end RUN TOPIC: caught up, then commit -> Kafka from outboxd.outbox, as section 4 reads it.
emit_end() {
    local run="$1" topic="$2"
    run "$OBBENCH" settle --orders-dsn "$ORDERS_DSN" --timeout 60 >"$PARTS/${run}_settle.json"
    watch_stop
    "$OBBENCH" latency --orders-dsn "$ORDERS_DSN" >"$PARTS/${run}_db.json"
    stages "$run"     # no consumers here: only the relay stages count
    stop_outboxd
    drop_slots
    drop_topic "$topic"
}

# emit_mode MODE: the baseline (POST /orders) and then outboxd.emit, at the same rate; parts emit_MODE_{http,sql}_*.
emit_mode() {
    local mode="$1" run="emit_$1_http"
    say "emit: baseline POST /orders ($mode, http=2 relays=2) at $BENCH_EMIT_RATE req/s for $BENCH_LATENCY_S s"
    emit_start "$run" 2 "$mode"
    run "$OBBENCH" pace --port "$ORDERS_PORT" --rate "$BENCH_EMIT_RATE" --seconds "$BENCH_LATENCY_S" \
        --conns "$PACE_CONNS" >"$PARTS/${run}_pace.json"
    emit_end "$run" "$TOPIC"
    run="emit_${mode}_sql"
    say "emit: outboxd.emit from $EMIT_CONNS SQL connections ($mode, http=0 relays=2) at $BENCH_EMIT_RATE/s"
    emit_start "$run" 0 "$mode"
    run "$OBBENCH" emit-pace --dsn "$ORDERS_DSN" --rate "$BENCH_EMIT_RATE" --seconds "$BENCH_LATENCY_S" \
        --conns "$EMIT_CONNS" >"$PARTS/${run}_pace.json"
    emit_end "$run" "$TOPIC"
    say "  emit_$mode: commit → Kafka p50 $(json_num "$PARTS/emit_${mode}_http_db.json" p50) ms via POST /orders," \
        "$(json_num "$PARTS/${run}_db.json" p50) ms via outboxd.emit"
}

section_emit() {
    emit_mode partitioned
    emit_mode wal
}

# ---------------------------------------------------------------------------
# 9. Peers: Debezium in a Kafka Connect worker, on the same rows
# ---------------------------------------------------------------------------
PEERS_VAR="$ROOT/var/peers"          # jars, fetched once by bench/peers/deps.sh
# connect-standalone.sh's JVM as Kafka ships it: its heap (KAFKA_HEAP_OPTS)
# and kafka-run-class.sh's performance options; nothing tuned for the bench.
CONNECT_JVM=(java -Xms256M -Xmx2G -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
             -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true)
PEER_TUNED_POLL_MS=10
# The content-type outboxd's relay sends for rows in its own encoding
# ([kafka] format, msgpack by default); peer-read checks every record against the relay's.
OWN_CONTENT_TYPE=application/msgpack
PEER_CHECK_PER_PARTITION=200         # drain records compared field by field, per partition

peers_wanted() { [[ " $BENCH_SECTIONS " == *" peers "* ]]; }

# peer_conf CFG SLOT TOPICS REST_PORT [POLL_MS]: the worker's and the connector's properties.
peer_conf() {
    local cfg="$1" slot="$2" topics="$3" rest="$4" poll="${5:-}"
    sed -e "s|@BROKERS@|$BROKERS|" -e "s|@OFFSETS@|$WORK/peer_$cfg.offsets|" -e "s|@PLUGINS@|$PEERS_VAR/plugins|" \
        -e "s|@REST_PORT@|$rest|" bench/peers/worker.properties >"$WORK/peer_$cfg.worker.properties"
    sed -e "s|@NAME@|$NAME-$cfg|g" -e "s|@PGPORT@|$OB_PG_ORDERS_PORT|" -e "s|@DB@|$ORDERS_DB|" -e "s|@SLOT@|$slot|g" \
        -e "s|@TOPICS@|$topics|g" -e "s|@OWN_CONTENT_TYPE@|$OWN_CONTENT_TYPE|" \
        bench/peers/connector.properties >"$WORK/peer_$cfg.connector.properties"
    # absent in the default run, so Debezium's own default applies
    if [[ -n "$poll" ]]; then printf 'poll.interval.ms=%s\n' "$poll" >>"$WORK/peer_$cfg.connector.properties"; fi
}

# start_connect CFG REST_PORT SLOT: the worker, then wait until it streams; part peer_CFG_ready.
start_connect() {
    local cfg="$1" rest="$2" slot="$3" launched=${EPOCHREALTIME/,/.}   # a decimal comma in some locales
    "${CONNECT_JVM[@]}" "-Dlog4j2.configurationFile=$ROOT/bench/peers/log4j2.properties" \
        "-Doutboxd.bench.connect.log=$WORK/peer_$cfg.connect.log" -cp "$PEERS_VAR/connect/libs/*" \
        org.apache.kafka.connect.cli.ConnectStandalone "$WORK/peer_$cfg.worker.properties" \
        "$WORK/peer_$cfg.connector.properties" </dev/null >"$WORK/peer_$cfg.connect.out" 2>&1 &
    CONNECT_PID=$!
    run "$OBBENCH" peer-ready --dsn "$ORDERS_DSN" --slot "$slot" --pid "$CONNECT_PID" --rest-port "$rest" \
        --connector "$NAME-$cfg" --launched "$launched" >"$PARTS/peer_${cfg}_ready.json"
}

# Graceful stop (TERM: the worker commits its offsets and closes the slot), SIGKILL after 30 s; our pid only.
stop_connect() {
    [[ -n "$CONNECT_PID" ]] || return 0
    local i
    kill -TERM "$CONNECT_PID" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$CONNECT_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$CONNECT_PID" 2>/dev/null; then
        say "Connect worker $CONNECT_PID did not stop within 30 s; SIGKILL"
        kill -KILL "$CONNECT_PID" 2>/dev/null || true
    fi
    wait "$CONNECT_PID" 2>/dev/null || true
    CONNECT_PID=""
}

# The publication covers outboxd.outbox only and publishes inserts only, as
# outboxd's own mode wal makes it: an outbox row is never meant to change.
# Both exist before a row is written, so snapshot.mode=no_data misses nothing.
peer_slot_create() {
    PEER_SLOT="$1"
    sql "$ORDERS_DSN" "CREATE PUBLICATION $1 FOR TABLE outboxd.outbox WITH (publish = 'insert')" \
        "SELECT pg_create_logical_replication_slot('$1', 'pgoutput')"
}

# The slot stays active until its WAL sender has noticed the worker is gone:
# up to 10 s for that, then the drop (which refuses an active slot).
peer_slot_drop() {
    sql "$ORDERS_DSN" "DO \$\$ BEGIN FOR i IN 1..100 LOOP
            EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$1' AND active);
            PERFORM pg_sleep(0.1);
        END LOOP;
        PERFORM pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$1'; END \$\$" \
        "DROP PUBLICATION IF EXISTS $1"
    PEER_SLOT=""
}

# The drain's own rows when section 2 ran (saved by it), else the same generator's.
peer_backlog() {
    if [[ -s "$BACKLOG_FILE" ]]; then
        say "peers: section 2's $BENCH_ROWS-event backlog back into a fresh orderdb"
        run "$OBBENCH" backlog-load --dsn "$ORDERS_DSN" --file "$BACKLOG_FILE" >"$PARTS/peer_backlog.json"
    else
        say "peers: generating a $BENCH_ROWS-event backlog (section 2 did not run)"
        run "$OBBENCH" backlog --dsn "$ORDERS_DSN" --rows "$BENCH_ROWS" --partitions "$PARTITIONS" \
            >"$PARTS/peer_backlog.json"
    fi
}

# peer_drain CFG TOPIC: as drain_wal_run: the peer streams, then the backlog
# arrives as one transaction; then a sample of its records checked.
peer_drain() {
    local cfg="$1" topic="$2"
    say "peers: $cfg: drain of $BENCH_ROWS rows committed as one transaction"
    run "$OBBENCH" fill --dsn "$ORDERS_DSN" --streaming 1
    run "$OBBENCH" peer-drain --dsn "$ORDERS_DSN" --brokers "$BROKERS" --topic "$topic" --partitions "$PARTITIONS" \
        --rows "$BENCH_ROWS" --pid "$CONNECT_PID" --timeout "$BENCH_DRAIN_TIMEOUT_S" --kafka-pid "$KAFKA_PID" \
        >"$PARTS/peer_${cfg}_drain.json"
    run "$OBBENCH" peer-read --dsn "$ORDERS_DSN" --brokers "$BROKERS" --topic "$topic" --partitions "$PARTITIONS" \
        --per-partition "$PEER_CHECK_PER_PARTITION" >"$PARTS/peer_${cfg}_drain_check.json"
    say "  peer_${cfg}_drain: $(json_num "$PARTS/peer_${cfg}_drain.json" events_per_s) events/s"
}

# peer_latency CFG TOPIC: section 8's foreign writer (outboxd.emit, same rate,
# connections and length) with the peer publishing instead of the relays.
peer_latency() {
    local cfg="$1" topic="$2"
    say "peers: $cfg: outboxd.emit from $EMIT_CONNS SQL connections at $BENCH_EMIT_RATE/s for $BENCH_LATENCY_S s"
    sql "$ORDERS_DSN" "TRUNCATE outboxd.outbox, outboxd.aggregate_seq" "CHECKPOINT"
    "$OBBENCH" peer-watch --pid "$CONNECT_PID" --orders-dsn "$ORDERS_DSN" --kafka-pid "$KAFKA_PID" \
        >"$PARTS/peer_${cfg}_watch.json" &
    WATCH_PID=$!
    run "$OBBENCH" emit-pace --dsn "$ORDERS_DSN" --rate "$BENCH_EMIT_RATE" --seconds "$BENCH_LATENCY_S" \
        --conns "$EMIT_CONNS" >"$PARTS/peer_${cfg}_pace.json"
    run "$OBBENCH" peer-read --dsn "$ORDERS_DSN" --brokers "$BROKERS" --topic "$topic" --partitions "$PARTITIONS" \
        --settle-timeout 60 >"$PARTS/peer_${cfg}_db.json"
    watch_stop
    say "  peer_$cfg: commit → Kafka p50 $(json_num "$PARTS/peer_${cfg}_db.json" p50) ms"
}

# peer_run CFG [POLL_MS]: one worker for the drain, then the paced load
# (so that is measured on a warm JVM, as a long-running worker is); parts peer_CFG_*.
peer_run() {
    local cfg="$1" poll="${2:-}" slot="${TAG}_dbz_$1" topics="$TOPIC_PREFIX-dbz-$1" rest
    say "peers: Debezium $cfg (poll.interval.ms ${poll:-default, 500})"
    sql "$ORDERS_DSN" "TRUNCATE outboxd.outbox, outboxd.aggregate_seq" "CHECKPOINT"
    peer_slot_create "$slot"
    # one topic per aggregate type (the connector routes by it); stamped by the broker on append
    new_topic "dbz-$cfg-order" message.timestamp.type=LogAppendTime
    new_topic "dbz-$cfg-product" message.timestamp.type=LogAppendTime
    read -r rest <<<"$("$OBBENCH" free-ports 1)"
    peer_conf "$cfg" "$slot" "$topics" "$rest" "$poll"
    start_connect "$cfg" "$rest" "$slot"
    say "  peer_$cfg: streaming $(json_num "$PARTS/peer_${cfg}_ready.json" startup_seconds) s after the JVM started"
    peer_drain "$cfg" "$topics-order"
    peer_latency "$cfg" "$topics-product"
    stop_connect
    peer_slot_drop "$slot"
    drop_topic "$topics-order"
    drop_topic "$topics-product"
}

jar_version() { find "$1" -name "$2-[0-9]*.jar" -printf '%f\n' | sed "s/^$2-\(.*\)\.jar$/\1/" | head -n 1; }

section_peers() {
    local t0
    command -v java >/dev/null || { echo "peers: java is needed (make deps)" >&2; exit 1; }
    say "peers: Kafka Connect and Debezium jars (bench/peers/deps.sh: fetched once into var/peers, then reused)"
    bash bench/peers/deps.sh
    t0=$SECONDS
    fresh_orders
    peer_backlog
    peer_run default
    peer_run tuned "$PEER_TUNED_POLL_MS"
    sql "$ORDERS_DSN" "DROP TABLE outbox_backlog" "TRUNCATE outboxd.outbox"
    rm -f "$BACKLOG_FILE"
    cat >"$PARTS/peers.json" <<EOF
{"seconds": $((SECONDS - t0)), "tuned_poll_interval_ms": $PEER_TUNED_POLL_MS,
 "connect": "$(jar_version "$PEERS_VAR/connect/libs" connect-runtime)",
 "debezium": "$(jar_version "$PEERS_VAR/plugins/debezium-connector-postgres" debezium-connector-postgres)",
 "jvm": "${CONNECT_JVM[*]:1}", "java": "$(java -version 2>&1 | head -n 1 | tr -d '"')"}
EOF
    say "peers: took $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# Facts, settings, report
# ---------------------------------------------------------------------------
write_facts() {
    local kafka wrkv pgbv
    kafka="$(find "$ROOT/var/kafka/libs" -name 'kafka-server-[0-9]*.jar' -printf '%f\n' |
        sed 's/kafka-server-\(.*\)\.jar/\1/' | head -n 1)"
    wrkv="$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2 || true)"    # wrk -v exits 1
    pgbv="$(pgbench --version)"
    "$OBBENCH" machine --orders-dsn "$ORDERS_DSN" --ledger-dsn "$LEDGER_DSN" --kafka "${kafka:-?}" --wrk "$wrkv" \
        --pgbench "$pgbv" >"$PARTS/machine.json"
    cat >"$PARTS/settings.json" <<EOF
{"rows": $BENCH_ROWS, "apply_rows": $BENCH_APPLY_ROWS, "sections": "$BENCH_SECTIONS",
 "intake_seconds": $BENCH_INTAKE_S, "intake_threads": $INTAKE_THREADS, "intake_conns": $INTAKE_CONNS,
 "wrk": "wrk -t $INTAKE_THREADS -c $INTAKE_CONNS -d ${BENCH_INTAKE_S}s --latency -s bench/post_order.lua",
 "pgbench": "pgbench -n -M prepared -c $INTAKE_CONNS -j $INTAKE_THREADS -T $BENCH_INTAKE_S -f bench/pgbench_create.sql",
 "naive_seconds": $BENCH_NAIVE_S, "naive_interval_ms": $NAIVE_INTERVAL_MS, "naive_limit": $NAIVE_LIMIT,
 "latency_seconds": $BENCH_LATENCY_S, "pace_conns": $PACE_CONNS,
 "latency_rate": "${BENCH_LATENCY_RATE:-half the whole-pipeline intake}",
 "emit_rate": $BENCH_EMIT_RATE, "emit_conns": $EMIT_CONNS,
 "kafka_partitions": $PARTITIONS, "orders_threads_per_http_worker": 16,
 "relay": "batch 500, poll_interval_ms 100, linger_ms 1, delivery_timeout_ms 10000 (defaults)",
 "consumer": "batch 500: first poll waits up to 250 ms, then only what is already fetched (consumer.c constants)",
 "databases": "$ORDERS_DB on :$OB_PG_ORDERS_PORT, $LEDGER_DB on :$OB_PG_LEDGER_PORT",
 "topics": "$TOPIC_PREFIX-*", "drain_timeout_s": $BENCH_DRAIN_TIMEOUT_S, "apply_timeout_s": $BENCH_APPLY_TIMEOUT_S}
EOF
}

main() {
    [[ -x "$OB_BIN" && -x "$OBBENCH" ]] || { echo "build first: make build build/bench/obbench" >&2; exit 1; }
    if ! command -v wrk >/dev/null || ! command -v pgbench >/dev/null; then
        echo "wrk and pgbench are needed (make deps)" >&2
        exit 1
    fi
    bash scripts/stack.sh status >/dev/null || { echo "the stack is not up (make stack-up)" >&2; exit 1; }
    rm -rf "$PARTS" "$WORK"
    mkdir -p "$PARTS" "$WORK"
    say "databases $ORDERS_DB / $LEDGER_DB, topics $TOPIC_PREFIX-*, ports $ORDERS_PORT $LEDGER_PORT $ADMIN_PORT"
    create_databases
    write_facts
    local s
    for s in $BENCH_SECTIONS; do
        case "$s" in
            intake|drain|apply|latency|emit) "section_$s" ;;
            hosts) section_hosts ;;
            peers) ;;     # last, whatever its place: its ratios need the drain's and emit's figures of this run
            *) echo "unknown section $s (intake drain hosts apply latency emit peers)" >&2; exit 1 ;;
        esac
    done
    if peers_wanted; then section_peers; fi
    "$OBBENCH" report --dir "$OUT"
    say "done: $OUT/report.md"
}

# Sourcing the file (for poking at one section by hand) defines everything and runs nothing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
