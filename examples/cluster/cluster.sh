#!/usr/bin/env bash
# Starts, lists and stops the three-node "demo" cluster of this directory on loopback, in the
# background: `cluster.sh start`, `cluster.sh status`, `cluster.sh kill N`, `cluster.sh stop`;
# `cluster.sh join` starts node 4, which joins the running cluster, `cluster.sh leave N` removes
# node N from it.
# ERGON names the binary (default: target/release/ergon, built if missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ergon="${ERGON:-$root/target/release/ergon}"
pids="$here/data/pids"

build() {
    [ -x "$ergon" ] || (cd "$root" && make -s protoc && cargo build -q --release --locked -p ergon-cli)
}

case "${1:-}" in
start)
    build
    mkdir -p "$here/data"
    [ -f "$here/certs/ca.pem" ] || "$ergon" certs init --cluster demo --nodes 3 --user operator --out "$here/certs" >/dev/null
    [ -f "$here/certs/token.pub" ] || "$ergon" token keygen --out "$here/certs" >/dev/null
    : > "$pids"
    for id in 1 2 3; do
        "$ergon" node --config "$here/n$id.toml" >>"$here/data/n$id.log" 2>&1 &
        echo "$id $!" >> "$pids"
        echo "node $id: pid $!, log $here/data/n$id.log"
    done
    echo "try: $ergon call --config $here/client.toml replicate hello"
    ;;
status)
    [ -f "$pids" ] || { echo "not started"; exit 0; }
    while read -r id pid; do
        if kill -0 "$pid" 2>/dev/null; then echo "node $id: running (pid $pid)"; else echo "node $id: stopped"; fi
    done < "$pids"
    ;;
join)
    build
    [ -f "$here/certs/n4.pem" ] || "$ergon" certs issue --cluster demo --ca-key "$here/certs/ca.key" --node 4 --out "$here/certs" >/dev/null
    "$ergon" node --config "$here/n4.toml" --join 1@127.0.0.1:7101 >>"$here/data/n4.log" 2>&1 &
    echo "4 $!" >> "$pids"
    echo "node 4: pid $!, log $here/data/n4.log; joining through node 1 (see: $ergon cluster status --config $here/client.toml)"
    ;;
leave)
    id="${2:?which node?}"
    "$ergon" call --config "$here/client.toml" leave "$id"
    ;;
kill)
    id="${2:?which node?}"
    pid="$(awk -v id="$id" '$1 == id { print $2 }' "$pids")"
    kill -9 "$pid" && echo "node $id (pid $pid) killed with SIGKILL; restart it with: $ergon node --config $here/n$id.toml"
    ;;
stop)
    [ -f "$pids" ] || exit 0
    while read -r id pid; do kill -TERM "$pid" 2>/dev/null && echo "node $id: stopping"; done < "$pids"
    rm -f "$pids"
    ;;
*)
    echo "usage: $0 start|status|join|leave N|kill N|stop" >&2
    exit 2
    ;;
esac
