#!/usr/bin/env bash
# The demo: publish, subscribe, drain and a dead letter. memory:// by default;
# pass --url amqp://guest:guest@127.0.0.1:5672/%2F to run it on RabbitMQ.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv cli
exec .venv/bin/pubsubpy demo "$@"
