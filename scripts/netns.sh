#!/usr/bin/env bash
# scripts/netns.sh: application "hosts" for the partition scenarios: network
# namespaces on one bridge, each with its own address, that reach the local
# stack's servers at the same 127.0.0.1 addresses as the root namespace, so
# an outboxd runs in one unchanged, and iptables inside a namespace cuts
# that host off from PostgreSQL, Kafka or both.
#
#   netns.sh up [N]         N hosts (default 3): ob-h1 .. ob-hN, 10.231.0.11 ..
#   netns.sh down           removes hosts, bridge and rules
#   netns.sh addr HOST      the host's address (clients reach its listeners there)
#   netns.sh cut HOST pg|kafka|all    drops that traffic both ways, silently
#   netns.sh heal HOST      removes the host's cuts
#   netns.sh trust          lets the hosts into every cluster of var/ again (one rebuilt since up)
#   netns.sh status
#
# How a host reaches 127.0.0.1:PORT of the root namespace: inside it, nat
# OUTPUT rewrites 127.0.0.1:PORT to the bridge address 10.231.0.1 (with
# route_localnet, so the loopback source may leave, and MASQUERADE); in the
# root namespace nat PREROUTING on the bridge rewrites it back to 127.0.0.1
# (route_localnet on the bridge). The servers stay bound to loopback, and
# Kafka's metadata, which names 127.0.0.1 ports, works unchanged.
set -euo pipefail

BRIDGE=ob-br0
BRIDGE_IP=10.231.0.1
NET_PREFIX=10.231.0
HOST_BASE=10
# the local stack (stack.sh), the Kafka cluster (kafka_ha.sh) and the orders pair (pg_ha.sh)
PG_PORTS="55432,55433,26432,26433"
KAFKA_PORTS="59092,29191,29192,29193"
CHAIN=OB_NETNS
CUT=OB_CUT
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="$(cd "$ROOT/var" 2>/dev/null && pwd -P || echo "$ROOT/var")"
HBA_LINE="host all all $NET_PREFIX.0/24 trust  # scripts/netns.sh"

say() { echo "netns: $*"; }
die() { echo "netns: $*" >&2; exit 1; }

host_ns()   { echo "ob-h$1"; }
host_ip()   { echo "$NET_PREFIX.$((HOST_BASE + $1))"; }
host_num()  { local h=$1; h=${h#ob-h}; [[ $h =~ ^[0-9]+$ ]] || die "no such host: $1 (ob-hN or N)"; echo "$h"; }

need_root() {
    [ "$(id -u)" = 0 ] || die "needs root (ip netns, iptables)"
    command -v iptables >/dev/null || die "iptables is not installed (apt-get install iptables)"
}

bridge_up() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
    sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
    iptables -t nat -N "$CHAIN" 2>/dev/null || iptables -t nat -F "$CHAIN"
    iptables -t nat -C PREROUTING -i "$BRIDGE" -j "$CHAIN" 2>/dev/null ||
        iptables -t nat -A PREROUTING -i "$BRIDGE" -j "$CHAIN"
    iptables -t nat -A "$CHAIN" -d "$BRIDGE_IP" -p tcp -m multiport --dports "$PG_PORTS,$KAFKA_PORTS" \
        -j DNAT --to-destination 127.0.0.1
}

host_up() {
    local i=$1 ns veth
    ns=$(host_ns "$i")
    veth="ob-v$i"
    ip netns list | grep -qw "$ns" && ip netns del "$ns"
    ip link del "$veth" 2>/dev/null || true
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" addr add "$(host_ip "$i")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$BRIDGE_IP"
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth0.route_localnet=1
    ip netns exec "$ns" iptables -t nat -A OUTPUT -d 127.0.0.1 -p tcp -m multiport --dports "$PG_PORTS,$KAFKA_PORTS" \
        -j DNAT --to-destination "$BRIDGE_IP"
    ip netns exec "$ns" iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
    ip netns exec "$ns" iptables -N "$CUT"
    ip netns exec "$ns" iptables -A OUTPUT -j "$CUT"
    ip netns exec "$ns" iptables -A INPUT -j "$CUT"
}

# The hosts' sessions arrive from their own addresses: every cluster of var/ trusts them while they exist
# (the servers listen on loopback only; only these rules lead there), and a cluster made later gets it from up.
hba_each() {
    local add=$1 hba port
    for hba in "$VAR"/pg-*/pg_hba.conf; do
        [ -f "$hba" ] || continue
        if [ "$add" = 1 ]; then
            grep -qF "$HBA_LINE" "$hba" || echo "$HBA_LINE" >>"$hba"
        else
            sed -i "\|# scripts/netns.sh\$|d" "$hba"
        fi
        port=$(sed -n 4p "$(dirname "$hba")/postmaster.pid" 2>/dev/null || true)
        [ -n "$port" ] && psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc "SELECT pg_reload_conf()" \
            >/dev/null 2>&1 || true
    done
}

cmd_up() {
    local n=${1:-3}
    need_root
    bridge_up
    hba_each 1
    for i in $(seq 1 "$n"); do host_up "$i"; done
    # a host must reach the stack before a scenario relies on it
    for i in $(seq 1 "$n"); do
        ip netns exec "$(host_ns "$i")" bash -c "exec 3<>/dev/tcp/127.0.0.1/55432" 2>/dev/null ||
            say "warning: $(host_ns "$i") cannot reach 127.0.0.1:55432 (is the stack up?)"
    done
    say "$n host(s) up: $(for i in $(seq 1 "$n"); do printf '%s=%s ' "$(host_ns "$i")" "$(host_ip "$i")"; done)"
}

cmd_down() {
    need_root
    for ns in $(ip netns list | awk '{print $1}' | grep '^ob-h[0-9]*$' || true); do
        ip netns del "$ns"
    done
    for l in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^ob-v[0-9]*$' || true); do
        ip link del "$l" 2>/dev/null || true
    done
    while iptables -t nat -C PREROUTING -i "$BRIDGE" -j "$CHAIN" 2>/dev/null; do
        iptables -t nat -D PREROUTING -i "$BRIDGE" -j "$CHAIN"
    done
    iptables -t nat -F "$CHAIN" 2>/dev/null || true
    iptables -t nat -X "$CHAIN" 2>/dev/null || true
    ip link del "$BRIDGE" 2>/dev/null || true
    hba_each 0
    say "down"
}

cmd_cut() {
    local i ns what=${2:-}
    i=$(host_num "${1:-}")
    ns=$(host_ns "$i")
    need_root
    case "$what" in
        pg)    ports=$PG_PORTS ;;
        kafka) ports=$KAFKA_PORTS ;;
        all)   ports="$PG_PORTS,$KAFKA_PORTS" ;;
        *)     die "cut HOST pg|kafka|all" ;;
    esac
    # DROP, not REJECT: a cut cable answers nothing; both directions, so established sessions go silent too
    ip netns exec "$ns" iptables -A "$CUT" -p tcp -d "$BRIDGE_IP" -m multiport --dports "$ports" -j DROP
    ip netns exec "$ns" iptables -A "$CUT" -p tcp -s "$BRIDGE_IP" -m multiport --sports "$ports" -j DROP
    say "$ns cut from $what"
}

cmd_heal() {
    local i ns
    i=$(host_num "${1:-}")
    ns=$(host_ns "$i")
    need_root
    ip netns exec "$ns" iptables -F "$CUT"
    say "$ns healed"
}

cmd_status() {
    ip -br addr show "$BRIDGE" 2>/dev/null || { say "no bridge"; return 0; }
    for ns in $(ip netns list | awk '{print $1}' | grep '^ob-h[0-9]*$' || true); do
        echo "$ns $(ip -n "$ns" -br addr show eth0 | awk '{print $3}') cuts: $(ip netns exec "$ns" iptables -S "$CUT" | grep -c DROP)"
    done
}

case "${1:-}" in
    up)     shift; cmd_up "$@" ;;
    down)   cmd_down ;;
    addr)   host_ip "$(host_num "${2:-}")" ;;
    cut)    shift; cmd_cut "$@" ;;
    heal)   shift; cmd_heal "$@" ;;
    status) cmd_status ;;
    trust)  need_root; hba_each 1 ;;
    *)      die "usage: netns.sh up [N] | down | addr HOST | cut HOST pg|kafka|all | heal HOST | trust | status" ;;
esac
