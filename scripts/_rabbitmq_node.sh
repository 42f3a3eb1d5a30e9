# Shared by scripts/cluster.sh and scripts/tls-node.sh: start and stop one extra local RabbitMQ node.
#
# The system's node (rabbit@localhost, 5672) keeps its own config; an extra node needs its own name, config
# file, ports and directories, and must run as the rabbitmq user so that rabbitmqctl (which uses that
# user's Erlang cookie) reaches it: a node started as root dies silently (../shared/notes-rabbitmq.md).
# A node's name is in its environment, not on its command line: rabbit_node_pid finds its Erlang VM there.
# That finds a node rabbitmqctl cannot reach too: one still booting (waiting for its cluster peers' tables).

# rabbit_node_pid NODE: the pid of NODE's Erlang VM (beam.smp); fails when there is none.
rabbit_node_pid() {
  local environ pid
  for environ in /proc/[0-9]*/environ; do
    pid="${environ#/proc/}"; pid="${pid%/environ}"
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = beam.smp ] || continue
    if { tr '\0' '\n' < "$environ"; } 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$1"; then echo "$pid"; return 0; fi
  done
  return 1
}

# stop_rabbit_node NODE: a polite stop (30 s at most), then SIGKILL for a VM still there 15 s later.
stop_rabbit_node() {
  local node="$1" pid
  pid="$(rabbit_node_pid "$node")" || return 0
  timeout 30 rabbitmqctl -q -n "$node" stop >/dev/null 2>&1 || true
  local until=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$until" ]; do sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
}

# start_rabbit_node NODE DIR AMQP_PORT DIST_PORT WAIT PLUGINS < CONFIG
#   NODE name@localhost; DIR its config, data, log and pid file; PLUGINS an Erlang list such as [] or
#   [rabbitmq_auth_mechanism_ssl]; CONFIG (stdin) its rabbitmq.conf. A node whose VM already runs is not
#   started twice, only waited for. Returns once `await_startup` answers; fails (exit 1, with the log's tail)
#   after WAIT seconds or as soon as the node's VM is gone.
start_rabbit_node() {
  local node="$1" dir="$2" amqp="$3" dist="$4" wait="$5" plugins="$6"
  if rabbit_node_pid "$node" >/dev/null; then
    cat >/dev/null
  else
    mkdir -p "$dir/mnesia" "$dir/log"
    cat > "$dir/rabbitmq.conf"
    echo "$plugins." > "$dir/enabled_plugins"
    rm -f "$dir/pid"
    chown -R rabbitmq:rabbitmq "$dir"
    # from the node's own directory: a node keeps its working directory, and one deleted under it (a
    # checkout removed after a run) makes a later start_app fail in prelaunch with {error,enoent}
    su rabbitmq -s /bin/sh -c "cd $dir && env RABBITMQ_NODENAME=$node RABBITMQ_NODE_PORT=$amqp \
        RABBITMQ_DIST_PORT=$dist RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf \
        RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins \
        RABBITMQ_PID_FILE=$dir/pid ERL_EPMD_ADDRESS=127.0.0.1 \
        /usr/lib/rabbitmq/bin/rabbitmq-server -detached" >/dev/null 2>&1
  fi
  local began=$SECONDS   # await_startup fails at once until the node has registered: poll it
  until timeout 30 rabbitmqctl -q -n "$node" await_startup >/dev/null 2>&1; do
    if [ $((SECONDS - began)) -ge "$wait" ] \
        || { [ $((SECONDS - began)) -ge 5 ] && ! rabbit_node_pid "$node" >/dev/null; }; then
      echo "$node did not start (waited up to ${wait}s); its log: $dir/log" >&2
      tail -n 20 "$dir/log/$node.log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 1
  done
}
