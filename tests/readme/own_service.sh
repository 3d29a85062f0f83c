#!/usr/bin/env bash
# tests/readme/own_service.sh: README's "Use it with your own service",
# run as written against the local stack: the sh block's commands, the
# last one (the relay in the foreground) in the background; then the event
# must be published and the admin listener answer. Cleans up what it made.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SERVER=postgresql://outboxd@127.0.0.1:55432/postgres
DB=postgresql://outboxd@127.0.0.1:55432/servicedb
PID=""

fail() { echo "README own-service: $*" >&2; exit 1; }
cleanup() {
    [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    psql -qX "$SERVER" -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                           WHERE database = 'servicedb' AND NOT active" >/dev/null 2>&1 || true
    psql -qX "$SERVER" -c 'DROP DATABASE IF EXISTS servicedb WITH (FORCE)' >/dev/null 2>&1 || true
}
trap cleanup EXIT

block="$(awk '/^## Use it with your own service/ { s = 1 } s && /^```sh/ { b = 1; next } b && /^```/ { exit } b { print }' README.md)"
[ -n "$block" ] || fail "no sh block under the section"
start="$(printf '%s\n' "$block" | grep '^build/outboxd -f ')" || fail "no foreground start line"
before="$(printf '%s\n' "$block" | sed '/^build\/outboxd -f /,$d')"

cleanup
psql -qX "$SERVER" -c 'CREATE DATABASE servicedb' >/dev/null      # "servicedb standing for your database"
bash -euo pipefail -c "$before" >/tmp/own_service.out 2>&1 || { cat /tmp/own_service.out; fail "the first commands failed"; }
bash -c "exec ${start%%#*}" >>/tmp/own_service.out 2>&1 &
PID=$!
for _ in $(seq 1 300); do
    n="$(psql -qXAt "$DB" -c 'SELECT count(*) FROM outboxd.outbox WHERE published' 2>/dev/null || echo 0)"
    [ "$n" = 1 ] && break
    kill -0 "$PID" 2>/dev/null || { cat /tmp/own_service.out; fail "outboxd exited"; }
    sleep 0.1
done
[ "$n" = 1 ] || { cat /tmp/own_service.out; fail "the emitted event was not published in 30 s"; }
code="$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9091/status.json)"
[ "$code" = 200 ] || fail "admin /status.json answered $code"
[ "$(psql -qXAt "$DB" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")" = 0 ] ||
    fail "migrate made tables of its own in the user's schema"
echo "README own-service: the section's commands emitted, published and served status as written"
