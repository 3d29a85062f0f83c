#!/usr/bin/env bash
# Renders the fault suite's rows (tests/fault/fixture.c, one per scenario)
# as the markdown table of var/chaos/report.md.
set -euo pipefail
rows="${1:?usage: chaos_report.sh rows.tsv}"
cores="$(nproc)"
mem="$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "# outboxd fault suite"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $cores cores, $mem, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
echo "Each scenario: its own databases and topic, client processes recording every"
echo "outcome, one fault, heal, wait for order totals = ledger totals, then the checker"
echo "over orderdb, the outbox, the whole Kafka topic and the ledger (tests/fault/)."
echo "Negative controls run deliberately broken modes; there the checker must flag."
echo
echo "| scenario | HTTP attempts | requests | acked | unavailable | unknown resolved (committed/absent) | 5xx other than 503 | lost | phantom | duplicate | order violations | mismatch | convergence s | verdict |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
if [[ -s "$rows" ]]; then
    awk -F'\t' '{ printf "| %s |", $1; for (i = 2; i <= NF; i++) printf " %s |", $i; printf "\n" }' "$rows"
else
    echo "| (no scenario finished) | | | | | | | | | | | | | |"
fi
