# Shared by scripts/cluster.sh and scripts/tls-node.sh: start one extra local RabbitMQ node.
#
# The system's node (rabbit@localhost, 5672) keeps its own config; an extra node needs its own name, config
# file, ports and directories, and must run as the rabbitmq user so that rabbitmqctl (which uses that
# user's Erlang cookie) reaches it: a node started as root dies silently (../shared/notes-rabbitmq.md).

# start_rabbit_node NODE DIR AMQP_PORT DIST_PORT WAIT PLUGINS < CONFIG
#   NODE name@localhost; DIR its config, data, log and pid file; PLUGINS an Erlang list such as [] or
#   [rabbitmq_auth_mechanism_ssl]; CONFIG (stdin) its rabbitmq.conf. Returns once `await_startup` answers;
#   fails (exit 1, with the log's tail) after WAIT seconds or as soon as the node's process is gone.
start_rabbit_node() {
  local node="$1" dir="$2" amqp="$3" dist="$4" wait="$5" plugins="$6"
  mkdir -p "$dir/mnesia" "$dir/log"
  cat > "$dir/rabbitmq.conf"
  echo "$plugins." > "$dir/enabled_plugins"
  rm -f "$dir/pid"   # a stale one would read as "died at start"
  chown -R rabbitmq:rabbitmq "$dir"
  su rabbitmq -s /bin/sh -c "env RABBITMQ_NODENAME=$node RABBITMQ_NODE_PORT=$amqp \
      RABBITMQ_DIST_PORT=$dist RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf \
      RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins \
      RABBITMQ_PID_FILE=$dir/pid ERL_EPMD_ADDRESS=127.0.0.1 \
      /usr/lib/rabbitmq/bin/rabbitmq-server -detached" >/dev/null 2>&1
  local until=$((SECONDS + wait)) pid   # await_startup fails at once until the node has registered: poll it
  until timeout 30 rabbitmqctl -q -n "$node" await_startup >/dev/null 2>&1; do
    pid="$(cat "$dir/pid" 2>/dev/null || true)"
    if [ "$SECONDS" -ge "$until" ] || { [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; }; then
      echo "$node did not start (waited up to ${wait}s); its log: $dir/log" >&2
      tail -n 20 "$dir/log/$node.log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 1
  done
}
