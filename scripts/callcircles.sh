#!/usr/bin/env bash
# scripts/callcircles.sh: fails when two source files call each other,
# directly or through others, or when two folders include each other.
#
#   callcircles.sh calls FILE.ci...      call graph between files
#   callcircles.sh includes FILE.c...    #include graph between folders
#
# The call graph comes from gcc's -fcallgraph-info (one .ci per object,
# written beside it by the normal build), so it sees calls through shared
# internal headers that an #include check cannot. A call through a function
# pointer is not an edge: passing a callback down is how a lower file is
# meant to reach back up without knowing its caller.
set -euo pipefail

usage() { echo "usage: callcircles.sh calls FILE.ci... | includes FILE.c..." >&2; exit 2; }
[ $# -ge 2 ] || usage
what=$1; shift

# Prints "from to" per edge of the graph between files (calls) or folders (includes).
call_edges() {
    awk '
    FNR == 1 { tu = "" }
    /^graph: \{ title: "/ { tu = $0; sub(/^graph: \{ title: "/, "", tu); sub(/".*/, "", tu) }
    /^node: \{ title: "/ && !/shape : ellipse/ {
        title = $0; sub(/^node: \{ title: "/, "", title); sub(/".*/, "", title)
        if (index(title, ":") == 0) def[title] = tu
        local[FILENAME, title] = 1
    }
    /^edge: \{ sourcename: "/ {
        tgt = $0; sub(/.*targetname: "/, "", tgt); sub(/".*/, "", tgt)
        n++; etu[n] = tu; etgt[n] = tgt; efile[n] = FILENAME
    }
    END {
        for (i = 1; i <= n; i++) {
            if ((efile[i], etgt[i]) in local) continue
            if (!(etgt[i] in def) || def[etgt[i]] == etu[i]) continue
            e = etu[i] " " def[etgt[i]]
            if (!(e in seen)) { seen[e] = 1; print e }
        }
    }' "$@"
}

include_edges() {
    local f dir inc target
    for f in "$@"; do
        dir=$(dirname "$f")
        { grep -oE '^#include "[^"]+"' "$f" || true; } | sed -E 's/^#include "(.*)"$/\1/' | while read -r inc; do
            target=$(realpath -m --relative-to=. "$dir/$inc")
            [ "$(dirname "$target")" = "$dir" ] || echo "$dir $(dirname "$target")"
        done
    done | sort -u
}

# Reads "from to" edges; prints each circle's members once and exits 1 if any.
find_circles() {
    awk '
    { out[$1] = out[$1] " " $2; nodes[$1] = 1; nodes[$2] = 1 }
    function reaches(a, b,    q, head, tail, cur, k, m, parts, seen) {
        head = 1; tail = 1; q[1] = a; seen[a] = 1
        while (head <= tail) {
            cur = q[head++]
            m = split(out[cur], parts, " ")
            for (k = 1; k <= m; k++) {
                if (parts[k] == b) return 1
                if (!(parts[k] in seen)) { seen[parts[k]] = 1; q[++tail] = parts[k] }
            }
        }
        return 0
    }
    END {
        bad = 0
        for (a in nodes) {
            if (a in done) continue
            members = a
            for (b in nodes) if (b != a && reaches(a, b) && reaches(b, a)) { members = members " " b; done[b] = 1 }
            if (members != a) { print "circle: " members; bad = 1 }
        }
        exit bad
    }'
}

case $what in
    calls)    call_edges "$@" | find_circles ;;
    includes) include_edges "$@" | find_circles ;;
    *)        usage ;;
esac
