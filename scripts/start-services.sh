#!/usr/bin/env bash
# Start what the tests need when it is not answering: RabbitMQ (5672) and PostgreSQL (5432).
set -uo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/start-rabbitmq.sh" || exit 1
pg_answering() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! pg_answering && command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "starting PostgreSQL..." >&2
  for version in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  done
  for _ in $(seq 1 30); do pg_answering && break; sleep 1; done
fi
exit 0
