#!/usr/bin/env bash
# make deb: builds outboxd_<VERSION>_<arch>.deb with debhelper in a copy of
# the tracked tree (as the working tree has it), so build/ and var/ never
# enter the package, then runs lintian on it. usage: packaging/deb.sh OUTDIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "$1" && cd "$1" && pwd)
version=$(cat VERSION)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/outboxd-$version"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$src" 2>/dev/null || true
# the changelog's version is VERSION's: written here, never kept by hand
cat >"$src/debian/changelog" <<CHANGES
outboxd ($version) unstable; urgency=medium

  * Release $version; the changes are in the repository's history.

 -- outboxd developers <outboxd@example.org>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}")
CHANGES
(cd "$src" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) ||
    { tail -40 "$work/build.log"; echo "deb: dpkg-buildpackage failed (log above)" >&2; exit 1; }
deb=$(ls "$work"/outboxd_"$version"_*.deb)
cp "$deb" "$out/"
echo "deb: $out/$(basename "$deb")"
lintian --fail-on error "$out/$(basename "$deb")" | tee "$out/lintian.txt"
