#!/usr/bin/env bash
# The structure checker must fail on a circle, or its passing proves nothing:
# two files that call each other through a third, and two folders that
# include each other, each planted in a scratch directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p up down
printf 'void b(void);\nvoid a(void) { b(); }\n' >up/a.c
printf 'void c(void);\nvoid b(void) { c(); }\n' >down/b.c
printf 'void a(void);\nstatic void d(void) { a(); }\nvoid c(void) { d(); }\n' >down/c.c
printf 'void x(void) {}\n' >down/fine.c
for f in up/a.c down/b.c down/c.c down/fine.c; do gcc -fcallgraph-info -c -o "${f%.c}.o" "$f"; done
if bash "$here/scripts/callcircles.sh" calls up/a.ci down/b.ci down/c.ci down/fine.ci >out 2>&1; then
    echo "planted_circle: a call circle a.c -> b.c -> c.c -> a.c went unnoticed" >&2; exit 1
fi
grep -q 'circle: .*up/a.c' out && grep -q 'down/c.c' out && ! grep -q fine.c out ||
    { echo "planted_circle: wrong report:" >&2; cat out >&2; exit 1; }
bash "$here/scripts/callcircles.sh" calls down/b.ci down/fine.ci >/dev/null ||
    { echo "planted_circle: a one-way call was reported as a circle" >&2; exit 1; }
printf '#include "../down/h.h"\n' >up/u.h
printf '#include "../up/u.h"\n' >down/h.h
if bash "$here/scripts/callcircles.sh" includes up/u.h down/h.h >/dev/null 2>&1; then
    echo "planted_circle: an include circle up <-> down went unnoticed" >&2; exit 1
fi
echo "structure checker: catches the planted call and include circles"
