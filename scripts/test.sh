#!/usr/bin/env bash
# The whole test suite: installs what it needs, starts RabbitMQ (and PostgreSQL) if
# they are not answering, then ruff, mypy --strict, the library's tests and the
# example project's end-to-end tests, and the library's tests on the oldest and the newest
# supported Python (3.10 and 3.13, each in its own .venv-pyXY) so CI sees what tox promises,
# then the cluster tests (marked `cluster`) once, on a 3-node cluster that scripts/cluster.sh
# starts in the background at the beginning and stops at the end.
# Extra arguments go to the library's pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv test
bash scripts/start-services.sh
if ! bash scripts/cluster.sh status | grep -q "running: .*pubsubpy3"; then   # left alone if it was up
  trap 'bash scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
fi
bash scripts/cluster.sh up > .cluster-up.log 2>&1 &   # about 45 s, while the checks below run
cluster_up=$!
bash scripts/ensure-node-tools.sh
if [ -z "${DATABASE_URL:-}" ] && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  export DATABASE_URL="postgres://root@127.0.0.1:5432/shop"   # the example runs on PostgreSQL
fi
echo "== ruff"; .venv/bin/ruff check pubsubpy tests bench examples
echo "== mypy --strict"; .venv/bin/mypy pubsubpy tests/typing
echo "== pytest: examples/bookingshop (Django + Celery, end to end, ${DATABASE_URL:-sqlite})"
(cd examples/bookingshop && ../../.venv/bin/pytest -q)
status=0
for version in 3.10 3.13; do
  python="$(find_python "$version" || true)"
  if [ -z "$python" ]; then
    echo "Python $version not found (pyenv install $version)"; [ "${CI:-}" = "true" ] && exit 1; continue
  fi
  venv=".venv-py${version//./}"
  ensure_venv test "$venv" "$python"
  echo "== pytest: pubsubpy on Python $version"
  "$venv/bin/pytest" -m "not cluster" "$@" || status=$?
done
echo "== pytest: the 3-node cluster (scripts/cluster.sh)"
if ! wait "$cluster_up"; then
  echo "the cluster's start in the background failed:"; cat .cluster-up.log
fi
# Again in the foreground (idempotent: seconds when it is up): a start that failed, or a node lost since, is retried
bash scripts/cluster.sh up || echo "the cluster did not start: its tests skip (under CI=true they fail)"
.venv/bin/pytest -m cluster -s "$@" tests/test_cluster.py || status=$?
exit $status
