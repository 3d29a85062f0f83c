#!/usr/bin/env bash
# Installs what the build, the tests and the local stack need, and nothing else.
#
# Machines are handed over fresh from time to time, so everything the project
# relies on must be (re)installable from this script alone. It is cheap to run
# when everything is already present: no apt-get update, no network, no Maven.
#
# Usage: bash scripts/deps.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------
PACKAGES=(
    build-essential pkg-config
    libpq-dev librdkafka-dev libcivetweb-dev libmsgpack-dev libcriterion-dev
    libjansson-dev libinih-dev libssl-dev
    postgresql-15 postgresql-contrib
    wrk iptables procps
    chromium            # headless, for the status page test
    python3-psycopg     # examples/product-stock, run by tests/integration/test_example.c
    debhelper fakeroot lintian   # make deb and its package test
    systemd adduser logrotate    # the package test: systemd-analyze verify, the user, the logrotate snippet
    prometheus          # promtool and a live Prometheus for the alert rules' tests
)
# A JDK/Maven the user installed by other means is good enough; only pull in
# Debian's when nothing is on PATH, so we never fight a hand-picked toolchain.
command -v java >/dev/null 2>&1 || PACKAGES+=(openjdk-17-jre-headless)
command -v mvn  >/dev/null 2>&1 || PACKAGES+=(maven)

is_installed() {
    # "deinstall ok config-files" and friends count as missing.
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "apt: all ${#PACKAGES[@]} packages present"
        return
    fi

    local -a as_root=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 ||
            die "missing packages (${missing[*]}) and not root without sudo: install them as root, then rerun"
        as_root=(sudo)
    fi

    log "apt: installing ${missing[*]}"
    # One update only, and only when something is actually missing: it is the
    # slow, network-touching part.
    "${as_root[@]}" apt-get update -qq
    # Debian's prometheus starts a daemon on :9090 when installed; the tests run
    # their own, so a policy-rc.d refuses service starts during this install only.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        made_policy=1
    fi
    # env rather than a plain assignment so it survives sudo's env reset.
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        { ((made_policy)) && "${as_root[@]}" rm -f "$policy"; die "apt-get install failed"; }
    ((made_policy)) && "${as_root[@]}" rm -f "$policy"
    log "apt: installed ${#missing[@]} package(s)"
}

# ---------------------------------------------------------------------------
# Kafka jars (from Maven Central; there is no Debian package for Kafka)
# ---------------------------------------------------------------------------
install_kafka_jars() {
    local pom="$ROOT/scripts/kafka/pom.xml"
    local libs="$ROOT/var/kafka/libs"
    local stamp="$libs/.complete"
    local sum
    sum="$(sha256sum "$pom" | cut -d' ' -f1)"

    # The stamp ties the jar directory to the exact pom it came from, so a
    # version bump in the pom re-fetches, and a half-finished copy (no stamp)
    # is redone rather than trusted.
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
        log "kafka jars: up to date ($libs)"
        return
    fi

    command -v mvn >/dev/null 2>&1 || die "mvn not on PATH after the apt step"
    # Start from an empty directory so jars of an older pom cannot linger on
    # the classpath next to the new ones.
    rm -rf "$libs"
    mkdir -p "$libs"

    local -a mvn_args=(-B -q -f "$pom" dependency:copy-dependencies
                       "-DoutputDirectory=$libs" -DincludeScope=runtime)
    # Offline first: with a warm ~/.m2 this needs no network at all.
    if mvn -o "${mvn_args[@]}" >/dev/null 2>&1; then
        log "kafka jars: copied from the local Maven repository"
    else
        log "kafka jars: not all in ~/.m2, fetching from Maven Central"
        mvn "${mvn_args[@]}" || die "mvn could not fetch the Kafka jars (see output above)"
        log "kafka jars: fetched"
    fi
    printf '%s\n' "$sum" >"$stamp"
    log "kafka jars: $(find "$libs" -name '*.jar' | wc -l) jars in $libs"
}

install_packages
install_kafka_jars
