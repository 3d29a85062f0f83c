#!/usr/bin/env bash
# bench/peers/deps.sh: `make bench-peers-deps`. Fetches what the bench's
# peers section runs beside outboxd (bench/README.md), through Maven like the
# stack's Kafka jars (scripts/deps.sh), into var/peers/:
#
#   var/peers/connect/libs/                         Kafka Connect 4.3.0 worker (classpath)
#   var/peers/plugins/debezium-connector-postgres/  Debezium 3.6.1.Final (plugin.path)
#
# Fetched once: each directory carries a stamp of the pom it came from, so a
# second run costs nothing and a version bump in a pom fetches again.
#
# Usage: bash bench/peers/deps.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS="$ROOT/bench/peers"
VAR="$ROOT/var/peers"

log() { printf 'peers deps: %s\n' "$*" >&2; }
die() { printf 'peers deps: %s\n' "$*" >&2; exit 1; }

# fetch POM DIR [MVN_ARGS...]: POM's runtime jars into DIR, unless DIR's stamp names this POM.
fetch() {
    local pom="$1" dir="$2" sum
    shift 2
    sum="$(sha256sum "$pom" | cut -d' ' -f1)"
    if [[ -f "$dir/.complete" && "$(cat "$dir/.complete")" == "$sum" ]]; then
        log "up to date: ${dir#"$ROOT"/}"
        return
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn is not on PATH (make deps installs it)"
    # An empty directory first: jars of an older pom must not linger on a classpath.
    rm -rf "$dir"
    mkdir -p "$dir"
    local -a args=(-B -q -Dstyle.color=never -f "$pom" dependency:copy-dependencies "-DoutputDirectory=$dir" -DincludeScope=runtime "$@")
    if mvn -o "${args[@]}" >/dev/null 2>&1; then
        log "copied from the local Maven repository: ${dir#"$ROOT"/}"
    else
        log "fetching ${pom#"$ROOT"/} from Maven Central (once)"
        mvn "${args[@]}" || die "mvn could not fetch the jars of ${pom#"$ROOT"/} (see above)"
    fi
    printf '%s\n' "$sum" >"$dir/.complete"
    log "$(find "$dir" -name '*.jar' | wc -l) jars in ${dir#"$ROOT"/}"
}

fetch "$PEERS/connect/pom.xml" "$VAR/connect/libs"
# Connect's own API and client jars come from the worker: a second copy in
# the plugin directory would only be shadowed by them.
fetch "$PEERS/debezium/pom.xml" "$VAR/plugins/debezium-connector-postgres" -DexcludeGroupIds=org.apache.kafka
