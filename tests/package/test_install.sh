#!/usr/bin/env bash
# make install DESTDIR=… puts every file in its FHS place, and make
# uninstall takes every one of them away again.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
fail() { echo "test_install: $*" >&2; exit 1; }

make -s install DESTDIR="$dest" PREFIX=/usr/local >/dev/null
for f in usr/local/sbin/outboxd usr/local/share/man/man8/outboxd.8 usr/local/share/man/man5/outboxd.conf.5 \
         usr/local/etc/outboxd/outboxd.conf usr/local/share/outboxd/outboxd-rules.yml \
         usr/local/share/outboxd/docs/DESIGN.md usr/local/lib/systemd/system/outboxd.service \
         usr/local/etc/logrotate.d/outboxd; do
    [[ -f $dest/$f ]] || fail "make install did not install /$f"
done
[[ $(stat -c %a "$dest/usr/local/etc/outboxd/outboxd.conf") == 640 ]] || fail "the config is not 0640"
grep -q '^ExecStart=/usr/local/sbin/outboxd -f -c /usr/local/etc/outboxd/outboxd.conf$' \
    "$dest/usr/local/lib/systemd/system/outboxd.service" || fail "the unit does not name the installed paths"
"$dest/usr/local/sbin/outboxd" -t -c "$dest/usr/local/etc/outboxd/outboxd.conf" >/dev/null ||
    fail "the installed config does not validate"
# an edited config survives a second install
echo "; edited" >>"$dest/usr/local/etc/outboxd/outboxd.conf"
make -s install DESTDIR="$dest" PREFIX=/usr/local >/dev/null
grep -q '^; edited$' "$dest/usr/local/etc/outboxd/outboxd.conf" || fail "make install overwrote an edited config"
out=$(make -s uninstall DESTDIR="$dest" PREFIX=/usr/local)
[[ $out == *"kept"*"outboxd.conf"* ]] || fail "uninstall did not say it kept the edited config: $out"
left=$(find "$dest" -type f)
[[ $left == "$dest/usr/local/etc/outboxd/outboxd.conf" ]] || fail "uninstall left: $left"
rm "$dest/usr/local/etc/outboxd/outboxd.conf"
make -s install DESTDIR="$dest" PREFIX=/usr/local >/dev/null
make -s uninstall DESTDIR="$dest" PREFIX=/usr/local >/dev/null
left=$(find "$dest" -type f)
[[ -z $left ]] || fail "uninstall left: $left"
echo "test_install: make install and make uninstall (DESTDIR, PREFIX=/usr/local): every file placed, then removed"
