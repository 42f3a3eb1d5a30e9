#!/usr/bin/env bash
# Start the local RabbitMQ when nothing answers on 127.0.0.1:5672, and wait (bounded) until it does.
set -uo pipefail
answering() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
PLUGIN=rabbitmq_consistent_hash_exchange   # shards=N (it ships with RabbitMQ, disabled by default)
# with_plugin: enable it on the running broker when it is not yet (idempotent, online; bounded)
with_plugin() {
  if timeout 30 rabbitmqctl -q eval "lists:keymember($PLUGIN, 1, application:which_applications())." 2>/dev/null \
      | grep -q true; then return 0; fi
  echo "enabling $PLUGIN (rabbitmq-plugins enable)" >&2
  timeout 120 rabbitmq-plugins -q enable "$PLUGIN" >/dev/null 2>&1 \
    || echo "could not enable $PLUGIN: the shards tests will fail" >&2
}
if answering; then with_plugin; exit 0; fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "RabbitMQ is not running and rabbitmq-server is not installed: broker tests will skip (fail under CI=true)" >&2
  exit 0
fi
echo "starting RabbitMQ (rabbitmq-server -detached)..." >&2
rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 1 120); do
  if answering && python3 - <<'PY' 2>/dev/null
import socket
s = socket.create_connection(("127.0.0.1", 5672), timeout=2)
s.sendall(b"AMQP\x00\x00\x09\x01")
s.settimeout(5)
ok = s.recv(8)[:1] == b"\x01"   # connection.start frame: the broker speaks AMQP
raise SystemExit(0 if ok else 1)
PY
  then echo "RabbitMQ is up" >&2; with_plugin; exit 0; fi
  sleep 1
done
echo "RabbitMQ did not come up within 120 s" >&2
exit 1
