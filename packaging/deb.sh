#!/usr/bin/env bash
# make deb: builds outboxd_<VERSION>_<arch>.deb with debhelper in a copy of
# the tree as git sees it (tracked files as the working tree has them, plus
# files not yet added, minus what .gitignore names), so build/ and var/
# never enter the package, then runs lintian on it (its output also goes to
# OUTDIR/lintian.txt; an error fails the build). usage: packaging/deb.sh OUTDIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "$1" && cd "$1" && pwd)
version=$(cat VERSION)
[[ $version =~ ^[0-9]+(\.[0-9]+)*$ ]] || { echo "deb: VERSION holds \"$version\", not a version like 0.9.0" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/outboxd-$version"
mkdir -p "$src"
start=$SECONDS
# a tracked file deleted in the working tree is left out, as a build of the working tree would
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$src"
# The changelog's version is VERSION's, the one source of the version:
# written here, never kept by hand, so the two cannot differ.
cat >"$src/debian/changelog" <<CHANGES
outboxd ($version) unstable; urgency=medium

  * Release $version; the changes are in the repository's history.

 -- outboxd developers <outboxd@example.org>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}")
CHANGES
# The package's flags are dpkg-buildflags' alone: what `make deb` exports
# (USER_CFLAGS, the caller's CFLAGS as our Makefile expanded them, MAKEFLAGS)
# must not reach the package's own make.
unset USER_CFLAGS USER_LDFLAGS CFLAGS CPPFLAGS CXXFLAGS LDFLAGS MAKEFLAGS MFLAGS MAKELEVEL
(cd "$src" && DEB_BUILD_OPTIONS="parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) ||
    { tail -40 "$work/build.log"; echo "deb: dpkg-buildpackage failed (log above)" >&2; exit 1; }
deb=$(ls "$work"/outboxd_"$version"_*.deb)
rm -f "$out"/outboxd_*.deb
cp "$deb" "$out/"
deb="$out/$(basename "$deb")"
echo "deb: $deb (built in $((SECONDS - start)) s)"
# lintian warns when run as root: as nobody when we are root (the .deb is world-readable)
lint=(lintian --display-info --fail-on error "$deb")
((EUID == 0)) && lint=(runuser -u nobody -- env HOME="$work" "${lint[@]}")
chmod 0644 "$deb"
chmod 0755 "$work"
rc=0
"${lint[@]}" >"$out/lintian.txt" 2>&1 || rc=$?
cat "$out/lintian.txt"
((rc == 0)) || { echo "deb: lintian reports errors (above)" >&2; exit 1; }
echo "deb: lintian: no errors ($(grep -c '^W:' "$out/lintian.txt" || true) warnings, $(grep -c '^I:' "$out/lintian.txt" || true) info)"
