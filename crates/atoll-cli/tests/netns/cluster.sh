#!/usr/bin/env bash
# cluster.sh - N network namespaces on one private bridge, with fault injection, for the
# multi-process membership tests (tests/netns_membership.rs). Run as root.
#
# Topology:  <P>-hub  (namespace holding bridge br0; nothing attached to the host namespace)
#              |- veth h<i>  <->  eth0 in namespace <P>-n<i>   (<SUBNET>.<i>/24)
# Traffic can only flow between the namespaces this script creates.
#
# Faults live inside the node namespaces: nftables rules (table inet fault, input and output
# chains at priority -10), a netem qdisc on eth0, or the hub-side veth set down (cable cut).
#
# Usage: cluster.sh CMD P [args]
#   up P SUBNET N        create <P>-hub and <P>-n1..<P>-nN
#   down P               SIGCONT+SIGKILL every process in the namespaces (by pid), delete them
#   sweep                'down' every atoll-<pid>-* cluster whose test process is gone
#   isolate P I          hub-side veth of node I down: all its traffic lost, both ways
#   block P SUBNET A B   packets from node A to node B dropped at B; B -> A still delivered
#   partition P SUBNET A,B C,D,E
#                        every packet between the two groups of nodes dropped (at the
#                        receiver, both ways); each group still talks within itself
#   loss P PCT           PCT% of the packets each node sends are lost (tc netem on eth0 if the
#                        kernel has it, else nftables numgen); prints which was used
#   heal P               remove every fault; prints what the nftables rules dropped
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
have_nft() { command -v nft >/dev/null 2>&1; }
exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
nodes() { ip netns list | awk '{print $1}' | grep -E "^$1-n[0-9]+$" | sort -V || true; }

cmd_up() {
  local p="$1" subnet="$2" n="$3" hub="$1-hub" i ns
  exists "$hub" && die "$hub exists"
  ip netns add "$hub"
  ip -n "$hub" link set lo up
  ip -n "$hub" link add name br0 type bridge
  ip -n "$hub" link set br0 up
  for i in $(seq 1 "$n"); do
    ns="$p-n$i"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$hub" link add name "h$i" type veth peer name "e$i"
    ip -n "$hub" link set "e$i" netns "$ns"
    ip -n "$ns" link set "e$i" name eth0
    ip -n "$ns" addr add "$subnet.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$hub" link set "h$i" master br0
    ip -n "$hub" link set "h$i" up
    if have_nft; then
      ip netns exec "$ns" nft -f - <<EOF
table inet fault {
  chain input  { type filter hook input  priority -10; policy accept; }
  chain output { type filter hook output priority -10; policy accept; }
}
EOF
    fi
  done
}

kill_in() {
  local pids
  pids="$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ' || true)"
  if [ -n "${pids// }" ]; then
    # shellcheck disable=SC2086
    kill -CONT $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
}

cmd_down() {
  local ns
  for ns in $(nodes "$1") "$1-hub"; do
    exists "$ns" || continue
    kill_in "$ns"
    ip netns del "$ns" || true
  done
}

cmd_sweep() {
  local p pid
  for p in $(ip netns list | awk '{print $1}' | grep -oE '^atoll-[0-9]+-[a-z0-9]+' | sort -u); do
    pid="$(echo "$p" | cut -d- -f2)"
    [ -d "/proc/$pid" ] || cmd_down "$p"
  done
}

cmd_isolate() { ip -n "$1-hub" link set "h$2" down; }

cmd_block() {
  have_nft || die "block needs nft (apt-get install nftables)"
  ip netns exec "$1-n$4" nft add rule inet fault input ip saddr "$2.$3" counter drop
}

cmd_partition() {
  have_nft || die "partition needs nft (apt-get install nftables)"
  local p="$1" subnet="$2" i j
  [[ "$3" =~ ^[0-9]+(,[0-9]+)*$ && "$4" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "groups are I,J,..."
  for i in ${3//,/ }; do
    for j in ${4//,/ }; do
      [ "$i" != "$j" ] || die "node $i is in both groups"
      ip netns exec "$p-n$i" nft add rule inet fault input ip saddr "$subnet.$j" counter drop
      ip netns exec "$p-n$j" nft add rule inet fault input ip saddr "$subnet.$i" counter drop
    done
  done
}

cmd_loss() {
  local p="$1" pct="$2" ns
  [[ "$pct" =~ ^[0-9]+$ ]] && [ "$pct" -le 100 ] || die "PCT must be 0..100"
  if tc -n "$p-n1" qdisc add dev eth0 root netem loss "$pct%" 2>/dev/null; then
    for ns in $(nodes "$p" | grep -vx "$p-n1"); do
      tc -n "$ns" qdisc add dev eth0 root netem loss "$pct%"
    done
    echo "netem"
  elif have_nft; then
    for ns in $(nodes "$p"); do
      ip netns exec "$ns" nft add rule inet fault input iifname eth0 numgen random mod 100 lt "$pct" counter drop
    done
    echo "nftables"
  else
    die "no way to drop packets at random: the kernel has no netem qdisc and nft is not installed"
  fi
}

cmd_heal() {
  local ns i dropped report=""
  for ns in $(nodes "$1"); do
    i="${ns##*-n}"
    if have_nft; then
      dropped="$(ip netns exec "$ns" nft list table inet fault 2>/dev/null |
        awk '{for (f = 1; f < NF; f++) if ($f == "packets") s += $(f + 1)} END {print s + 0}')"
      report="$report n$i:$dropped"
    fi
    if have_nft; then ip netns exec "$ns" nft flush table inet fault 2>/dev/null || true; fi
    tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
    ip -n "$1-hub" link set "h$i" up
  done
  [ -z "$report" ] || echo "packets dropped by nftables rules:$report"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  sweep) cmd_sweep ;;
  isolate) cmd_isolate "$@" ;;
  block) cmd_block "$@" ;;
  partition) cmd_partition "$@" ;;
  loss) cmd_loss "$@" ;;
  heal) cmd_heal "$@" ;;
  *) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || die "unknown command '$cmd'" ;;
esac
