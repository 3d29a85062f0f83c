#!/usr/bin/env bash
# The Debian package, installed for real on this machine: dpkg -i, every
# check an operator would make, a reinstall over an edited config, a remove,
# then dpkg --purge and nothing left behind. The machine is left as it was
# found: the package leaves its system user on purge (Debian practice, and
# asserted here), so the test deletes that user when it created it.
# PID 1 here is not systemd, so the unit is verified, not started.
# usage: test_deb.sh [DEBDIR]   builds the .deb into DEBDIR (build/deb) with
#        packaging/deb.sh; OB_DEB=path/to/outboxd_*.deb takes a built one.
set -euo pipefail
cd "$(dirname "$0")/../.."
debdir=${1:-build/deb}
version=$(cat VERSION)
conf=/etc/outboxd/outboxd.conf
unit=/lib/systemd/system/outboxd.service
fail() { echo "test_deb: $*" >&2; exit 1; }
((EUID == 0)) || { echo "test_deb: skipped: dpkg -i needs root"; exit 0; }
[[ -z $(dpkg-query -W -f='${Status}' outboxd 2>/dev/null || true) ]] ||
    fail "an outboxd package is known to dpkg here ($(dpkg-query -W -f='${Status}' outboxd)); this test would replace it"
for d in /etc/outboxd /var/log/outboxd /var/lib/outboxd /run/outboxd; do
    [[ ! -e $d ]] || fail "$d exists; the purge this test makes would delete it"
done

# What the machine was like, to leave it so.
had_user=0
getent passwd outboxd >/dev/null && had_user=1
statoverride_before=$(cat /var/lib/dpkg/statoverride)
tmp=$(mktemp -d)
fake_pid=

cleanup() {
    [[ -n $fake_pid ]] && kill "$fake_pid" 2>/dev/null || true
    [[ -n $(dpkg-query -W -f='${Status}' outboxd 2>/dev/null || true) ]] && dpkg --purge outboxd >/dev/null 2>&1 || true
    rm -rf /run/outboxd "$tmp"
    if ((had_user == 0)) && getent passwd outboxd >/dev/null; then
        userdel outboxd
        getent group outboxd >/dev/null && groupdel outboxd || true
    fi
}
trap cleanup EXIT

t0=$SECONDS
if [[ -n ${OB_DEB:-} ]]; then
    deb=$OB_DEB
else
    bash packaging/deb.sh "$debdir" >"$tmp/deb.log" 2>&1 || { cat "$tmp/deb.log"; fail "make deb failed"; }
    deb=$(ls "$debdir"/outboxd_"${version}"_*.deb)
fi
t_build=$((SECONDS - t0))
[[ $(dpkg-deb -f "$deb" Version) == "$version" ]] || fail "$deb is version $(dpkg-deb -f "$deb" Version), VERSION says $version"

dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg -i failed"; }

# --- the installed files -----------------------------------------------------
files=$(dpkg -L outboxd)
for f in /usr/sbin/outboxd $conf $unit /etc/logrotate.d/outboxd \
         /usr/share/man/man8/outboxd.8.gz /usr/share/man/man5/outboxd.conf.5.gz \
         /usr/share/outboxd/outboxd-rules.yml /usr/share/outboxd/docs/DESIGN.md /usr/share/outboxd/docs/CONFIG.md \
         /usr/share/doc/outboxd/copyright; do
    grep -qx "$f" <<<"$files" || fail "dpkg -L does not list $f"
done
while read -r f; do
    [[ -e $f ]] || fail "dpkg -L lists $f, which is not there"
done <<<"$files"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' outboxd)
for f in $conf /etc/logrotate.d/outboxd; do
    grep -q "^ $f [0-9a-f]\{32\}$" <<<"$conffiles" || fail "$f is not a conffile: $conffiles"
done

# dpkg-buildflags reached the compiler and the linker
# (outputs captured first: grep -q closing a pipe early fails it under pipefail)
dyn=$(readelf -d /usr/sbin/outboxd); syms=$(nm -D /usr/sbin/outboxd)
grep -q 'BIND_NOW' <<<"$dyn" || fail "/usr/sbin/outboxd is not linked with -z now"
grep -q '__stack_chk_fail' <<<"$syms" || fail "/usr/sbin/outboxd has no stack protector"
grep -q '_chk@' <<<"$syms" || fail "/usr/sbin/outboxd has no _FORTIFY_SOURCE checks"

# --- the user and the config ---------------------------------------------------
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd outboxd) || fail "no user outboxd"
sys_uid_max=$(awk '$1 == "SYS_UID_MAX" {print $2}' /etc/login.defs); sys_uid_max=${sys_uid_max:-999}
((uid > 0 && uid <= sys_uid_max)) || fail "outboxd has uid $uid, not a system user's (<= $sys_uid_max)"
[[ $shell == /usr/sbin/nologin ]] || fail "outboxd's shell is $shell, not /usr/sbin/nologin"
[[ $home == /var/lib/outboxd ]] || fail "outboxd's home is $home"
[[ $(getent group outboxd | cut -d: -f3) == "$gid" ]] || fail "outboxd's primary group is not the group outboxd"
[[ $(stat -c '%a %U:%G' $conf) == "640 root:outboxd" ]] || fail "$conf is $(stat -c '%a %U:%G' $conf), not 640 root:outboxd"
[[ $(dpkg-statoverride --list $conf) == "root outboxd 640 $conf" ]] || fail "no statoverride root outboxd 640 for $conf"

/usr/sbin/outboxd -t -c $conf >/dev/null || fail "outboxd -t fails as root"
runuser -u outboxd -- /usr/sbin/outboxd -t -c $conf >/dev/null || fail "outboxd -t fails as the outboxd user"
if runuser -u nobody -- /usr/sbin/outboxd -t -c $conf >/dev/null 2>&1; then
    fail "user nobody can read $conf"
fi
[[ $(/usr/sbin/outboxd --version | head -1) == "outboxd $version" ]] ||
    fail "--version says '$(/usr/sbin/outboxd --version | head -1)', not 'outboxd $version'"

# --- the unit -------------------------------------------------------------------
out=$(systemd-analyze verify $unit 2>&1) || fail "systemd-analyze verify $unit: $out"
[[ -z $out ]] || fail "systemd-analyze verify $unit complains: $out"
grep -qx 'Type=notify' $unit || fail "the unit is not Type=notify"
grep -qx 'ExecStart=/usr/sbin/outboxd -f -c /etc/outboxd/outboxd.conf' $unit || fail "the unit's ExecStart does not name the packaged paths"
grep -q '^PrivateDevices' $unit && fail "PrivateDevices would hide /dev/shm from outboxd status"
[[ ! -e /etc/systemd/system/multi-user.target.wants/outboxd.service ]] ||
    fail "the package enabled the unit; it must wait for the operator's config and migrate"

# --- the man pages ----------------------------------------------------------------
for page in /usr/share/man/man8/outboxd.8.gz /usr/share/man/man5/outboxd.conf.5.gz; do
    err=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
    [[ -z $err ]] || fail "man -l $page warns: $err"
    text=$(MANWIDTH=80 man -l "$page" 2>/dev/null)
    grep -q 'outboxd' <<<"$text" || fail "man -l $page rendered nothing"
done

# --- what the service would write, then logrotate --------------------------------
# as systemd would make them: LogsDirectory=, StateDirectory=, RuntimeDirectory=
install -d -o outboxd -g outboxd -m 0750 /var/log/outboxd /var/lib/outboxd
install -d -o outboxd -g outboxd -m 0755 /run/outboxd
install -o outboxd -g outboxd -m 0600 /dev/null /var/lib/outboxd/.pgpass
shm=/dev/shm/outboxd-pkgtest-$$
install -o outboxd -g outboxd -m 0600 /dev/null "$shm"
echo 'level=info msg="before rotation"' | install -o outboxd -g outboxd -m 0640 /dev/stdin /var/log/outboxd/outboxd.log
# a stand-in supervisor, as outboxd, that notes the USR1 logrotate must send it
# (setpriv execs, so $! is the process itself, as MainPID would be)
setpriv --reuid=outboxd --regid=outboxd --init-groups -- \
    bash -c 'trap "echo usr1 >/run/outboxd/usr1; exit 0" USR1; while :; do sleep 0.1; done' &
fake_pid=$!
sleep 0.3
echo "$fake_pid" >/run/outboxd/outboxd.pid
logrotate -f -s "$tmp/logrotate.state" /etc/logrotate.d/outboxd 2>"$tmp/logrotate.err" ||
    fail "logrotate failed: $(cat "$tmp/logrotate.err")"
[[ ! -s $tmp/logrotate.err ]] || fail "logrotate complains: $(cat "$tmp/logrotate.err")"
grep -q 'before rotation' /var/log/outboxd/outboxd.log.1 || fail "logrotate did not rotate outboxd.log"
[[ $(stat -c '%a %U:%G' /var/log/outboxd/outboxd.log) == "640 outboxd:outboxd" ]] ||
    fail "the new outboxd.log is $(stat -c '%a %U:%G' /var/log/outboxd/outboxd.log)"
for _ in $(seq 50); do [[ -e /run/outboxd/usr1 ]] && break; sleep 0.1; done
[[ -e /run/outboxd/usr1 ]] || fail "logrotate's postrotate did not send USR1 to the pid in /run/outboxd/outboxd.pid"
wait "$fake_pid" 2>/dev/null || true
fake_pid=

# --- an upgrade keeps an edited config and its mode ------------------------------
echo '; edited by the operator' >>$conf
dpkg -i "$deb" >"$tmp/dpkg2.log" 2>&1 || { cat "$tmp/dpkg2.log"; fail "dpkg -i over the installed package failed"; }
grep -qx '; edited by the operator' $conf || fail "reinstalling replaced the edited $conf"
[[ $(stat -c '%a %U:%G' $conf) == "640 root:outboxd" ]] || fail "after reinstalling, $conf is $(stat -c '%a %U:%G' $conf)"

# --- remove keeps the config, purge takes everything ------------------------------
dpkg --remove outboxd >/dev/null
[[ ! -e /usr/sbin/outboxd ]] || fail "dpkg --remove left /usr/sbin/outboxd"
[[ -e $conf ]] || fail "dpkg --remove deleted the conffile $conf (only purge may)"
dpkg --purge outboxd >/dev/null
while read -r f; do
    [[ -d $f || ! -e $f ]] || fail "purge left $f"
done <<<"$files"
for d in /etc/outboxd /var/log/outboxd /var/lib/outboxd /run/outboxd /usr/share/outboxd /usr/share/doc/outboxd "$shm" \
         /etc/systemd/system/multi-user.target.wants/outboxd.service /var/lib/systemd/deb-systemd-helper-enabled/outboxd.service.dsh-also; do
    [[ ! -e $d ]] || fail "purge left $d"
done
[[ $(cat /var/lib/dpkg/statoverride) == "$statoverride_before" ]] || fail "purge left a statoverride: $(dpkg-statoverride --list)"
[[ -z $(dpkg-query -W -f='${Status}' outboxd 2>/dev/null || true) ]] || fail "dpkg still knows outboxd after purge"
# Decided: the system user stays after purge (Debian practice: files it
# owned elsewhere must not pass to a later user given the same uid).
getent passwd outboxd >/dev/null || fail "purge deleted the system user outboxd; it should stay"

echo "test_deb: $(basename "$deb"): built in ${t_build} s; installed; conffiles, 0640 root:outboxd by statoverride," \
     "system user with nologin, -t as root and outboxd (not nobody), --version, hardening flags, unit verified and" \
     "not enabled, man pages render cleanly, logrotate rotates and sends USR1, an edited config survives a reinstall," \
     "remove keeps it, purge leaves nothing but the user (as decided) in $((SECONDS - t0)) s"
