#!/usr/bin/env bash
# An orders PostgreSQL 15 pair on 127.0.0.1, beside the local stack, for the
# database failover tests: a primary and a hot standby streaming from it.
#
#   bash scripts/pg_ha.sh up [--sync|--async]     make or start what is down, wait until the standby streams
#   bash scripts/pg_ha.sh down                    stop both (fast shutdown)
#   bash scripts/pg_ha.sh kill-primary            kill -9 the primary's postmaster; its pid on stdout
#   bash scripts/pg_ha.sh stop-primary            SIGSTOP the primary's postmaster and its children (frozen, alive)
#   bash scripts/pg_ha.sh stop-standby            the same for the standby (commits then wait for it)
#   bash scripts/pg_ha.sh detach-standby          cut the standby off: it receives no more WAL (until promote or rebuild)
#   bash scripts/pg_ha.sh kill-old                after a promote: kill -9 the other node (ends a split brain)
#   bash scripts/pg_ha.sh cont                    SIGCONT what stop-primary or stop-standby froze (also cont-primary)
#   bash scripts/pg_ha.sh promote                 promote the standby: the roles swap
#   bash scripts/pg_ha.sh rebuild                 re-create the other node as a standby of the primary
#   bash scripts/pg_ha.sh reset [--sync|--async]  down, delete both data directories, up
#   bash scripts/pg_ha.sh dsn                     multi-host DSN (target_session_attrs=read-write)
#   bash scripts/pg_ha.sh dsn-primary|dsn-standby the current primary's / standby's DSN
#   bash scripts/pg_ha.sh status                  one line per node, then the mode; exit 3 unless one
#                                                 primary and one standby serve (a node down, frozen, two primaries)
#
# Nodes a (OB_PG_HA_PRIMARY_PORT, 26432) and b (OB_PG_HA_STANDBY_PORT,
# 26433): the variables name the roles the nodes start in; after a promote
# the roles swap and var/pg-ha/roles says which node is the primary now.
# Each node is an orders cluster as stack.sh makes it (its pg_init, so the
# same settings and auth; role outboxd and database orderdb by its
# pg_provision), plus wal_keep_size 512MB and hot_standby. No replication
# slot holds WAL for the standby: a slot lives on the primary and is gone
# after a failover, so the standby streams plainly and wal_keep_size covers
# its absences. The same goes for the relay's own logical slot (mode wal):
# PostgreSQL 15 does not carry logical slots to a standby.
#
# Sync mode (the default, or --sync): synchronous_standby_names =
# 'ha_standby' (the standby's application_name) and synchronous_commit = on,
# so a commit the primary acknowledges is on the standby too; --async: ''.
# The mode is recorded in var/pg-ha/mode and kept by up, rebuild and reset
# unless a flag changes it (up applies a changed mode to a live pair). It is
# set on the primary with ALTER SYSTEM, so it moves with base backups.
#
# promote leaves the new primary alone and asynchronous (a synchronous
# primary without its standby would hang every commit); rebuild brings the
# pair back to the recorded mode. Nothing here ever starts an old primary
# again: its WAL has forked from the new primary's, and started it would be
# a second primary. up refuses it; rebuild throws its data away.
#
# Ports sit below the kernel's ephemeral range (32768-60999), like the HA
# Kafka nodes', so no client socket ever holds one. Processes are signalled
# only by the pids in our pid files and the clusters' postmaster.pid, and
# (stop-primary, cont-primary) the children of that postmaster.
set -euo pipefail

HA_CMD="${1:-}"
# shellcheck source=scripts/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
CMD="pg-ha-$HA_CMD"

HA_NODES=(a b)
HA_PORT_A="${OB_PG_HA_PRIMARY_PORT:-26432}"
HA_PORT_B="${OB_PG_HA_STANDBY_PORT:-26433}"
HA_STATE="$VAR/pg-ha"
HA_MODE_FILE="$HA_STATE/mode"
HA_ROLES_FILE="$HA_STATE/roles"
HA_FROZEN_FILE="$HA_STATE/frozen"
HA_APP=ha_standby
HA_STREAM_S=60

# stack.sh maps cluster names to ports and databases for orders and ledger;
# the maps extended by the two nodes ("ha-a", "ha-b": data in var/pg-ha-a,
# log var/pg-ha-a.log, pid file var/run/pg-ha-a.pid) let its pg_init,
# pg_ready, pg_live_pid, pg_provision, pg_stop and pg_dsn serve them.
pg_port() {
    case "$1" in
        orders) echo "$PG_ORDERS_PORT" ;; ledger) echo "$PG_LEDGER_PORT" ;;
        ha-a) echo "$HA_PORT_A" ;; ha-b) echo "$HA_PORT_B" ;;
    esac
}
pg_db() { case "$1" in orders | ha-a | ha-b) echo orderdb ;; ledger) echo ledgerdb ;; esac; }

ha_port()     { pg_port "ha-$1"; }
ha_data()     { pg_data "ha-$1"; }
ha_port_var() { case "$1" in a) echo OB_PG_HA_PRIMARY_PORT ;; b) echo OB_PG_HA_STANDBY_PORT ;; esac; }
ha_other()    { if [[ "$1" == a ]]; then echo b; else echo a; fi; }

ha_primary() {
    local p=a
    [[ -s "$HA_ROLES_FILE" ]] && p="$(awk '$1 == "primary" { print $2 }' "$HA_ROLES_FILE")"
    [[ "$p" == a || "$p" == b ]] || die "$HA_ROLES_FILE names no primary (a or b); reset, or fix it by hand"
    echo "$p"
}
ha_standby() { ha_other "$(ha_primary)"; }

ha_set_roles() {
    local p="$1" s
    s="$(ha_other "$p")"
    mkdir -p "$HA_STATE"
    printf 'primary %s %s\nstandby %s %s\n' "$p" "$(ha_port "$p")" "$s" "$(ha_port "$s")" >"$HA_ROLES_FILE.tmp"
    mv "$HA_ROLES_FILE.tmp" "$HA_ROLES_FILE"
}

ha_recorded_mode() {
    local m=sync
    [[ -s "$HA_MODE_FILE" ]] && read -r m <"$HA_MODE_FILE"
    [[ "$m" == sync || "$m" == async ]] || die "$HA_MODE_FILE says '$m', not sync or async"
    echo "$m"
}

# ha_mode_arg ARGS...: the mode the flags ask for, or the recorded one.
ha_mode_arg() {
    local m a
    m="$(ha_recorded_mode)"
    for a in "$@"; do
        case "$a" in
            --sync) m=sync ;; --async) m=async ;;
            *) die "unknown option '$a' (expected --sync or --async)" ;;
        esac
    done
    echo "$m"
}

ha_preflight() {
    [[ "$ROOT" != *[[:space:]]* ]] || die "the checkout path '$ROOT' contains whitespace, which pg_ctl's option string cannot carry"
    local t
    for t in initdb pg_ctl pg_basebackup psql pg_isready; do
        [[ -x "$PG_BIN/$t" ]] || die "no $t in $PG_BIN (set OB_PG_BIN or run scripts/deps.sh)"
    done
    local p
    for p in "$HA_PORT_A" "$HA_PORT_B"; do
        if ! [[ "$p" =~ ^[0-9]{1,5}$ ]] || ((10#$p < 1 || 10#$p > 32767)); then
            die "port '$p' is not a number from 1 to 32767, below the ephemeral range (check OB_PG_HA_PRIMARY_PORT, OB_PG_HA_STANDBY_PORT)"
        fi
        case " $PG_ORDERS_PORT $PG_LEDGER_PORT $KAFKA_PORT $KAFKA_CONTROLLER_PORT " in
            *" $p "*) die "port $p is the local stack's (check OB_PG_HA_PRIMARY_PORT, OB_PG_HA_STANDBY_PORT)" ;;
        esac
    done
    [[ "$HA_PORT_A" != "$HA_PORT_B" ]] || die "both nodes are given port $HA_PORT_A"
    local n sock
    for n in "${HA_NODES[@]}"; do
        sock="$(pg_sock "ha-$n")/.s.PGSQL.$(ha_port "$n")"
        ((${#sock} < 108)) || die "socket path $sock is too long for a Unix socket; use a shorter checkout path"
    done
}

# ha_sql NODE SQL...: each statement on its own (ALTER SYSTEM refuses a
# transaction block), as the bootstrap superuser; bounded, so a frozen or
# dying server cannot hang us.
ha_sql() {
    local n="$1" q
    shift
    local -a c=()
    for q in "$@"; do c+=(-c "$q"); done
    PGCONNECT_TIMEOUT=3 timeout 15 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(ha_port "$n")" \
        -U postgres -d postgres -tA "${c[@]}"
}

# The state letter of a process (R, S, T = stopped, ...), or nothing.
proc_state() {
    local s
    s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    s="${s##*) }"
    echo "${s%% *}"
}
is_frozen() { [[ "$(proc_state "$1")" == [Tt] ]]; }

# A postmaster's children: every server process of a cluster is one.
pm_children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

# ha_role NODE: down, frozen, primary, standby, or unreachable (alive, not answering).
ha_role() {
    local pid r
    pid="$(pg_live_pid "ha-$1")"
    [[ -n "$pid" ]] || { echo down; return 0; }
    is_frozen "$pid" && { echo frozen; return 0; }
    r="$(ha_sql "$1" "SELECT pg_is_in_recovery()" 2>/dev/null)" || r=""
    case "$r" in t) echo standby ;; f) echo primary ;; *) echo unreachable ;; esac
}

# Appended to what stack.sh's pg_init writes (wal_level = logical,
# synchronous_commit = on, listen_addresses, ...), once; a standby gets its
# copy with the base backup. Later lines win, so the 16 slots and senders
# become 20.
ha_configure() {
    local data
    data="$(ha_data "$1")"
    if ! grep -q '^# --- scripts/pg_ha.sh' "$data/postgresql.conf"; then
        cat >>"$data/postgresql.conf" <<'EOF'

# --- scripts/pg_ha.sh: primary/standby pair (appended once; synchronous_standby_names is set by ALTER SYSTEM) ---
max_replication_slots = 20
max_wal_senders = 20
wal_keep_size = 512MB
hot_standby = on
EOF
    fi
    # The stack's auth (trust, loopback only), with replication spelled out.
    cat >"$data/pg_hba.conf" <<'EOF'
# Written by scripts/pg_ha.sh: the stack's trust auth on loopback, and
# replication connections for the standby and pg_basebackup.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
EOF
}

# stack.sh's pg_start, in the foreground: its starter pid lives in a
# variable named after the cluster, which "ha-a" cannot be, and the standby
# needs its primary up first anyway. pg_ctl -w returns once the server
# accepts connections (read-only ones, for a hot standby).
ha_start() {
    local n="$1" name data sock log port t0 pid deadline
    name="ha-$n"; data="$(ha_data "$n")"; sock="$(pg_sock "$name")"
    log="$(pg_log "$name")"; port="$(ha_port "$n")"
    rm -f "$(pg_pidfile "$name")"
    require_free_port "pg-$name" "$port" "$(ha_port_var "$n")"
    # A postmaster just killed stays a zombie until init reaps it (1.5 s
    # here), and the server refuses a postmaster.pid whose pid still exists.
    pid="$(read_pidfile "$data/postmaster.pid")"
    deadline=$(($(now_us) + 10000000))
    while [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && (($(now_us) < deadline)); do sleep 0.1; done
    touch "$log"
    pg_own "$log"
    pg_settings_upgrade "$data"
    mkdir -p "$sock"
    chmod 755 "$sock"
    pg_own "$sock"
    t0="$(now_us)"
    # shellcheck disable=SC2094 # pg_ctl appends to the log, as we do
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t "$PG_DEADLINE_S" \
        -o "-c port=$port -c unix_socket_directories='$sock' -c listen_addresses=127.0.0.1" \
        start >>"$log" 2>&1 9>&- ||
        fail "pg-$name" "pg-$name: did not start (or not within $PG_DEADLINE_S s)"
    pid="$(read_pidfile "$data/postmaster.pid")"
    echo "$pid" >"$(pg_pidfile "$name")"
    say "pg-$name: ready (pid $pid) on 127.0.0.1:$port in $(seconds_since "$t0") s"
}

# ha_basebackup NODE FROM: NODE's data directory made afresh as a standby of
# FROM; into a scratch directory renamed at the end, as pg_init does.
ha_basebackup() {
    local n="$1" from="$2" data tmp log t0
    data="$(ha_data "$n")"; tmp="$data.init"; log="$(pg_log "ha-$n")"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    chmod 700 "$tmp"
    touch "$log"
    pg_own "$tmp" "$log"
    t0="$(now_us)"
    # -R writes standby.signal and primary_conninfo (with the application_name
    # the primary's synchronous_standby_names names); -X stream brings the WAL
    # written meanwhile, over a temporary slot that ends with the backup.
    as_pg "$PG_BIN/pg_basebackup" -D "$tmp" -R -X stream -c fast \
        -d "host=127.0.0.1 port=$(ha_port "$from") user=postgres application_name=$HA_APP" >>"$log" 2>&1 9>&- ||
        fail "pg-ha-$n" "pg-ha-$n: pg_basebackup from pg-ha-$from failed"
    if [[ ! -f "$tmp/standby.signal" ]] || ! grep -q "application_name=$HA_APP" "$tmp/postgresql.auto.conf"; then
        fail "pg-ha-$n" "pg-ha-$n: the base backup has no standby.signal or no primary_conninfo naming $HA_APP"
    fi
    mv "$tmp" "$data"
    say "pg-ha-$n: base backup of pg-ha-$from taken in $(seconds_since "$t0") s"
}

# ha_apply_mode PRIMARY MODE: synchronous_standby_names as the mode has it.
ha_apply_mode() {
    local p="$1" mode="$2" want cur
    want=""
    [[ "$mode" == sync ]] && want="$HA_APP"
    cur="$(ha_sql "$p" "SHOW synchronous_standby_names")" || fail "pg-ha-$p" "pg-ha-$p: cannot read synchronous_standby_names"
    [[ "$cur" == "$want" ]] && return 0
    ha_sql "$p" "ALTER SYSTEM SET synchronous_standby_names = '$want'" "SELECT pg_reload_conf()" >/dev/null ||
        fail "pg-ha-$p" "pg-ha-$p: could not set synchronous_standby_names"
    say "pg-ha-$p: synchronous_standby_names = '$want' ($mode)"
}

# ha_wait_streaming PRIMARY STANDBY MODE T0: until the primary shows the
# standby streaming (and, in sync mode, as its synchronous standby).
ha_wait_streaming() {
    local p="$1" s="$2" mode="$3" t0="$4" deadline r=""
    deadline=$(($(now_us) + HA_STREAM_S * 1000000))
    while :; do
        r="$(ha_sql "$p" "SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = '$HA_APP'" 2>/dev/null)" || r=""
        [[ "$r" == "streaming $mode" ]] && break
        [[ -n "$(pg_live_pid "ha-$s")" ]] || fail "pg-ha-$s" "pg-ha-$s: exited while waiting for it to stream"
        (($(now_us) < deadline)) ||
            fail "pg-ha-$s" "pg-ha-$s: not streaming ($mode) to pg-ha-$p within $HA_STREAM_S s (pg_stat_replication: '${r:-no row}')"
        sleep 0.1
    done
    say "pg-ha-$s: streaming from pg-ha-$p, sync_state $mode, in $(seconds_since "$t0") s (its base backup or start, and catch-up)"
}

# Thaw a frozen node first, or its fast shutdown waits out pg_ctl's timeout.
ha_thaw() {
    local pid kid
    pid="$(pg_live_pid "ha-$1")"
    [[ -n "$pid" ]] || return 0
    local -a kids=()
    mapfile -t kids < <(pm_children "$pid")
    for kid in "${kids[@]}"; do kill -CONT "$kid" 2>/dev/null || true; done
    kill -CONT "$pid" 2>/dev/null || true
}

ha_stop() {
    local pid
    pid="$(pg_live_pid "ha-$1")"
    if [[ -n "$pid" ]] && is_frozen "$pid"; then
        ha_thaw "$1"
        say "pg-ha-$1: was frozen, sent SIGCONT before stopping"
    fi
    pg_stop "ha-$1"
}

# ha_wait_ready NODE: a server that runs but does not accept connections yet.
ha_wait_ready() {
    local deadline
    deadline=$(($(now_us) + PG_DEADLINE_S * 1000000))
    until pg_ready "ha-$1"; do
        (($(now_us) < deadline)) || fail "pg-ha-$1" "pg-ha-$1: running but not accepting connections within $PG_DEADLINE_S s"
        sleep 0.2
    done
}

# ha_bring_up NODE ROLE: NODE running in ROLE (starting it if it is down).
ha_bring_up() {
    local n="$1" want="$2" pid role
    pid="$(pg_live_pid "ha-$n")"
    if [[ -n "$pid" ]]; then
        is_frozen "$pid" && die "pg-ha-$n: frozen (pid $pid, SIGSTOP); run cont-primary first"
        echo "$pid" >"$(pg_pidfile "ha-$n")"
        ha_wait_ready "$n"
        say "pg-ha-$n: already running (pid $pid)"
    else
        ha_start "$n"
        HA_STARTED+=("$n")
    fi
    role="$(ha_role "$n")"
    [[ "$role" == "$want" ]] && return 0
    if [[ "$want" == standby && "$role" == primary ]]; then
        die "pg-ha-$n: runs as a primary, but $HA_ROLES_FILE says pg-ha-$(ha_primary) is the primary (split brain); run rebuild"
    fi
    die "pg-ha-$n: is $role, expected $want (roles in $HA_ROLES_FILE)"
}

# The body of up (and of reset, rebuild's tail); the caller holds the lock.
ha_up_pair() {
    local mode="$1" t0 p s sdata t1
    t0="$(now_us)"
    HA_STARTED=()
    pg_prepare_user
    mkdir -p "$HA_STATE"
    if [[ ! -f "$(ha_data a)/PG_VERSION" && ! -f "$(ha_data b)/PG_VERSION" ]]; then
        rm -f "$HA_ROLES_FILE" "$HA_FROZEN_FILE"
    fi
    p="$(ha_primary)"; s="$(ha_other "$p")"
    echo "$mode" >"$HA_MODE_FILE"

    if [[ ! -f "$(ha_data "$p")/PG_VERSION" ]]; then
        [[ ! -f "$(ha_data "$s")/PG_VERSION" ]] ||
            die "pg-ha-$p, the recorded primary, has no data directory but pg-ha-$s has one; reset"
        touch "$(pg_log "ha-$p")"   # pg_init chowns it, and only pg_start makes it
        pg_init "ha-$p"
    fi
    ha_configure "$p"
    ha_set_roles "$p"
    ha_bring_up "$p" primary
    pg_provision "ha-$p"

    sdata="$(ha_data "$s")"
    t1="$(now_us)"
    if [[ ! -f "$sdata/PG_VERSION" ]]; then
        ha_basebackup "$s" "$p"
    elif [[ -z "$(pg_live_pid "ha-$s")" && ! -f "$sdata/standby.signal" ]]; then
        die "pg-ha-$s: an old primary (no standby.signal); starting it would make a second primary: run rebuild"
    fi
    ha_bring_up "$s" standby
    ha_apply_mode "$p" "$mode"
    ha_wait_streaming "$p" "$s" "$mode" "$t1"
    say "pair up in $(seconds_since "$t0") s (started: ${HA_STARTED[*]:-none}); primary pg-ha-$p :$(ha_port "$p"), standby pg-ha-$s :$(ha_port "$s"), mode $mode"
    say "dsn $(ha_dsn)"
}

ha_down_pair() {
    local p
    p="$(ha_primary)"
    # the primary first, so the standby still receives its shutdown checkpoint
    ha_stop "$p"
    ha_stop "$(ha_other "$p")"
    rm -f "$HA_FROZEN_FILE"
}

# The recorded primary's live postmaster pid, from its postmaster.pid.
ha_primary_pid() {
    local p="$1" data pid
    data="$(ha_data "$p")"
    pid="$(read_pidfile "$data/postmaster.pid")"
    is_ours "$pid" "$data" || die "pg-ha-$p is not running"
    echo "$pid"
}

cmd_kill_primary() {
    local p pid kid
    local -a kids=()
    p="$(ha_primary)"
    pid="$(ha_primary_pid "$p")"
    # a frozen postmaster's children would stay frozen orphans: thaw them after
    is_frozen "$pid" && mapfile -t kids < <(pm_children "$pid")
    kill -KILL "$pid"
    for kid in "${kids[@]}"; do kill -CONT "$kid" 2>/dev/null || true; done
    # a frozen standby stays frozen (and recorded) until cont
    [[ -s "$HA_FROZEN_FILE" && "$(<"$HA_FROZEN_FILE")" == "$p" ]] && rm -f "$HA_FROZEN_FILE"
    say "pg-ha-$p: killed the primary's postmaster (pid $pid, SIGKILL) on 127.0.0.1:$(ha_port "$p")" >&2
    echo "$pid"
}

# After a promote: kill -9 the other node (the old primary, resumed after a
# stop-primary: the split brain ends).
cmd_kill_old() {
    local n pid
    n="$(ha_other "$(ha_primary)")"
    pid="$(pg_live_pid "ha-$n")"
    [[ -n "$pid" ]] || { say "pg-ha-$n: not running"; return 0; }
    is_frozen "$pid" && ha_thaw "$n"
    kill -KILL "$pid"
    [[ -s "$HA_FROZEN_FILE" && "$(<"$HA_FROZEN_FILE")" == "$n" ]] && rm -f "$HA_FROZEN_FILE"
    say "pg-ha-$n: killed (pid $pid, SIGKILL); pg-ha-$(ha_primary) is the only primary"
}

# Freeze the primary or (role standby) the standby: alive, silent.
cmd_freeze() {
    local role="$1" p pid kid deadline
    local -a kids=()
    p="$(ha_primary)"
    [[ "$role" == standby ]] && p="$(ha_other "$p")"
    pid="$(ha_primary_pid "$p")"
    is_frozen "$pid" && { say "pg-ha-$p: already frozen (pid $pid)"; return 0; }
    # The postmaster first and wait for it to stop, so it forks nobody after
    # its children are listed.
    kill -STOP "$pid"
    deadline=$(($(now_us) + 5000000))
    until is_frozen "$pid"; do
        (($(now_us) < deadline)) || die "pg-ha-$p: postmaster $pid did not stop within 5 s of SIGSTOP"
        sleep 0.05
    done
    mapfile -t kids < <(pm_children "$pid")
    for kid in "${kids[@]}"; do kill -STOP "$kid" 2>/dev/null || true; done
    echo "$p" >"$HA_FROZEN_FILE"
    say "pg-ha-$p: froze the $role: postmaster pid $pid and ${#kids[@]} children (SIGSTOP) ${kids[*]}"
}

cmd_cont_primary() {
    local n pid kid role
    local -a kids=()
    [[ -s "$HA_FROZEN_FILE" ]] || { say "nothing frozen"; return 0; }
    read -r n <"$HA_FROZEN_FILE"
    [[ "$n" == a || "$n" == b ]] || die "$HA_FROZEN_FILE names no node"
    pid="$(pg_live_pid "ha-$n")"
    [[ -n "$pid" ]] || die "pg-ha-$n: not running"
    mapfile -t kids < <(pm_children "$pid")
    for kid in "${kids[@]}"; do kill -CONT "$kid" 2>/dev/null || true; done
    kill -CONT "$pid"
    rm -f "$HA_FROZEN_FILE"
    role="$(ha_role "$n")"
    say "pg-ha-$n: resumed (SIGCONT) postmaster pid $pid and ${#kids[@]} children; it answers as $role"
    if [[ "$role" == primary && "$n" != "$(ha_primary)" ]]; then
        say "pg-ha-$n: split brain: it is a primary too, but pg-ha-$(ha_primary) is the recorded one"
    fi
}

# Cut the standby off from the primary, both alive: its walreceiver is
# pointed at nowhere, so no WAL after this reaches it (a frozen standby is no
# such cut: the WAL already in its socket arrives when it is resumed). In
# sync mode every commit then waits; a cancelled wait commits on the primary
# alone. promote and rebuild end it.
cmd_detach_standby() {
    local p s deadline
    p="$(ha_primary)"; s="$(ha_other "$p")"
    ha_sql "$s" "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 application_name=$HA_APP'" \
        "SELECT pg_reload_conf()" >/dev/null
    deadline=$(($(now_us) + 10000000))
    while [[ -n "$(ha_sql "$p" "SELECT 1 FROM pg_stat_replication WHERE application_name = '$HA_APP'")" ]]; do
        (($(now_us) < deadline)) || die "pg-ha-$s: still streaming 10 s after it was detached"
        sleep 0.05
    done
    say "pg-ha-$s: detached from pg-ha-$p (streams nothing; promote or rebuild ends it)"
}

cmd_promote() {
    local p s t0 role pid
    p="$(ha_primary)"; s="$(ha_other "$p")"
    role="$(ha_role "$s")"
    [[ "$role" == standby ]] || die "pg-ha-$s, the recorded standby, is $role, not a standby"
    t0="$(now_us)"
    as_pg "$PG_BIN/pg_ctl" -D "$(ha_data "$s")" -w -t 60 promote >>"$(pg_log "ha-$s")" 2>&1 ||
        fail "pg-ha-$s" "pg-ha-$s: pg_ctl promote failed"
    [[ "$(ha_role "$s")" == primary ]] || fail "pg-ha-$s" "pg-ha-$s: still in recovery after pg_ctl promote"
    say "pg-ha-$s: promoted in $(seconds_since "$t0") s; primary now 127.0.0.1:$(ha_port "$s")"
    ha_set_roles "$s"
    # Alone now: a synchronous primary without its standby would hang every
    # commit. And no primary_conninfo left to copy into the next standby.
    ha_sql "$s" "ALTER SYSTEM SET synchronous_standby_names = ''" "ALTER SYSTEM RESET primary_conninfo" \
        "SELECT pg_reload_conf()" >/dev/null || fail "pg-ha-$s" "pg-ha-$s: could not reset its replication settings"
    say "pg-ha-$s: runs alone and asynchronous until rebuild (recorded mode $(ha_recorded_mode))"
    pid="$(pg_live_pid "ha-$p")"
    if [[ -n "$pid" ]]; then
        say "pg-ha-$p: the old primary still has a live postmaster (pid $pid, $(ha_role "$p")): two primaries until rebuild"
    else
        say "pg-ha-$p: the old primary is down; rebuild re-creates it as a standby"
    fi
}

cmd_rebuild() {
    local p s mode t0 deadline
    p="$(ha_primary)"; s="$(ha_other "$p")"
    mode="$(ha_recorded_mode)"
    [[ "$(ha_role "$p")" == primary ]] || die "pg-ha-$p, the recorded primary, is $(ha_role "$p"); promote or up first"
    t0="$(now_us)"
    pg_prepare_user
    ha_stop "$s"
    rm -f "$HA_FROZEN_FILE"
    # the killed postmaster's listener is gone with it; wait out a slow exit anyway
    deadline=$(($(now_us) + 10000000))
    while port_taken "$(ha_port "$s")" && (($(now_us) < deadline)); do sleep 0.2; done
    rm -rf "$(ha_data "$s")" "$(ha_data "$s").init"
    say "pg-ha-$s: data directory removed"
    ha_up_pair "$mode"
    say "pg-ha-$s: rebuilt as standby of pg-ha-$p in $(seconds_since "$t0") s"
}

cmd_reset() {
    local mode="$1" n
    ha_down_pair
    for n in "${HA_NODES[@]}"; do
        [[ -z "$(pg_live_pid "ha-$n")" ]] || die "pg-ha-$n: still running after down"
        rm -rf "$(ha_data "$n")" "$(ha_data "$n").init"
    done
    rm -f "$HA_ROLES_FILE" "$HA_FROZEN_FILE"
    say "both data directories removed"
    ha_up_pair "$mode"
}

# stack.sh's pg_dsn with both hosts, so the user (and any password) stays its.
ha_dsn() {
    local one
    one="$(pg_dsn ha-a)"   # postgresql://outboxd@127.0.0.1:PORT/orderdb
    echo "${one%%@*}@127.0.0.1:$HA_PORT_A,127.0.0.1:$HA_PORT_B/${one##*/}?target_session_attrs=read-write"
}

cmd_status() {
    local n pid role extra all=1 p r mode cur="(primary not serving)"
    p="$(ha_primary)"
    mode="$(ha_recorded_mode)"
    for n in "${HA_NODES[@]}"; do
        pid="$(pg_live_pid "ha-$n")"
        role="$(ha_role "$n")"
        extra=""
        case "$role" in
            primary)
                r="$(ha_sql "$n" "SELECT state || ', sync_state ' || sync_state || ', flush lag '
                                     || pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn) || ' bytes / '
                                     || COALESCE(flush_lag::text, '0')
                                  FROM pg_stat_replication WHERE application_name = '$HA_APP'" 2>/dev/null)" || r=""
                extra="  standby: ${r:-none connected}"
                if [[ "$n" == "$p" ]]; then
                    cur="'$(ha_sql "$n" "SHOW synchronous_standby_names" 2>/dev/null || echo '?')'"
                else
                    extra="$extra  SPLIT BRAIN: pg-ha-$p is the recorded primary"
                    all=0
                fi
                ;;
            standby) ;;
            *) all=0 ;;
        esac
        [[ -f "$(ha_data "$n")/PG_VERSION" ]] || extra="$extra  (no data directory)"
        printf 'pg-ha-%s  pid %-8s port %-6s %-8s%s\n' "$n" "${pid:--}" "$(ha_port "$n")" "$role" "$extra"
    done
    printf "mode %s (recorded); primary pg-ha-%s: synchronous_standby_names %s\n" "$mode" "$p" "$cur"
    ((all)) || exit 3
}

# Every command that changes something holds stack.sh's lock.
ha_locked() {
    ha_preflight
    mkdir -p "$RUN" "$HA_STATE"
    take_lock
}

case "$HA_CMD" in
    up)           shift; mode="$(ha_mode_arg "$@")"; ha_locked; ha_up_pair "$mode" ;;
    down)         ha_locked; ha_down_pair ;;
    kill-primary) ha_locked; cmd_kill_primary ;;
    stop-primary) ha_locked; cmd_freeze primary ;;
    stop-standby) ha_locked; cmd_freeze standby ;;
    detach-standby) ha_locked; cmd_detach_standby ;;
    kill-old)     ha_locked; cmd_kill_old ;;
    cont-primary | cont-standby | cont) ha_locked; cmd_cont_primary ;;
    promote)      ha_locked; cmd_promote ;;
    rebuild)      ha_locked; cmd_rebuild ;;
    reset)        shift; mode="$(ha_mode_arg "$@")"; ha_locked; cmd_reset "$mode" ;;
    dsn)          ha_dsn ;;
    dsn-primary)  pg_dsn "ha-$(ha_primary)" ;;
    dsn-standby)  pg_dsn "ha-$(ha_standby)" ;;
    status)       cmd_status ;;
    *)
        echo "usage: $0 up [--sync|--async]|down|kill-primary|kill-old|stop-primary|stop-standby|detach-standby|cont|promote|rebuild|reset [--sync|--async]|dsn|dsn-primary|dsn-standby|status" >&2
        exit 2
        ;;
esac
