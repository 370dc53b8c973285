#!/usr/bin/env bash
# Starts or stops only this state directory's ClickHouse.
#
#   deploy/clickhouse.sh start|stop
#
# The fault tests run a private server with their own CLICKSTREAM_STATE_DIR and
# CLICKSTREAM_CLICKHOUSE_{HTTP,TCP}_PORT, and stop and start it under a running engine.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
    start) start_clickhouse ;;
    stop) stop_pidfile clickhouse ;;
    *) die "usage: clickhouse.sh start|stop" ;;
esac
