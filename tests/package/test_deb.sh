#!/usr/bin/env bash
# The Debian package, installed for real on this machine: dpkg -i, every
# check an operator would make, then dpkg --purge and nothing left behind.
# PID 1 here is not systemd, so the unit is verified, not started.
# usage: test_deb.sh DEBDIR (make deb writes it there first)
set -euo pipefail
cd "$(dirname "$0")/../.."
debdir=${1:-build/deb}
fail() { echo "test_deb: $*" >&2; exit 1; }
((EUID == 0)) || { echo "test_deb: skipped: dpkg -i needs root"; exit 0; }
if dpkg-query -W -f='${Status}' outboxd 2>/dev/null | grep -q installed; then
    fail "an outboxd package is already installed here; this test would replace it"
fi

bash packaging/deb.sh "$debdir" >/dev/null
deb=$(ls "$debdir"/outboxd_"$(cat VERSION)"_*.deb)
grep -q '^E:' "$debdir/lintian.txt" && fail "lintian reports errors: $(cat "$debdir/lintian.txt")"
cleanup() { dpkg --purge outboxd >/dev/null 2>&1 || true; }
trap cleanup EXIT
dpkg -i "$deb" >/dev/null 2>&1 || { dpkg -i "$deb"; fail "dpkg -i failed"; }

conf=/etc/outboxd/outboxd.conf
[[ $(stat -c '%a %U:%G' $conf) == "640 root:outboxd" ]] || fail "$conf is $(stat -c '%a %U:%G' $conf)"
dpkg-query -W -f='${Conffiles}\n' outboxd | grep -q " $conf " || fail "$conf is not a conffile"
getent passwd outboxd | grep -q ':/usr/sbin/nologin$' || fail "no system user outboxd with nologin"
(( $(id -u outboxd) < 1000 )) || fail "outboxd is not a system user"
runuser -u outboxd -- /usr/sbin/outboxd -t -c $conf >/dev/null || fail "outboxd -t fails as the outboxd user"
/usr/sbin/outboxd --version | grep -qx "outboxd $(cat VERSION)" || fail "--version does not say $(cat VERSION)"
out=$(systemd-analyze verify /lib/systemd/system/outboxd.service 2>&1) || fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify complains: $out"
grep -q '^Type=notify$' /lib/systemd/system/outboxd.service || fail "the unit is not Type=notify"
grep -q '^PrivateDevices' /lib/systemd/system/outboxd.service && fail "PrivateDevices would hide /dev/shm"
for page in /usr/share/man/man8/outboxd.8.gz /usr/share/man/man5/outboxd.conf.5.gz; do
    err=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
    [[ -z $err ]] || fail "man -l $page: $err"
    MANWIDTH=80 man -l "$page" | grep -q 'outboxd' || fail "man -l $page rendered nothing"
done
files=$(dpkg -L outboxd)
for f in /usr/sbin/outboxd /usr/share/outboxd/outboxd-rules.yml /usr/share/outboxd/docs/DESIGN.md \
         /etc/logrotate.d/outboxd /lib/systemd/system/outboxd.service $conf; do
    grep -qx "$f" <<<"$files" || fail "dpkg -L does not list $f"
done
while read -r f; do
    [[ -e $f ]] || fail "dpkg -L lists $f, which is not there"
done <<<"$files"

dpkg --purge outboxd >/dev/null
trap - EXIT
while read -r f; do
    [[ -d $f || ! -e $f ]] || fail "purge left $f"
done <<<"$files"
for d in /etc/outboxd /var/log/outboxd /var/lib/outboxd /usr/share/outboxd \
         /etc/systemd/system/multi-user.target.wants/outboxd.service; do
    [[ ! -e $d ]] || fail "purge left $d"
done
echo "test_deb: $(basename "$deb"): installed, conffile 0640 root:outboxd, user outboxd, -t as outboxd, unit verified, man pages render, files where dpkg -L says; purged clean"
