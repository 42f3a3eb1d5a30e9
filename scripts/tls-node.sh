#!/usr/bin/env bash
# scripts/tls-node.sh up|down|status: one local RabbitMQ node speaking TLS, for tests/test_tls.py.
#
# Node pubsubpytls@localhost: AMQPS on 127.0.0.1:5691 (plain AMQP on 127.0.0.1:5690 for administration),
# Erlang distribution port 25690, everything under $PUBSUBPY_TLS_DIR (default /tmp/pubsubpy-tls). The name
# and AMQPS port come from $PUBSUBPY_TLS_NODE and $PUBSUBPY_TLS_PORT when set (AMQP one below it, the
# distribution port 19999 above it), so two test runs side by side each have their own node. It runs
# as the rabbitmq user (so rabbitmqctl, which uses that user's Erlang cookie, reaches it), like the nodes
# of scripts/cluster.sh. `up` makes with openssl, once, in $PUBSUBPY_TLS_DIR/certs:
#   ca.pem                      the test CA (what clients trust: tls_ca_file)
#   server.pem, server.key      the node's certificate, for DNS:localhost and IP:127.0.0.1
#   client.pem, client.key      a client certificate whose CN is the RabbitMQ user pubsubpy-tls-client
# The node asks for a client certificate (verify_peer) but does not require one (fail_if_no_peer_cert =
# false); one it cannot verify fails the handshake. Logins: PLAIN/AMQPLAIN (guest/guest from 127.0.0.1)
# and EXTERNAL (the client certificate's CN, plugin rabbitmq_auth_mechanism_ssl).
# `up` is idempotent; every wait is bounded. `status` exits 0 when the node runs, 3 when it does not.
# URLs: amqps://guest:guest@127.0.0.1:5691/%2F (tls_ca_file=.../certs/ca.pem), or amqps://127.0.0.1:5691/%2F
# with auth="external", tls_cert_file=.../certs/client.pem, tls_key_file=.../certs/client.key.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_rabbitmq_node.sh"

BASE="${PUBSUBPY_TLS_DIR:-/tmp/pubsubpy-tls}"
NAME="${PUBSUBPY_TLS_NODE:-pubsubpytls}"   # another name and port: a second TLS node beside the first
NODE="$NAME@localhost"
AMQPS_PORT="${PUBSUBPY_TLS_PORT:-5691}"
AMQP_PORT=$((AMQPS_PORT - 1))
DIST_PORT=$((AMQPS_PORT + 19999))
CLIENT_USER=pubsubpy-tls-client
WAIT="${PUBSUBPY_TLS_WAIT:-120}"   # seconds for the node to start
CERTS="$BASE/certs"

ctl() { timeout 60 rabbitmqctl -q -n "$NODE" "$@"; }
running() { timeout 20 rabbitmqctl -q -n "$NODE" status >/dev/null 2>&1; }
fail() { echo "tls-node: $*" >&2; exit 1; }

preflight() {
  [ "$(id -u)" -eq 0 ] || fail "must run as root (it starts the node through 'su rabbitmq')"
  command -v openssl >/dev/null || fail "openssl is not installed (apt-get install openssl)"
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || fail "RabbitMQ is not installed (/usr/lib/rabbitmq/bin/rabbitmq-server)"
  compgen -G "/usr/lib/rabbitmq/lib/*/plugins/rabbitmq_auth_mechanism_ssl*" >/dev/null \
    || fail "the plugin rabbitmq_auth_mechanism_ssl is missing from /usr/lib/rabbitmq/lib/*/plugins (EXTERNAL login)"
}

# sign NAME SUBJECT EXTENSIONS: NAME.key and NAME.pem, issued by the test CA.
sign() {
  local name="$1" subject="$2" extensions="$3"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subject" \
    -keyout "$CERTS/$name.key" -out "$CERTS/$name.csr" 2>/dev/null
  printf '%s\n' "$extensions" > "$CERTS/$name.ext"
  openssl x509 -req -in "$CERTS/$name.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$CERTS/$name.ext" -out "$CERTS/$name.pem" 2>/dev/null
  rm -f "$CERTS/$name.csr" "$CERTS/$name.ext"
}

make_certs() {
  if [ -s "$CERTS/ca.pem" ] && [ -s "$CERTS/server.pem" ] && [ -s "$CERTS/client.pem" ]; then return 0; fi
  rm -rf "$CERTS"; mkdir -p "$CERTS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 -sha256 \
    -subj "/O=pubsubpy tests/CN=pubsubpy test CA" -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null || fail "openssl could not make the CA in $CERTS"
  local leaf="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
  sign server "/O=pubsubpy tests/CN=localhost" "$leaf
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1" || fail "openssl could not make the server certificate"
  sign client "/O=pubsubpy tests/CN=$CLIENT_USER" "$leaf
extendedKeyUsage=clientAuth" || fail "openssl could not make the client certificate"
  chmod 0644 "$CERTS"/*.pem; chmod 0640 "$CERTS"/*.key
}

port_taken() { timeout 2 bash -c "echo > /dev/tcp/127.0.0.1/$1" 2>/dev/null; }

start_node() {
  local dir="$BASE/node" port
  if ! rabbit_node_pid "$NODE" >/dev/null; then   # (a VM of ours still booting holds them: waited for below)
    for port in $AMQP_PORT $AMQPS_PORT $DIST_PORT; do
      if port_taken "$port"; then fail "port 127.0.0.1:$port is taken by another process, not by $NODE"; fi
    done
  fi
  chown -R rabbitmq:rabbitmq "$BASE"   # the node reads the certificates and keys under it
  start_rabbit_node "$NODE" "$dir" "$AMQP_PORT" "$DIST_PORT" "$WAIT" "[rabbitmq_auth_mechanism_ssl]" <<EOF
listeners.tcp.local = 127.0.0.1:$AMQP_PORT
listeners.ssl.local = 127.0.0.1:$AMQPS_PORT
loopback_users.guest = true
ssl_options.cacertfile = $CERTS/ca.pem
ssl_options.certfile = $CERTS/server.pem
ssl_options.keyfile = $CERTS/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
EOF
}

# The EXTERNAL login's user: the client certificate's CN, with every permission on the default vhost.
client_user() {
  if ! ctl list_users 2>/dev/null | grep -q "^$CLIENT_USER\b"; then
    ctl add_user "$CLIENT_USER" "$(openssl rand -hex 24)" >/dev/null && ctl clear_password "$CLIENT_USER" >/dev/null \
      || fail "could not create the user $CLIENT_USER on $NODE"
  fi
  ctl set_permissions -p / "$CLIENT_USER" '.*' '.*' '.*' >/dev/null || fail "could not grant $CLIENT_USER on $NODE"
}

case "${1:-status}" in
  up)
    preflight
    make_certs
    if ! running; then start_node; fi
    client_user
    listeners="$(ctl status 2>/dev/null || true)"
    grep -q "port: $AMQPS_PORT, protocol: amqp/ssl" <<<"$listeners" \
      || fail "$NODE runs but has no AMQPS listener on 127.0.0.1:$AMQPS_PORT; its log: $BASE/node/log"
    echo "tls node up: $NODE (AMQPS 127.0.0.1:$AMQPS_PORT, AMQP 127.0.0.1:$AMQP_PORT, certificates in $CERTS)"
    ;;
  down)
    stop_rabbit_node "$NODE"
    rm -rf "$BASE"
    echo "tls node down"
    ;;
  status)
    if running; then
      echo "$NODE: running (AMQPS 127.0.0.1:$AMQPS_PORT, AMQP 127.0.0.1:$AMQP_PORT, certificates in $CERTS)"
    else
      echo "$NODE: not running"; exit 3
    fi
    ;;
  *)
    echo "usage: scripts/tls-node.sh up|down|status" >&2; exit 2 ;;
esac
