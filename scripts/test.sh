#!/usr/bin/env bash
# The whole test suite: installs what it needs, starts RabbitMQ (and PostgreSQL) if
# they are not answering, then ruff, mypy --strict, the distribution (scripts/check-dist.sh), the documentation site (scripts/check-docs.sh), the
# example project's end-to-end tests, and the library's tests as a matrix of the oldest and the newest
# we support, so CI sees what the version bounds promise:
#   leg 1  Python 3.10 (.venv-py310) with pika 1.3.2, against the system's RabbitMQ 3.10 (5672)
#   leg 2  Python 3.14 (.venv-py314, made inside the root) with the newest pika the pin admits, against
#          RabbitMQ 4.3 (127.0.0.1:5701), in the Debian sid root of scripts/rabbitmq-next.sh, in the
#          background beside leg 1 (its own broker and TLS node; both legs mostly wait on their brokers);
#          the browser/Node tests (marked `browser`) and the scenario tests over 20 s (marked `slow`:
#          fault injection, the benchmark smoke test) run on leg 1 only; the minute-long outage test (marked
#          `outage`) runs on each leg's broker after the leg, in the background, awaited at the end
# the contract suite (tests/contract, its RabbitMQ backends only) and the dead-letter give-back tests on
# RabbitMQ 4.0 (the trixie root, 127.0.0.1:5702) from .venv (the range where a nack counts towards a quorum
# queue's delivery limit), in the background beside leg 1 (another broker; both mostly wait on it),
# and the cluster tests (marked `cluster`) once, in the background after leg 1, on a 3-node cluster that
# scripts/cluster.sh starts in the background at the beginning and stops at the end. The two newer RabbitMQ nodes
# start in the background at the beginning too, and stop at the end unless they were up before.
# A leg that cannot run here (no Python 3.10, no root for the newer RabbitMQ) is skipped with the
# reason; under CI=true that makes the command fail. Every leg runs; the exit status is non-zero
# when any failed. Extra arguments go to the library's pytest (both legs).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv test
bash scripts/start-services.sh

status=0
skipped=()   # legs that could not run: fatal under CI=true, at the end
background=()   # "label:pid" of the test groups running in the background (their output: $logs/<label>.log)
stop_cluster=false stop_next=()
logs="$(mktemp -d /tmp/pubsubpy-test.XXXXXX)"
cleanup() {
  if $stop_cluster; then bash scripts/cluster.sh down >/dev/null 2>&1 || true; fi
  local release
  for release in "${stop_next[@]}"; do bash scripts/rabbitmq-next.sh --release "$release" down >/dev/null 2>&1 || true; done
  rm -rf "$logs"
}
trap cleanup EXIT

# section TEXT: a group's heading, with the time since the command started (where the minutes go)
section() { printf '== [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# in_background LABEL COMMAND...: run a test group beside the ones that follow; awaited (and its output
# printed) at the end by await_background.
in_background() {
  local label="$1"; shift
  section "started in the background (awaited at the end): $label"
  "$@" > "$logs/$label.log" 2>&1 &
  background+=("$label:$!")
}
await_background() {
  local job
  for job in "${background[@]}"; do
    section "pytest: ${job%:*} (run in the background)"
    wait "${job##*:}" || status=$?
    cat "$logs/${job%:*}.log"
  done
}

if ! bash scripts/cluster.sh status | grep -q "running: .*pubsubpy3"; then   # left alone if it was up
  stop_cluster=true
fi
bash scripts/cluster.sh up > .cluster-up.log 2>&1 &   # about 45 s, while the checks below run
cluster_up=$!
# RabbitMQ 4.3 (sid) and 4.0 (trixie): about 10 s each once their roots are built (a minute each, once)
declare -A next_up
for release in 4.3 4.0; do
  if ! bash scripts/rabbitmq-next.sh --release "$release" status >/dev/null 2>&1; then   # left alone if it was up
    stop_next+=("$release")
  fi
  bash scripts/rabbitmq-next.sh --release "$release" up > "$logs/next-$release.log" 2>&1 &
  next_up[$release]=$!
done

section "node tools: chromium, mermaid-cli, puppeteer, the AsyncAPI parser (scripts/ensure-node-tools.sh)"
bash scripts/ensure-node-tools.sh
if [ -z "${DATABASE_URL:-}" ] && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  export DATABASE_URL="postgres://root@127.0.0.1:5432/shop"   # the example runs on PostgreSQL
fi
section "ruff"; .venv/bin/ruff check pubsubpy tests bench examples
section "mypy --strict"; .venv/bin/mypy pubsubpy tests/typing
section "import-linter: the layers of docs/architecture.md ([tool.importlinter] in pyproject.toml)"
.venv/bin/lint-imports
section "dist: sdist, the wheel built from it, twine check, a clean install (scripts/check-dist.sh)"
bash scripts/check-dist.sh
section "docs: mkdocs build --strict, the site's search in headless chromium (scripts/check-docs.sh)"
bash scripts/check-docs.sh
section "pytest: examples/bookingshop (Django + Celery, end to end, ${DATABASE_URL:-sqlite})"
(cd examples/bookingshop && ../../.venv/bin/pytest -q)

# leg_versions URL PYTHON...: the versions a leg runs on, the broker's as the broker reports them.
LEG_VERSIONS="$(cat <<'EOF'
import sys
from importlib.metadata import version
import pika
text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
try:
    params = pika.URLParameters(sys.argv[1])
    params.connection_attempts, params.socket_timeout, params.stack_timeout = 1, 5, 10
    connection = pika.BlockingConnection(params)
    server = connection._impl.server_properties
    connection.close()
    erlang = text(server.get('platform', '?')).removeprefix('Erlang/OTP ')
    broker = f"RabbitMQ {text(server.get('version', '?'))}, Erlang {erlang}"
except Exception as exc:
    broker = f"RabbitMQ unreachable ({type(exc).__name__}: {exc})"
print(f"Python {sys.version.split()[0]}, pika {version('pika')}, {broker}")
EOF
)"
leg_versions() { local url="$1"; shift; section "leg: $("$@" -c "$LEG_VERSIONS" "$url" 2>&1 | tail -n 1)"; }

# install_pika VENV SPEC: pika as SPEC says, after the project (ensure_venv); stamped like ensure_venv: done
# again after the project is reinstalled, and daily (so 'pika<2' stays the newest the pin admits).
install_pika() {
  local venv="$1" spec="$2" stamp="$1/.installed-pika"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$spec" ] || [ "$venv/.installed-test" -nt "$stamp" ] \
      || [ -n "$(find "$stamp" -mmin +1440)" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$spec"
    echo "$spec" > "$stamp"
  fi
}

# project_pika VENV: the project's own pika requirement (pyproject's pin) as installed in VENV, e.g. pika<2,>=1.3.
project_pika() {
  "$1/bin/python" -c "
from importlib.metadata import requires
for line in requires('pubsubpy-events') or []:
    spec = line.split(';')[0].replace(' ', '')
    if spec.lower().startswith('pika') and spec[4:5] in ('<', '>', '=', '!', '~', '') and 'extra' not in line:
        print(spec)
        break
else:
    print('pika<2')
"
}

# skip_leg WHAT WHY: a leg that cannot run here.
skip_leg() { echo "SKIPPED: $1: $2"; skipped+=("$1"); }

# await_next RELEASE: wait for its background start; fails (printing why) when the node is not up.
await_next() {
  local release="$1" rc=0
  wait "${next_up[$release]}" || rc=$?
  if [ "$rc" -ne 0 ]; then
    cat "$logs/next-$release.log"
    # again in the foreground (idempotent): a start that failed in the background is retried once
    if [ "$rc" -ne 4 ]; then rc=0; bash scripts/rabbitmq-next.sh --release "$release" up || rc=$?; fi
  fi
  return "$rc"
}

if ! await_next 4.0; then
  skip_leg "contract suite on RabbitMQ 4.0" "the trixie root or its node could not be made (above)"
else
  url="amqp://guest:guest@127.0.0.1:5702/%2F"
  leg_versions "$url" .venv/bin/python
  in_background "contract-suite-on-rabbitmq-4.0" env PUBSUBPY_TEST_URL="$url" \
    PUBSUBPY_CONTRACT_BACKENDS=rabbitmq,rabbitmq-async .venv/bin/pytest tests/contract tests/test_dead_letter_give_back.py -q
fi

# Leg 2 runs in the background beside leg 1: another broker, another Python, its own TLS node (name and
# port below); both legs mostly wait on their brokers. Its outage test follows it in the same group.
leg2_group() {
  local began=$SECONDS rc=0
  PUBSUBPY_TEST_URL="$url" PUBSUBPY_TLS_PORT=$LEG2_TLS_PORT PUBSUBPY_TLS_NODE=pubsubpytls2 \
    bash scripts/rabbitmq-next.sh exec .venv-py314/bin/pytest -m "not cluster and not browser and not slow and not outage" \
    "$@" || rc=$?
  section "leg 2 took $((SECONDS - began)) s"
  if [ $# -eq 0 ]; then
    section "the outage test on leg 2"
    PUBSUBPY_TEST_URL="$url" bash scripts/rabbitmq-next.sh exec .venv-py314/bin/pytest -m outage -q -s \
      tests/test_outage.py || rc=$?
  fi
  return $rc
}
LEG2_TLS_PORT=5694
section "leg 2: pubsubpy on Python 3.14 and RabbitMQ 4.3 (scripts/rabbitmq-next.sh: Debian sid root, 5701)"
if ! await_next 4.3; then
  skip_leg "leg 2 (Python 3.14, RabbitMQ 4.3)" "the sid root or its node could not be made (above)"
elif ! bash scripts/rabbitmq-next.sh exec bash -c "source scripts/_env.sh; $(declare -f install_pika project_pika)
    ensure_venv test .venv-py314 python3.14 && install_pika .venv-py314 \"\$(project_pika .venv-py314)\""; then
  skip_leg "leg 2 (Python 3.14, RabbitMQ 4.3)" "could not make .venv-py314 inside the sid root"
else
  if timeout 2 bash -c "echo > /dev/tcp/127.0.0.1/$LEG2_TLS_PORT" 2>/dev/null; then
    echo "note: 127.0.0.1:$LEG2_TLS_PORT is taken (a TLS node outside the root?): leg 2's TLS tests cannot start theirs"
  fi
  url="amqp://guest:guest@127.0.0.1:5701/%2F"
  leg_versions "$url" bash scripts/rabbitmq-next.sh exec .venv-py314/bin/python
  in_background "leg-2-then-its-outage-test" leg2_group "$@"
fi

section "pytest: leg 1, pubsubpy on Python 3.10 and RabbitMQ 3.10 (the system's, 5672)"
began=$SECONDS
python="$(find_python 3.10 || true)"
if [ -z "$python" ]; then
  skip_leg "leg 1 (Python 3.10)" "Python 3.10 not found (pyenv install 3.10)"
else
  ensure_venv test .venv-py310 "$python"
  install_pika .venv-py310 "pika==1.3.2"   # the oldest pika the pin admits
  leg_versions "amqp://guest:guest@127.0.0.1:5672/%2F" .venv-py310/bin/python
  .venv-py310/bin/pytest -m "not cluster and not outage and not restarts" "$@" || status=$?
  section "leg 1 took $((SECONDS - began)) s"
  # The minute-long outage test (tests/test_outage.py) mostly waits: it runs on this leg's broker beside the
  # next groups, which use other brokers, and is awaited at the very end.
  if [ $# -eq 0 ]; then
    in_background "the-outage-test-on-leg-1" .venv-py310/bin/pytest -m outage -q -s tests/test_outage.py
  fi
fi

# The 3-node cluster's tests (their own three brokers; mostly waiting for nodes and elections), after leg 1,
# beside what is left of leg 2.
cluster_started=true
wait "$cluster_up" || cluster_started=false   # (started long ago: a job of this shell, not of the group's)
cluster_group() {
  if ! $cluster_started; then
    echo "the cluster's start in the background failed:"; cat .cluster-up.log
  fi
  # Again (idempotent: seconds when it is up): a start that failed, or a node lost since, is retried
  bash scripts/cluster.sh up || echo "the cluster did not start: its tests skip (under CI=true they fail)"
  .venv/bin/pytest -m cluster -s "$@" tests/test_cluster.py
}
in_background "the-3-node-cluster-tests" cluster_group "$@"

await_background

# Last on leg 1's broker, once nothing else uses it: the tests that stop and start it. After such a restart,
# RabbitMQ 3.10.8 here once stopped answering (connections and rabbitmqctl alike) while later tests made
# quorum queues, and did not recover (in CI on 2026-12-06 and in a clean run on 2026-12-07).
if [ -n "$python" ]; then
  section "pytest: the tests that restart leg 1's broker (marked restarts), last"
  rc=0; .venv-py310/bin/pytest -m restarts -q "$@" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then status=$rc; fi   # 5: extra arguments selected none of them
fi

if [ ${#skipped[@]} -gt 0 ]; then
  section "skipped: ${skipped[*]}"
  if [ "${CI:-}" = "true" ] && [ "$status" -eq 0 ]; then
    echo "under CI=true every leg must run"; status=1
  fi
fi
exit $status
