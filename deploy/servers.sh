#!/usr/bin/env bash
# Installs (if missing) and starts the servers the project needs: ClickHouse, Redis, a Kafka-
# protocol broker. `servers.sh down` stops them.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-up}" in
    up) servers_up; log "ClickHouse $CLICKSTREAM_CLICKHOUSE_URL  Redis $CLICKSTREAM_REDIS_URL  Kafka $CLICKSTREAM_KAFKA_BROKERS" ;;
    down) for name in tansu redis clickhouse; do stop_pidfile "$name"; done ;;
    *) die "usage: servers.sh [up|down]" ;;
esac
