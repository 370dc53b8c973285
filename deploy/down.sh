#!/usr/bin/env bash
# Stops exactly what up.sh started (by pid file). Data stays in the state directory;
# `down.sh --purge` deletes it too.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stop_pidfile loadgen
stop_pidfile prometheus
stop_pidfile ingest-gateway
stop_pidfile query-gateway
"$ROOT/deploy/cluster.sh" stop
for name in tansu redis clickhouse; do stop_pidfile "$name"; done
if [[ "${1:-}" == "--purge" ]]; then
    log "deleting $STATE_DIR"
    rm -rf "$STATE_DIR"
fi
