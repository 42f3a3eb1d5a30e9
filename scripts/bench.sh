#!/usr/bin/env bash
# The benchmarks: sets up .venv (the test group includes bench), starts RabbitMQ if needed, prints the table and
# writes bench/results/. Pass --quick for a run of under a minute.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv test
bash scripts/start-rabbitmq.sh
exec .venv/bin/python -m bench.run "$@"
