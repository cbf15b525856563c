#!/usr/bin/env bash
# See interceptd work on this machine in one command, without touching the
# host's own firewall: the daemon runs on its embedded default config inside a
# throwaway "host" network namespace, a few sandboxes talk to my.kv through
# it, and everything is removed at the end.
#
#   sudo deploy/try.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || exec sudo -E env "PATH=$PATH" "$0" "$@"

missing=()
for tool in ip:iproute2 iptables:iptables nft:nftables curl:curl nsenter:util-linux; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "# installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "Go 1.26 or newer is needed (https://go.dev/dl/)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/interceptd-try.XXXXXX)
ns=interceptd-try-$$
bin=$tmp/interceptd
export INTERCEPTD_SOCKET=$tmp/admin.sock
daemon=
cleanup() {
  set +e
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  nsenter --net=/run/netns/$ns "$bin" cleanup --config "$tmp/config.yaml" >/dev/null 2>&1
  ip netns del $ns 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "# building"
go build -o "$bin" ./cmd/interceptd
# The embedded default, with a data dir and a namespace prefix of its own, so
# that this runs beside an installed service without touching its sandboxes.
"$bin" config default | sed -e "s|^data_dir: .*|data_dir: $tmp/data|" -e "s|^admin_socket: .*|admin_socket: $tmp/admin.sock|" -e "s|^  netns_prefix: .*|  netns_prefix: icdtry$$-|" >"$tmp/config.yaml"
ip netns add $ns
ip -n $ns link set lo up
# nsenter enters only the network namespace, so the sandbox namespaces the
# daemon bind-mounts under /run/netns are visible to `ip netns` here.
nsenter --net=/run/netns/$ns "$bin" serve --config "$tmp/config.yaml" >"$tmp/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do "$bin" sandbox list >/dev/null 2>&1 && break; sleep 0.1; done
"$bin" sandbox list >/dev/null || { cat "$tmp/daemon.log"; exit 1; }

say() { printf '\n$ %s\n' "$*"; }
say "interceptd run -- sh -c 'curl -s -X PUT --data hello http://my.kv/greeting; curl -s http://my.kv/greeting'"
"$bin" run -- sh -c 'curl -s -X PUT --data hello http://my.kv/greeting; curl -s http://my.kv/greeting'
echo
say "interceptd sandbox create web1"
path=$("$bin" sandbox create web1); echo "$path"
say "ip netns exec ${path##*/} curl -s http://my.kv/greeting"
ip netns exec "${path##*/}" curl -s http://my.kv/greeting; echo
if command -v dig >/dev/null; then
  say "ip netns exec ${path##*/} dig +short @192.0.2.53 my.kv    # any resolver: the daemon answers"
  ip netns exec "${path##*/}" dig +short +time=2 +tries=1 @192.0.2.53 my.kv
fi
say "ip netns exec ${path##*/} sh -c 'echo blob-content | curl -s -T - http://my.r2/hello.txt; curl -s http://my.r2/hello.txt'"
ip netns exec "${path##*/}" sh -c 'echo blob-content | curl -s -T - http://my.r2/hello.txt; curl -s http://my.r2/hello.txt'
say "ip netns exec ${path##*/} sh -c 'curl -s -X PUT --data 1 http://state.do/visits; curl -s http://state.do/visits'"
ip netns exec "${path##*/}" sh -c 'curl -s -X PUT --data 1 http://state.do/visits; curl -s http://state.do/visits'; echo
say "interceptd state get web1 visits      # the operator reads web1's state from the host"
"$bin" state get web1 visits; echo
say "interceptd sandbox list"
"$bin" sandbox list
say "curl -s 127.0.0.1:9780/metrics | grep '^interceptd_' | grep -v _bucket     # (a deleted sandbox's series are dropped)"
nsenter --net=/run/netns/$ns curl -s 127.0.0.1:9780/metrics | grep '^interceptd_' | grep -v _bucket
say "interceptd sandbox delete web1"
"$bin" sandbox delete web1 && echo deleted
say "daemon log"
cat "$tmp/daemon.log"
