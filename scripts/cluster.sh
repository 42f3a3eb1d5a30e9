#!/usr/bin/env bash
# scripts/cluster.sh up|down|status: three local RabbitMQ nodes in one cluster, AMQP on 127.0.0.1:5681-5683.
#
# Each node has its own name (pubsubpy1..3@localhost), config file (the system's rabbitmq.conf pins 5672),
# Erlang distribution port (25681-25683), data and log directories under $PUBSUBPY_CLUSTER_DIR (default
# /tmp/pubsubpy-cluster), and no plugins (so no management listener clashes). They run as the rabbitmq
# user so they share its Erlang cookie with rabbitmqctl. `up` is idempotent; every wait is bounded.
# URLs for pubsubpy: amqp://guest:guest@127.0.0.1:5681,amqp://guest:guest@127.0.0.1:5682,...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_rabbitmq_node.sh"

BASE="${PUBSUBPY_CLUSTER_DIR:-/tmp/pubsubpy-cluster}"
NODES=(pubsubpy1 pubsubpy2 pubsubpy3)
WAIT="${PUBSUBPY_CLUSTER_WAIT:-120}"   # seconds for each node to start

port() { echo $((5680 + ${1#pubsubpy})); }
ctl() { timeout 60 rabbitmqctl -q -n "$1@localhost" "${@:2}"; }
running() { timeout 20 rabbitmqctl -q -n "$1@localhost" status >/dev/null 2>&1; }

start_node() {
  local name="$1" amqp; amqp="$(port "$1")"
  if running "$name"; then return 0; fi
  printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users.guest = true\n' "$amqp" \
    | start_rabbit_node "$name@localhost" "$BASE/$name" "$amqp" $((amqp + 20000)) "$WAIT" "[]"
}

members() { ctl pubsubpy1 cluster_status --formatter json 2>/dev/null | python3 -c \
  'import json,sys; print(" ".join(sorted(json.load(sys.stdin).get("running_nodes", []))))' 2>/dev/null || true; }

join() {
  local name="$1"
  if members | grep -q "$name@localhost"; then return 0; fi
  local out="$BASE/$name/join.log"
  if ! { ctl "$name" stop_app && ctl "$name" reset && ctl "$name" join_cluster pubsubpy1@localhost \
         && ctl "$name" start_app; } >"$out" 2>&1; then
    echo "cluster: $name could not join pubsubpy1@localhost:" >&2; tail -n 20 "$out" >&2; exit 1
  fi
}

case "${1:-status}" in
  up)
    for name in "${NODES[@]}"; do start_node "$name"; done
    for name in "${NODES[@]:1}"; do join "$name"; done
    running=$(members)
    if [ "$(wc -w <<<"$running")" -ne 3 ]; then
      echo "cluster: expected 3 running nodes, found: ${running:-none}" >&2; exit 1
    fi
    echo "cluster up: $running (AMQP 127.0.0.1:5681-5683)"
    ;;
  down)
    for name in "${NODES[@]}"; do
      if running "$name"; then ctl "$name" stop >/dev/null 2>&1 || true; fi
      pkill -u rabbitmq -f "$name@localhost" 2>/dev/null || true   # a node that did not stop in time
    done
    rm -rf "$BASE"
    echo "cluster down"
    ;;
  status)
    for name in "${NODES[@]}"; do
      if running "$name"; then echo "$name@localhost: running (AMQP 127.0.0.1:$(port "$name"))"
      else echo "$name@localhost: not running"; fi
    done
    echo "cluster members running: $(members)"
    ;;
  *)
    echo "usage: scripts/cluster.sh up|down|status" >&2; exit 2 ;;
esac
