#!/usr/bin/env bash
# The whole test suite: installs what it needs, starts RabbitMQ if it is not
# answering, then ruff, mypy --strict and pytest. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv test
bash scripts/start-rabbitmq.sh
echo "== ruff"; .venv/bin/ruff check pubsubpy tests bench
echo "== mypy --strict"; .venv/bin/mypy pubsubpy tests/typing
echo "== pytest"; .venv/bin/pytest "$@"
