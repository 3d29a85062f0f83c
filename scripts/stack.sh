#!/usr/bin/env bash
# Local test stack: two PostgreSQL 15 clusters (orders, ledger) and a
# single-node KRaft Kafka 3.9.1, all on 127.0.0.1, all state under var/.
#
#   bash scripts/stack.sh up       start what is not running, wait until ready
#   bash scripts/stack.sh down     stop what this script started
#   bash scripts/stack.sh status   one line per component; exit 3 if any is down
#   bash scripts/stack.sh env      shell exports of the DSNs and ports
#   bash scripts/stack.sh up-secure / down-secure
#                                  a second Kafka node with SASL/SCRAM and ACLs only
#                                  (29094), for the Kafka security test
#
# Nothing here touches a system-wide service: every process is ours, started
# from var/ and remembered by pid in var/run/, so several checkouts can run side
# by side on different ports (OB_PG_ORDERS_PORT, OB_PG_LEDGER_PORT,
# OB_KAFKA_PORT, OB_KAFKA_CONTROLLER_PORT). Run scripts/deps.sh first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Resolved, because servers are recognised by the data directory in their
# command line: a var/ reached through a symlink (a second checkout sharing
# the stack) must name the same path the servers were started with.
VAR="$(cd "$ROOT/var" 2>/dev/null && pwd -P || echo "$ROOT/var")"
RUN="$VAR/run"
KDIR="$VAR/kafka"
KLIBS="$KDIR/libs"

PG_BIN="${OB_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_ORDERS_PORT="${OB_PG_ORDERS_PORT:-55432}"
PG_LEDGER_PORT="${OB_PG_LEDGER_PORT:-55433}"
KAFKA_PORT="${OB_KAFKA_PORT:-59092}"
KAFKA_CONTROLLER_PORT="${OB_KAFKA_CONTROLLER_PORT:-59093}"
TOPIC="${OB_TOPIC:-outbox-events}"
PARTITIONS="${OB_PARTITIONS:-12}"

PG_DEADLINE_S=30
KAFKA_DEADLINE_S=90
KAFKA_STOP_S=30
PG_CLUSTERS=(orders ledger)

CMD="${1:-}"

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
say() { printf 'stack-%s: %s\n' "$CMD" "$*"; }

die() {
    printf 'stack-%s: %s\n' "$CMD" "$*" >&2
    exit 1
}

# fail COMPONENT MESSAGE: the message, then the component's log tails, so the
# cause is on screen without hunting for files.
fail() {
    local comp="$1"; shift
    printf 'stack-%s: %s\n' "$CMD" "$*" >&2
    local f
    for f in $(component_logs "$comp"); do
        [[ -s "$f" ]] || continue
        printf -- '--- last 30 lines of %s ---\n' "$f" >&2
        tail -n 30 "$f" >&2
    done
    exit 1
}

component_logs() {
    case "$1" in
        pg-*)  echo "$VAR/$1.log" ;;
        kafka) echo "$KDIR/logs/server.log $KDIR/kafka.out" ;;
        kafka-secure) echo "$SKDIR/logs/server.log $SKDIR/kafka.out $RUN/kafka-secure-probe.out" ;;
        kafka-ha-*) echo "$VAR/${1}/logs/server.log $VAR/${1}/kafka.out" ;;
    esac
}

# Microseconds since the epoch, without forking `date` in every poll.
now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# seconds_since START_US -> "1.2"
seconds_since() {
    local d=$(( $(now_us) - $1 ))
    printf '%d.%d' $((d / 1000000)) $((d % 1000000 / 100000))
}

read_pidfile() {
    local pid
    [[ -f "$1" ]] || return 0
    read -r pid <"$1" || true
    [[ "$pid" =~ ^[0-9]+$ ]] && echo "$pid"
    return 0
}

# is_ours PID PATTERN: the pid is alive and its command line mentions PATTERN.
# The pattern check keeps a recycled pid of some unrelated process from ever
# being mistaken for (and signalled as) one of ours.
is_ours() {
    local pid="$1" pattern="$2" cmdline
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"$pattern"* ]]
}

port_listeners() { ss -ltnpH "sport = :$1" 2>/dev/null || true; }
port_taken()     { [[ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]]; }
tcp_open()       { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# require_free_port COMPONENT PORT VARIABLE: fail naming the component, the
# port, who holds it and the variable that moves it.
require_free_port() {
    local comp="$1" port="$2" var="$3"
    port_taken "$port" || return 0
    printf 'stack-%s: %s: port %s is already in use by another process:\n%s\n' \
        "$CMD" "$comp" "$port" "$(port_listeners "$port")" >&2
    printf 'stack-%s: free it, or set %s to another port\n' "$CMD" "$var" >&2
    exit 1
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------
pg_port() { case "$1" in orders) echo "$PG_ORDERS_PORT" ;; ledger) echo "$PG_LEDGER_PORT" ;; esac; }
pg_db()   { case "$1" in orders) echo orderdb ;; ledger) echo ledgerdb ;; esac; }
pg_data() { echo "$VAR/pg-$1"; }
pg_log()  { echo "$VAR/pg-$1.log"; }
pg_sock() { echo "$RUN/pgsock-$1"; }
pg_pidfile() { echo "$RUN/pg-$1.pid"; }
pg_port_var() { case "$1" in orders) echo OB_PG_ORDERS_PORT ;; ledger) echo OB_PG_LEDGER_PORT ;; esac; }
pg_dsn()  { echo "postgresql://outboxd@127.0.0.1:$(pg_port "$1")/$(pg_db "$1")"; }

# PostgreSQL refuses to run as root, so as root everything that touches a
# data directory runs as the postgres system user.
as_pg() {
    if ((EUID == 0)); then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Give a path to the user the server runs as (no-op when not root).
pg_own() { ((EUID == 0)) && chown -R postgres: "$@"; return 0; }

pg_prepare_user() {
    ((EUID == 0)) || return 0
    if ! id -u postgres >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/postgresql \
            --shell /usr/sbin/nologin postgres
        say "created system user postgres"
    fi
    # The server must be able to reach var/ through every parent directory; a
    # private home directory (0700) is the usual culprit.
    if ! runuser -u postgres -- test -x "$RUN"; then
        local p="" part
        local -a parts
        IFS=/ read -ra parts <<<"${RUN#/}"
        for part in "${parts[@]}"; do
            p="$p/$part"
            runuser -u postgres -- test -x "$p" && continue
            die "the postgres user cannot enter $p, which holds the stack's state; run 'chmod o+x $p' (or move the checkout) and retry"
        done
    fi
}

# The live postmaster pid of a cluster, or nothing. Our pid file comes first;
# the cluster's own postmaster.pid covers a pid file lost by hand (the data
# directory is ours either way).
pg_live_pid() {
    local name="$1" data pid
    data="$(pg_data "$name")"
    pid="$(read_pidfile "$(pg_pidfile "$name")")"
    if ! is_ours "$pid" "$data"; then
        pid="$(read_pidfile "$data/postmaster.pid" 2>/dev/null || true)"
        is_ours "$pid" "$data" || pid=""
    fi
    echo "$pid"
}

# An existing role, or every probe leaves a FATAL "role does not exist" in the log.
pg_ready() { "$PG_BIN/pg_isready" -q -t 1 -h 127.0.0.1 -p "$(pg_port "$1")" -U postgres -d postgres; }

pg_init() {
    local name="$1" data tmp locale_args
    data="$(pg_data "$name")"
    [[ -f "$data/PG_VERSION" ]] && return 0

    # initdb into a scratch directory and rename at the end, so an interrupted
    # init never leaves a half-made cluster that later runs would trust.
    tmp="$data.init"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    chmod 700 "$tmp"
    pg_own "$tmp" "$(pg_log "$name")"

    if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
        locale_args=(--locale=C.UTF-8)
    else
        locale_args=(--no-locale)
    fi
    as_pg "$PG_BIN/initdb" -D "$tmp" -A trust -U postgres --encoding=UTF8 \
        "${locale_args[@]}" >>"$(pg_log "$name")" 2>&1 ||
        fail "pg-$name" "pg-$name: initdb failed"

    # Settings live in the cluster's own config so a hand-run pg_ctl gets the
    # same server; only what depends on the environment (port, socket path)
    # is passed at start.
    cat >>"$tmp/postgresql.conf" <<'EOF'

# --- outboxd dev stack (written once by scripts/stack.sh) ---
listen_addresses = '127.0.0.1'
synchronous_commit = on
fsync = on
max_connections = 200
shared_buffers = 128MB
max_prepared_transactions = 0
wal_level = logical
max_replication_slots = 16
max_wal_senders = 16
EOF
    mv "$tmp" "$data"
    say "pg-$name: initialised $data"
}

# Settings added after a cluster may already have been initialised: appended
# when missing, so an old var/ gets them at its next start. A replication slot
# must never retain write-ahead log without bound (relay mode wal).
pg_settings_upgrade() {
    local conf="$1/postgresql.conf"
    grep -q '^max_slot_wal_keep_size' "$conf" ||
        printf 'max_slot_wal_keep_size = 2GB\n' >>"$conf"
}

# Sets PG_STARTER_<name> to the pid of a background `pg_ctl -w start`, whose
# exit status tells pg_wait early whether the server died during startup.
pg_start() {
    local name="$1" data sock log port
    data="$(pg_data "$name")"; sock="$(pg_sock "$name")"
    log="$(pg_log "$name")"; port="$(pg_port "$name")"

    touch "$log"
    pg_own "$log"
    pg_init "$name"
    pg_settings_upgrade "$data"
    mkdir -p "$sock"
    chmod 755 "$sock"
    pg_own "$sock"

    # In the background so both clusters and Kafka boot at once; 9>&- keeps
    # the postmaster from inheriting (and so holding forever) our lock.
    # shellcheck disable=SC2094 # pg_ctl appends to the log, as we do
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t "$PG_DEADLINE_S" \
        -o "-c port=$port -c unix_socket_directories='$sock' -c listen_addresses=127.0.0.1" \
        start >>"$log" 2>&1 9>&- &
    printf -v "PG_STARTER_$name" '%s' "$!"
    say "pg-$name: starting on 127.0.0.1:$port"
}

pg_wait() {
    local name="$1" t0 deadline starter_var starter pid
    t0="$(now_us)"
    deadline=$((t0 + PG_DEADLINE_S * 1000000))
    starter_var="PG_STARTER_$name"
    starter="${!starter_var:-}"

    until pg_ready "$name"; do
        if [[ -n "$starter" ]] && ! kill -0 "$starter" 2>/dev/null; then
            wait "$starter" || fail "pg-$name" "pg-$name: the server exited during startup"
            starter=""   # pg_ctl is done and happy; keep polling pg_isready
        fi
        (($(now_us) < deadline)) ||
            fail "pg-$name" "pg-$name: did not accept connections within $PG_DEADLINE_S s"
        sleep 0.2
    done
    [[ -z "$starter" ]] || wait "$starter" || true

    pid="$(read_pidfile "$(pg_data "$name")/postmaster.pid")"
    echo "$pid" >"$(pg_pidfile "$name")"
    say "pg-$name: ready (pid $pid) in $(seconds_since "$t0") s"
}

# Role and database, created only when absent so reruns are no-ops.
pg_provision() {
    local name="$1" port db
    port="$(pg_port "$name")"; db="$(pg_db "$name")"
    local -a psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -tA)

    if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'outboxd'")" != 1 ]]; then
        "${psql[@]}" -c "CREATE ROLE outboxd LOGIN SUPERUSER" || fail "pg-$name" "pg-$name: could not create role outboxd"
        say "pg-$name: created role outboxd"
    fi
    if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
        "${psql[@]}" -c "CREATE DATABASE $db OWNER outboxd" || fail "pg-$name" "pg-$name: could not create database $db"
        say "pg-$name: created database $db"
    fi
}

pg_stop() {
    local name="$1" pid
    pid="$(pg_live_pid "$name")"
    if [[ -z "$pid" ]]; then
        rm -f "$(pg_pidfile "$name")"
        say "pg-$name: not running"
        return 0
    fi
    # -m fast: roll back open sessions instead of waiting for clients to leave.
    as_pg "$PG_BIN/pg_ctl" -D "$(pg_data "$name")" -m fast -w -t 60 stop >/dev/null ||
        die "pg-$name: pg_ctl stop failed (pid $pid); see $(pg_log "$name")"
    rm -f "$(pg_pidfile "$name")"
    say "pg-$name: stopped (pid $pid)"
}

# ---------------------------------------------------------------------------
# Kafka (KRaft, one node acting as broker and controller)
# ---------------------------------------------------------------------------
KAFKA_PIDFILE="$RUN/kafka.pid"

kafka_live_pid() {
    local pid
    pid="$(read_pidfile "$KAFKA_PIDFILE")"
    is_ours "$pid" "$KDIR/server.properties" && echo "$pid"
    return 0
}

# A JVM for the command-line tools: small and quick to start, logging only
# warnings to stderr instead of cluttering server.log. An array rather than a
# function so that `timeout` can run it.
KAFKA_TOOL=(java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
            "-Dlog4j.configuration=file:$KDIR/tools-log4j.properties"
            -cp "$KLIBS/*")

# kafka_list_topics SECONDS: topic names, one per line; bounded because the
# admin client would otherwise retry for a minute against a sick broker.
kafka_list_topics() {
    timeout "$1" "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list
}

# Regenerated on each start so port changes through the environment apply.
kafka_write_config() {
    mkdir -p "$KDIR/data" "$KDIR/logs"
    cat >"$KDIR/server.properties" <<EOF
# Generated by scripts/stack.sh on every start; edits here are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KDIR/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF

    cat >"$KDIR/log4j.properties" <<'EOF'
# Generated by scripts/stack.sh. Everything goes to logs/server.log, nothing to
# the console, so kafka.out only ever holds JVM-level trouble.
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
# Per-request and per-partition chatter that drowns the useful lines.
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
EOF

    cat >"$KDIR/tools-log4j.properties" <<'EOF'
# Generated by scripts/stack.sh, for StorageTool and TopicCommand runs.
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

# KRaft storage must be formatted once with a cluster id that then never
# changes; reformatting would orphan the data directory.
kafka_format() {
    local id
    if [[ ! -s "$KDIR/cluster.id" ]]; then
        id="$("${KAFKA_TOOL[@]}" kafka.tools.StorageTool random-uuid 2>>"$KDIR/kafka.out" | tail -n 1)"
        [[ "$id" =~ ^[A-Za-z0-9_-]{22}$ ]] || fail kafka "kafka: StorageTool random-uuid gave '$id'"
        echo "$id" >"$KDIR/cluster.id"
    fi
    [[ -f "$KDIR/data/meta.properties" ]] && return 0
    id="$(cat "$KDIR/cluster.id")"
    "${KAFKA_TOOL[@]}" kafka.tools.StorageTool format -t "$id" -c "$KDIR/server.properties" \
        >>"$KDIR/kafka.out" 2>&1 || fail kafka "kafka: formatting $KDIR/data failed"
    say "kafka: formatted storage (cluster id $id)"
}

kafka_start() {
    kafka_write_config
    kafka_format
    rm -f "$KAFKA_PIDFILE"

    # setsid + nohup: Kafka must outlive this shell, its terminal and its
    # process group. The inner bash records its own pid before exec'ing java,
    # which stays right even if setsid has to fork. cwd is var/kafka so a JVM
    # crash file lands next to the other Kafka state.
    (
        cd "$KDIR"
        # shellcheck disable=SC2016 # $$ is for the inner bash
        setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PIDFILE" \
            java -Xms256m -Xmx512m -XX:+UseG1GC \
            "-Dlog4j.configuration=file:$KDIR/log4j.properties" \
            "-Dkafka.logs.dir=$KDIR/logs" \
            -cp "$KLIBS/*" kafka.Kafka "$KDIR/server.properties" \
            >"$KDIR/kafka.out" 2>&1 </dev/null 9>&- &
    )
    say "kafka: starting on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)"
}

# Ready means a metadata round trip works, not merely an open port: the
# listener accepts connections before the broker serves requests. The topic
# list it returns is kept in KAFKA_TOPICS for kafka_ensure_topic.
kafka_wait() {
    local t0 deadline pid="" left out
    t0="$(now_us)"
    deadline=$((t0 + KAFKA_DEADLINE_S * 1000000))
    out="$RUN/kafka-probe.out"

    while :; do
        [[ -n "$pid" ]] || pid="$(read_pidfile "$KAFKA_PIDFILE")"
        if [[ -n "$pid" ]] && ! is_ours "$pid" "$KDIR/server.properties"; then
            fail kafka "kafka: exited during startup (pid $pid)"
        fi
        left=$(( (deadline - $(now_us)) / 1000000 ))
        ((left > 0)) || fail kafka "kafka: did not answer within $KAFKA_DEADLINE_S s"
        if [[ -n "$pid" ]] && tcp_open "$KAFKA_PORT"; then
            if KAFKA_TOPICS="$(kafka_list_topics "$left" 2>"$out")"; then
                break
            fi
        fi
        sleep 0.2
    done
    say "kafka: ready (pid $pid) in $(seconds_since "$t0") s"
}

kafka_ensure_topic() {
    if grep -qxF -- "$TOPIC" <<<"$KAFKA_TOPICS"; then
        say "kafka: topic $TOPIC exists"
        return 0
    fi
    "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
        --create --if-not-exists --topic "$TOPIC" --partitions "$PARTITIONS" \
        --replication-factor 1 >"$RUN/kafka-topic.out" 2>&1 ||
        { cat "$RUN/kafka-topic.out" >&2; fail kafka "kafka: could not create topic $TOPIC"; }
    say "kafka: created topic $TOPIC ($PARTITIONS partitions)"
}

# stop_kafka_node NAME PID PATTERN: SIGTERM runs Kafka's controlled shutdown
# (leadership moves away first, logs are closed cleanly so the next start
# skips log recovery); SIGKILL if it has not exited after KAFKA_STOP_S.
stop_kafka_node() {
    local name="$1" pid="$2" pattern="$3" t0
    t0="$(now_us)"
    kill -TERM "$pid" 2>/dev/null || true
    while is_ours "$pid" "$pattern"; do
        if (($(now_us) >= t0 + KAFKA_STOP_S * 1000000)); then
            kill -KILL "$pid" 2>/dev/null || true
            say "$name: no exit within $KAFKA_STOP_S s of SIGTERM, sent SIGKILL (pid $pid)"
            break
        fi
        sleep 0.2
    done
    say "$name: stopped (pid $pid) in $(seconds_since "$t0") s"
}

kafka_stop() {
    local pid
    pid="$(kafka_live_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$KAFKA_PIDFILE"
        say "kafka: not running"
        return 0
    fi
    stop_kafka_node kafka "$pid" "$KDIR/server.properties"
    rm -f "$KAFKA_PIDFILE"
}

# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------
preflight() {
    [[ "$ROOT" != *[[:space:]]* ]] || die "the checkout path '$ROOT' contains whitespace, which pg_ctl's option string cannot carry"
    [[ -x "$PG_BIN/pg_ctl" ]] || die "no PostgreSQL at $PG_BIN (set OB_PG_BIN or run scripts/deps.sh)"
    command -v java >/dev/null 2>&1 || die "java is not on PATH (run scripts/deps.sh)"
    [[ -f "$KLIBS/.complete" ]] || die "Kafka jars missing in $KLIBS (run scripts/deps.sh)"
    # Bad values would otherwise surface as a server dying mid-start.
    local -A seen=()
    local p
    for p in "$PG_ORDERS_PORT" "$PG_LEDGER_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        if ! [[ "$p" =~ ^[0-9]{1,5}$ ]] || ((10#$p < 1 || 10#$p > 65535)); then
            die "port '$p' is not a number from 1 to 65535 (check the OB_*_PORT variables)"
        fi
        [[ -z "${seen[$p]:-}" ]] || die "port $p is given to two components (check the OB_*_PORT variables)"
        seen[$p]=1
    done
    [[ "$PARTITIONS" =~ ^[1-9][0-9]*$ ]] || die "OB_PARTITIONS='$PARTITIONS' is not a positive number"

    local name sock
    for name in "${PG_CLUSTERS[@]}"; do
        sock="$(pg_sock "$name")/.s.PGSQL.$(pg_port "$name")"
        # sun_path is 108 bytes; past that PostgreSQL cannot create its socket.
        ((${#sock} < 108)) || die "socket path $sock is too long for a Unix socket; use a shorter checkout path"
    done
}

# One `up`/`down` at a time: two racing starts would both see free ports.
take_lock() {
    exec 9>"$RUN/.lock"
    flock -w 120 9 || die "another stack.sh up/down still runs after 120 s"
}

# The stack's ports sit inside the kernel's ephemeral range (32768-60999),
# so any client socket may be given one as its local port; Kafka then fails
# to bind while that socket lingers in TIME-WAIT (seen: 127.0.0.1:59092 ->
# :55433 after a fault test's restart). Reserving them stops the kernel
# handing them out. Needs root; without it the risk stays, and we say so.
reserve_ports() {
    local f=/proc/sys/net/ipv4/ip_local_reserved_ports cur want p
    [[ -r "$f" ]] || return 0
    cur="$(cat "$f")"
    want="$cur"
    for p in "$@"; do
        if ! awk -v p="$p" -v list="$cur" 'BEGIN { n = split(list, r, ","); for (i = 1; i <= n; i++) {
                m = split(r[i], b, "-"); lo = b[1]; hi = m > 1 ? b[2] : b[1]; if (p + 0 >= lo + 0 && p + 0 <= hi + 0) exit 0 }
                exit 1 }'; then
            want="${want:+$want,}$p"
        fi
    done
    [[ "$want" == "$cur" ]] && return 0
    if ! echo "$want" >"$f" 2>/dev/null; then
        say "note: cannot reserve ports $* against ephemeral use (not root); a client socket may take one"
    fi
}

cmd_up() {
    local t0 name pid
    t0="$(now_us)"
    preflight
    mkdir -p "$RUN"
    take_lock
    reserve_ports "$PG_ORDERS_PORT" "$PG_LEDGER_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
    pg_prepare_user

    # Decide first what to start and check every port we need, so a taken
    # port stops the run before anything was started.
    local -a pg_todo=() pg_wait_for=()
    local kafka_todo=0 kafka_wait_for=1
    for name in "${PG_CLUSTERS[@]}"; do
        pid="$(pg_live_pid "$name")"
        if [[ -n "$pid" ]]; then
            echo "$pid" >"$(pg_pidfile "$name")"
            if pg_ready "$name"; then
                say "pg-$name: already running (pid $pid)"
                pg_provision "$name"
                continue
            fi
            say "pg-$name: running (pid $pid) but not accepting connections yet; waiting"
        else
            if [[ -f "$(pg_pidfile "$name")" ]]; then
                rm -f "$(pg_pidfile "$name")"
                say "pg-$name: removed stale pid file"
            fi
            require_free_port "pg-$name" "$(pg_port "$name")" "$(pg_port_var "$name")"
            pg_todo+=("$name")
        fi
        pg_wait_for+=("$name")
    done
    pid="$(kafka_live_pid)"
    if [[ -n "$pid" ]]; then
        if tcp_open "$KAFKA_PORT"; then
            say "kafka: already running (pid $pid)"
            kafka_wait_for=0
        else
            say "kafka: running (pid $pid) but not answering yet; waiting"
        fi
    else
        if [[ -f "$KAFKA_PIDFILE" ]]; then
            rm -f "$KAFKA_PIDFILE"
            say "kafka: removed stale pid file"
        fi
        require_free_port kafka "$KAFKA_PORT" OB_KAFKA_PORT
        require_free_port kafka "$KAFKA_CONTROLLER_PORT" OB_KAFKA_CONTROLLER_PORT
        kafka_todo=1
    fi

    # Kafka first: its JVM is the slowest to come up, and the clusters boot
    # while it does.
    ((kafka_todo)) && kafka_start
    for name in "${pg_todo[@]}"; do pg_start "$name"; done
    for name in "${pg_wait_for[@]}"; do
        pg_wait "$name"
        pg_provision "$name"
    done
    if ((kafka_wait_for)); then
        kafka_wait
    else
        KAFKA_TOPICS="$(kafka_list_topics 30 2>"$RUN/kafka-probe.out")" ||
            fail kafka "kafka: running but topic listing failed: $(tail -n 3 "$RUN/kafka-probe.out")"
    fi
    kafka_ensure_topic

    say "stack up in $(seconds_since "$t0") s"
    say "orders $(pg_dsn orders)  ledger $(pg_dsn ledger)  kafka 127.0.0.1:$KAFKA_PORT topic $TOPIC"
}

cmd_down() {
    local t0 name
    t0="$(now_us)"
    mkdir -p "$RUN"
    take_lock
    kafka_stop
    for name in "${PG_CLUSTERS[@]}"; do pg_stop "$name"; done
    say "stack down in $(seconds_since "$t0") s"
}

cmd_status() {
    local all_up=1 name pid state
    for name in "${PG_CLUSTERS[@]}"; do
        pid="$(pg_live_pid "$name")"
        state=down
        [[ -n "$pid" ]] && pg_ready "$name" && state=up
        [[ "$state" == up ]] || all_up=0
        printf '%-10s pid %-8s port %-6s %s\n' "pg-$name" "${pid:--}" "$(pg_port "$name")" "$state"
    done
    pid="$(kafka_live_pid)"
    state=down
    [[ -n "$pid" ]] && tcp_open "$KAFKA_PORT" && state=up
    [[ "$state" == up ]] || all_up=0
    printf '%-10s pid %-8s port %-6s %s\n' kafka "${pid:--}" "$KAFKA_PORT" "$state"
    ((all_up)) || exit 3
}

# Fast shutdown and start of one cluster: the fault suite's "database
# restarted mid-batch". Sessions are rolled back, clients see their
# connections drop, and the cluster comes back on the same port.
cmd_restart_pg() {
    local name="$1" t0
    case "$name" in orders|ledger) ;; *) die "restart-pg: expected orders or ledger, got '$name'" ;; esac
    t0="$(now_us)"
    mkdir -p "$RUN"
    take_lock
    [[ -n "$(pg_live_pid "$name")" ]] || die "pg-$name: not running; use up"
    as_pg "$PG_BIN/pg_ctl" -D "$(pg_data "$name")" -l "$(pg_log "$name")" -m fast -w -t 60 restart >/dev/null 9>&- ||
        die "pg-$name: pg_ctl restart failed; see $(pg_log "$name")"
    pg_live_pid "$name" >"$(pg_pidfile "$name")"
    say "pg-$name: restarted in $(seconds_since "$t0") s"
}

cmd_env() {
    cat <<EOF
export OB_ORDERS_DSN='$(pg_dsn orders)'
export OB_LEDGER_DSN='$(pg_dsn ledger)'
export OB_KAFKA_BROKERS='127.0.0.1:$KAFKA_PORT'
export OB_TOPIC='$TOPIC'
export OB_PARTITIONS='$PARTITIONS'
export OB_PG_ORDERS_PORT='$PG_ORDERS_PORT'
export OB_PG_LEDGER_PORT='$PG_LEDGER_PORT'
export OB_KAFKA_PORT='$KAFKA_PORT'
export OB_KAFKA_CONTROLLER_PORT='$KAFKA_CONTROLLER_PORT'
EOF
}

# ---------------------------------------------------------------------------
# Secure Kafka: a second KRaft node for the Kafka security test. Clients get
# only SASL_PLAINTEXT with SCRAM-SHA-256; StandardAuthorizer denies whatever
# no ACL allows. The controller listener takes SASL PLAIN with a static
# admin entry, because SCRAM credentials live in the metadata log the
# controller has yet to load; no PLAINTEXT listener, so User:ANONYMOUS is
# never a super user. Credentials are made at format time and kept in
# var/kafka-secure/credentials (name password), mode 600.
# ---------------------------------------------------------------------------
SKDIR="$VAR/kafka-secure"
# Below the kernel's ephemeral range (32768-60999): this node starts in the
# middle of the integration tests, whose client sockets took 59094 once.
SKAFKA_PORT="${OB_KAFKA_SECURE_PORT:-29094}"
SKAFKA_CONTROLLER_PORT="${OB_KAFKA_SECURE_CONTROLLER_PORT:-29095}"
SKAFKA_PIDFILE="$RUN/kafka-secure.pid"
SKAFKA_DEADLINE_S=60
SKAFKA_USERS=(admin relay ledger intruder)

skafka_live_pid() {
    local pid
    pid="$(read_pidfile "$SKAFKA_PIDFILE")"
    is_ours "$pid" "$SKDIR/server.properties" && echo "$pid"
    return 0
}

skafka_password() { awk -v u="$1" '$1 == u { print $2 }' "$SKDIR/credentials"; }

# A fresh password per user, made once with the storage they are formatted into.
skafka_credentials() {
    local u
    [[ -s "$SKDIR/credentials" && -f "$SKDIR/data/meta.properties" ]] && return 0
    rm -rf "$SKDIR/data"
    mkdir -p "$SKDIR"
    (
        umask 077
        for u in "${SKAFKA_USERS[@]}"; do
            printf '%s %s-%s\n' "$u" "$u" "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
        done >"$SKDIR/credentials"
    )
}

skafka_write_config() {
    local admin_pw
    admin_pw="$(skafka_password admin)"
    mkdir -p "$SKDIR/data" "$SKDIR/logs"
    (
        umask 077
        cat >"$SKDIR/server.properties" <<EOT
# Generated by scripts/stack.sh on every start; edits here are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$SKAFKA_CONTROLLER_PORT
listeners=SASL_PLAINTEXT://127.0.0.1:$SKAFKA_PORT,CONTROLLER://127.0.0.1:$SKAFKA_CONTROLLER_PORT
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$SKAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_pw" user_admin="$admin_pw";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin
early.start.listeners=CONTROLLER
log.dirs=$SKDIR/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOT
        cat >"$SKDIR/admin.properties" <<EOT
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-256
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
EOT
    )
    sed "s|\${kafka.logs.dir}|$SKDIR/logs|" "$KDIR/log4j.properties" >"$SKDIR/log4j.properties"
}

skafka_format() {
    local id u
    local -a scram=()
    [[ -f "$SKDIR/data/meta.properties" ]] && return 0
    id="$("${KAFKA_TOOL[@]}" kafka.tools.StorageTool random-uuid 2>>"$SKDIR/kafka.out" | tail -n 1)"
    [[ "$id" =~ ^[A-Za-z0-9_-]{22}$ ]] || fail kafka-secure "kafka-secure: StorageTool random-uuid gave '$id'"
    for u in "${SKAFKA_USERS[@]}"; do
        scram+=(--add-scram "SCRAM-SHA-256=[name=$u,password=$(skafka_password "$u")]")
    done
    "${KAFKA_TOOL[@]}" kafka.tools.StorageTool format -t "$id" -c "$SKDIR/server.properties" "${scram[@]}" \
        >>"$SKDIR/kafka.out" 2>&1 || fail kafka-secure "kafka-secure: formatting $SKDIR/data failed"
    say "kafka-secure: formatted storage with SCRAM users ${SKAFKA_USERS[*]}"
}

skafka_wait() {
    local t0="$1" deadline pid left
    deadline=$((t0 + SKAFKA_DEADLINE_S * 1000000))
    while :; do
        pid="$(read_pidfile "$SKAFKA_PIDFILE")"
        [[ -z "$pid" ]] || is_ours "$pid" "$SKDIR/server.properties" ||
            fail kafka-secure "kafka-secure: exited during startup (pid $pid)"
        left=$(( (deadline - $(now_us)) / 1000000 ))
        ((left > 0)) || fail kafka-secure "kafka-secure: did not answer an authenticated metadata request within $SKAFKA_DEADLINE_S s"
        if [[ -n "$pid" ]] && tcp_open "$SKAFKA_PORT" &&
            timeout "$left" "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand \
                --bootstrap-server "127.0.0.1:$SKAFKA_PORT" --command-config "$SKDIR/admin.properties" \
                --list >/dev/null 2>"$RUN/kafka-secure-probe.out"; then
            break
        fi
        sleep 0.2
    done
    say "kafka-secure: ready (pid $pid) in $(seconds_since "$t0") s; SASL_PLAINTEXT/SCRAM-SHA-256 on 127.0.0.1:$SKAFKA_PORT"
}

cmd_up_secure() {
    local t0 pid
    t0="$(now_us)"
    preflight
    mkdir -p "$RUN"
    take_lock
    pid="$(skafka_live_pid)"
    if [[ -n "$pid" ]] && tcp_open "$SKAFKA_PORT"; then
        say "kafka-secure: already running (pid $pid)"
        return 0
    fi
    if [[ -z "$pid" ]]; then
        rm -f "$SKAFKA_PIDFILE"
        require_free_port kafka-secure "$SKAFKA_PORT" OB_KAFKA_SECURE_PORT
        require_free_port kafka-secure "$SKAFKA_CONTROLLER_PORT" OB_KAFKA_SECURE_CONTROLLER_PORT
        kafka_write_config      # the log4j files the secure node shares
        skafka_credentials
        skafka_write_config
        skafka_format
        (
            cd "$SKDIR"
            # shellcheck disable=SC2016 # $$ is for the inner bash
            setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$SKAFKA_PIDFILE" \
                java -Xms256m -Xmx512m -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
                "-Dlog4j.configuration=file:$SKDIR/log4j.properties" \
                "-Dkafka.logs.dir=$SKDIR/logs" \
                -cp "$KLIBS/*" kafka.Kafka "$SKDIR/server.properties" \
                >"$SKDIR/kafka.out" 2>&1 </dev/null 9>&- &
        )
        say "kafka-secure: starting on 127.0.0.1:$SKAFKA_PORT (controller $SKAFKA_CONTROLLER_PORT)"
    fi
    skafka_wait "$t0"
}

cmd_down_secure() {
    local pid
    mkdir -p "$RUN"
    take_lock
    pid="$(skafka_live_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$SKAFKA_PIDFILE"
        say "kafka-secure: not running"
        return 0
    fi
    stop_kafka_node kafka-secure "$pid" "$SKDIR/server.properties"
    rm -f "$SKAFKA_PIDFILE"
}

# Sourced (scripts/kafka_ha.sh), it only lends its settings and helpers.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

case "$CMD" in
    up)     cmd_up ;;
    down)   cmd_down ;;
    status) cmd_status ;;
    env)    cmd_env ;;
    restart-pg) cmd_restart_pg "${2:-}" ;;
    up-secure)   cmd_up_secure ;;
    down-secure) cmd_down_secure ;;
    *)
        echo "usage: $0 up|down|status|env|restart-pg orders|ledger|up-secure|down-secure" >&2
        exit 2
        ;;
esac
