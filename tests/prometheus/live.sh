#!/usr/bin/env bash
# tests/prometheus/live.sh: the shipped alert rules in a real Prometheus,
# scraping a real outboxd on the local stack.
#   1. healthy, with orders flowing: the scrape is up and no alert fires;
#   2. Kafka stopped (SIGSTOP): the backlog-age, breaker and backlog-growing
#      alerts fire, and clear once Kafka is back (SIGCONT);
#   3. a relay made fatal (a partition count the database does not hold):
#      the worker-fatal alert fires.
# The rules Prometheus loads are the shipped file with only its `for:`
# durations, range windows and the backlog-age threshold shortened (sed
# below), so the expressions under test are the shipped ones, in seconds
# instead of minutes. Bounded in time; cleans up after itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
BIN=${OB_BIN:-$ROOT/build/outboxd}
SERVER=postgresql://outboxd@127.0.0.1:55432/postgres
LSERVER=postgresql://outboxd@127.0.0.1:55433/postgres
TAG=prom$$
WORK=$(mktemp -d)
OB_PID="" PROM_PID="" LOAD_PID=""
KAFKA_PID=$(cat var/run/kafka.pid)
T0=$(date +%s)

fail() { echo "prometheus live: $*" >&2; exit 1; }
cleanup() {
    kill -CONT "$KAFKA_PID" 2>/dev/null || true      # other tests share this broker
    for p in $LOAD_PID $OB_PID $PROM_PID; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    psql -qX "$SERVER" -c "DROP DATABASE IF EXISTS orderdb_$TAG WITH (FORCE)" >/dev/null 2>&1 || true
    psql -qX "$LSERVER" -c "DROP DATABASE IF EXISTS ledgerdb_$TAG WITH (FORCE)" >/dev/null 2>&1 || true
    # the relay created this topic on the shared broker; Kafka's own tool is the only client a script has
    timeout 30 java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        "-Dlog4j.configuration=file:$ROOT/var/kafka/tools-log4j.properties" -cp "$ROOT/var/kafka/libs/*" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:59092 --delete \
        --topic "outbox-events-$TAG" >/dev/null 2>&1 || echo "prometheus live: topic outbox-events-$TAG left behind" >&2
    rm -rf "$WORK"
}
trap cleanup EXIT
# bash runs no EXIT trap when killed by a signal it does not trap: `timeout` or ^C with Kafka stopped would
# leave the shared broker frozen
trap 'exit 143' TERM INT HUP

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORDERS=$(free_port) LEDGER=$(free_port) ADMIN=$(free_port) PROM=$(free_port)

conf() {   # $1: partitions
    cat >"$WORK/outboxd.conf" <<EOF
[supervisor]
name = $TAG
pidfile = $WORK/outboxd.pid
[orders]
listen = 127.0.0.1:$ORDERS
dsn = postgresql://outboxd@127.0.0.1:55432/orderdb_$TAG
[ledger]
group = ledger-$TAG
listen = 127.0.0.1:$LEDGER
dsn = postgresql://outboxd@127.0.0.1:55433/ledgerdb_$TAG
[kafka]
brokers = 127.0.0.1:59092
topic = outbox-events-$TAG
partitions = $1
[workers]
http = 1
relays = 1
consumers = 1
[relay]
poll_interval_ms = 100
[admin]
listen = 127.0.0.1:$ADMIN
[log]
file = $WORK/outboxd.log
EOF
}

start_outboxd() {
    "$BIN" -f -c "$WORK/outboxd.conf" >>"$WORK/outboxd.out" 2>&1 &
    OB_PID=$!
    poll 20 "outboxd's admin listener" curl -sf "http://127.0.0.1:$ADMIN/metrics" -o /dev/null
}

# poll SECONDS WHAT CMD...: CMD until it succeeds, or fail after SECONDS.
poll() {
    local limit=$1 what=$2 end=$(( $(date +%s) + $1 ))
    shift 2
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < end )) || fail "$what: not within ${limit}s"
        sleep 0.5
    done
}

api() { curl -sf "http://127.0.0.1:$PROM/api/v1/$1"; }
# alert names in a state ("firing", or "any"), one per line; fails when the API does not answer, so no
# check below can pass on a Prometheus that is not there
alerts_in() {
    local body
    body=$(api alerts) || return 2
    python3 -c 'import json,sys; s=sys.argv[1]; [print(a["labels"]["alertname"]) for a in json.loads(sys.argv[2])["data"]["alerts"] if s in ("any", a["state"])]' "$1" "$body" | sort -u
}
is_firing() { local l; l=$(alerts_in firing) && grep -qx "$1" <<<"$l"; }
not_firing() { local l; l=$(alerts_in firing) && ! grep -qx "$1" <<<"$l"; }
no_alert() { local l; l=$(alerts_in any) && [[ -z $l ]]; }
scrape_up() { api 'query?query=up%7Bjob%3D%22outboxd%22%7D' | grep -q '"value":\[[0-9.]*,"1"\]'; }
# every rule evaluated at least once since t (epoch seconds)
rules_evaluated() {
    api rules | python3 -c 'import json,sys,datetime
t=float(sys.argv[1]); rs=[r for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]]
# RFC 3339 with nanoseconds and any offset: keep microseconds, keep the offset
ts=lambda v: datetime.datetime.fromisoformat(__import__("re").sub(r"(\.\d{6})\d*", r"\1", v).replace("Z", "+00:00")).timestamp()
ok=all(r["health"]=="ok" and ts(r["lastEvaluation"])>t for r in rs)
sys.exit(0 if rs and ok else 1)' "$1"
}

orders_loop() {
    local i=0
    while :; do
        i=$((i + 1))
        curl -s -m 2 -XPOST "127.0.0.1:$ORDERS/orders" -H "Idempotency-Key: $TAG-$i" \
            -d '{"customerId":"c-1","amount":"1.00","currency":"USD"}' -o /dev/null || true
        sleep 0.2
    done
}

psql -qX "$SERVER" -c "CREATE DATABASE orderdb_$TAG" >/dev/null
psql -qX "$LSERVER" -c "CREATE DATABASE ledgerdb_$TAG" >/dev/null
conf 12
"$BIN" migrate -c "$WORK/outboxd.conf" >/dev/null
start_outboxd

sed -e 's/for: [0-9]*m$/for: 3s/' -e 's/\[5m\]/[20s]/g' -e 's/\[10m\]/[1m]/g' \
    -e 's/(outboxd_partition_oldest_pending_age_seconds) > 60/(outboxd_partition_oldest_pending_age_seconds) > 10/' \
    packaging/prometheus/outboxd-rules.yml >"$WORK/rules.yml"
cmp -s packaging/prometheus/outboxd-rules.yml "$WORK/rules.yml" && fail "the sed changed nothing in the rules"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
scrape_configs:
  - job_name: outboxd
    static_configs: [{targets: ["127.0.0.1:$ADMIN"]}]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
poll 30 "Prometheus ready" curl -sf "http://127.0.0.1:$PROM/-/ready"

orders_loop & LOAD_PID=$!
healthy_from=$(date +%s)
poll 30 "the scrape up" scrape_up
poll 30 "every rule evaluated" rules_evaluated "$(( healthy_from + 5 ))"
no_alert || fail "alerts while healthy: $(api alerts)"
echo "healthy: scrape up, every rule evaluated, no alert pending or firing"

stopped=$(date +%s)
kill -STOP "$KAFKA_PID"
poll 120 "OutboxdOldestPendingEventTooOld firing" is_firing OutboxdOldestPendingEventTooOld
age_fired=$(( $(date +%s) - stopped ))
poll 120 "OutboxdRelayBreakerOpen firing" is_firing OutboxdRelayBreakerOpen
breaker_fired=$(( $(date +%s) - stopped ))
# orders still commit, nothing is produced: fires once the (shortened) 20 s window holds no produce
poll 120 "OutboxdBacklogGrowingNothingPublished firing" is_firing OutboxdBacklogGrowingNothingPublished
growing_fired=$(( $(date +%s) - stopped ))
resumed=$(date +%s)
kill -CONT "$KAFKA_PID"
poll 120 "OutboxdOldestPendingEventTooOld cleared" not_firing OutboxdOldestPendingEventTooOld
age_cleared=$(( $(date +%s) - resumed ))
poll 120 "OutboxdRelayBreakerOpen cleared" not_firing OutboxdRelayBreakerOpen
breaker_cleared=$(( $(date +%s) - resumed ))
poll 120 "OutboxdBacklogGrowingNothingPublished cleared" not_firing OutboxdBacklogGrowingNothingPublished
growing_cleared=$(( $(date +%s) - resumed ))

kill -TERM "$OB_PID"; wait "$OB_PID" 2>/dev/null || true
conf 13        # the topic has 12 partitions: the relay refuses to publish to it with 13 and goes fatal
restarted=$(date +%s)
start_outboxd
poll 60 "OutboxdWorkerFatal firing" is_firing OutboxdWorkerFatal
fatal_fired=$(( $(date +%s) - restarted ))

printf '\n| alert | fired after | cleared after |\n|---|---:|---:|\n'
printf '| OutboxdOldestPendingEventTooOld | %d s (Kafka stopped) | %d s (Kafka back) |\n' "$age_fired" "$age_cleared"
printf '| OutboxdRelayBreakerOpen | %d s (Kafka stopped) | %d s (Kafka back) |\n' "$breaker_fired" "$breaker_cleared"
printf '| OutboxdBacklogGrowingNothingPublished | %d s (Kafka stopped) | %d s (Kafka back) |\n' "$growing_fired" \
    "$growing_cleared"
printf '| OutboxdWorkerFatal | %d s (restart with a wrong partition count) | - |\n' "$fatal_fired"
echo "prometheus live: passed in $(( $(date +%s) - T0 )) s (rules shortened: for 3s, windows 20s/1m, backlog age > 10s)"
