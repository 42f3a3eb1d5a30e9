#!/usr/bin/env bash
# scripts/cluster.sh up|down|status: three local RabbitMQ nodes in one cluster, AMQP on 127.0.0.1:5681-5683.
#
# Each node has its own name (pubsubpy1..3@localhost), config file (the system's rabbitmq.conf pins 5672),
# Erlang distribution port (25681-25683), data and log directories under $PUBSUBPY_CLUSTER_DIR (default
# /tmp/pubsubpy-cluster), and one plugin, the consistent-hash exchange (shards=N; no management listener to clash). They run as the rabbitmq
# user so they share its Erlang cookie with rabbitmqctl. `up` is idempotent; every wait is bounded.
# `up` with no node running starts from empty directories: the data of a cluster whose nodes died without `down`
# (a reboot, a killed session) would make the first node wait minutes for peers that are not coming. A partial
# cluster (some nodes running) keeps its data: the missing nodes rejoin it; if that fails, `up` starts over.
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
  # a restarted node waits for its peers' tables at most 3 x 10 s (RabbitMQ's default: 10 x 30 s)
  printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users.guest = true\n%s\n%s\n' "$amqp" \
    "mnesia_table_loading_retry_timeout = 10000" "mnesia_table_loading_retry_limit = 3" \
    | start_rabbit_node "$name@localhost" "$BASE/$name" "$amqp" $((amqp + 20000)) "$WAIT" "[rabbitmq_consistent_hash_exchange]"
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

any_running() {   # a node's VM, answering or not (one still booting does not answer rabbitmqctl)
  local name
  for name in "${NODES[@]}"; do if rabbit_node_pid "$name@localhost" >/dev/null; then return 0; fi; done
  return 1
}

bring_up() {
  local name running
  for name in "${NODES[@]}"; do start_node "$name"; done
  for name in "${NODES[@]:1}"; do join "$name"; done
  running=$(members)
  if [ "$(wc -w <<<"$running")" -ne 3 ]; then
    echo "cluster: expected 3 running nodes, found: ${running:-none}" >&2; return 1
  fi
}

take_down() {
  local name
  for name in "${NODES[@]}"; do stop_rabbit_node "$name@localhost"; done
  rm -rf "$BASE"
}

case "${1:-status}" in
  up)
    if ! any_running; then rm -rf "$BASE"; fi
    if ! (bring_up); then
      echo "cluster: starting over from empty nodes" >&2
      take_down >/dev/null
      bring_up
    fi
    echo "cluster up: $(members) (AMQP 127.0.0.1:5681-5683)"
    ;;
  down)
    take_down
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
