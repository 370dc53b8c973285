#!/usr/bin/env bash
# Starts or stops a P-process engine cluster on loopback.
#
#   deploy/cluster.sh start [PROCESSES] [WORKERS] [CONFIG]   (defaults: 2 1 $STATE_DIR/engine.toml)
#   deploy/cluster.sh stop
#
# Writes the hostfile (one loopback address per process) and runs process i as
#   engine -w WORKERS -n PROCESSES -p i -h HOSTFILE --config CONFIG
# exactly as timely defines those flags. Each process gets a pid file and a log.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENGINE_BIN="${ENGINE_BIN:-$ROOT/target/release/engine}"
CLUSTER_BASE_PORT="${CLICKSTREAM_CLUSTER_BASE_PORT:-12100}"

stop_cluster() {
    local pidfile
    for pidfile in "$PID_DIR"/engine-*.pid; do
        [[ -e "$pidfile" ]] || continue
        stop_pidfile "$(basename "$pidfile" .pid)"
    done
}

start_cluster() {
    local processes="${1:-2}" workers="${2:-1}" config="${3:-$STATE_DIR/engine.toml}"
    [[ -x "$ENGINE_BIN" ]] || die "no engine binary at $ENGINE_BIN (cargo build --release -p clickstream-engine)"
    [[ -f "$config" ]] || die "no engine config at $config"
    stop_cluster
    local hostfile="$STATE_DIR/cluster-hosts"
    : >"$hostfile"
    for ((i = 0; i < processes; i++)); do echo "127.0.0.1:$((CLUSTER_BASE_PORT + i))" >>"$hostfile"; done
    for ((i = 0; i < processes; i++)); do
        nohup "$ENGINE_BIN" -w "$workers" -n "$processes" -p "$i" -h "$hostfile" --config "$config" \
            >"$LOG_DIR/engine-$i.log" 2>&1 &
        echo $! >"$PID_DIR/engine-$i.pid"
    done
    log "engine cluster: $processes processes x $workers workers (logs: $LOG_DIR/engine-*.log)"
}

case "${1:-}" in
    start) shift; start_cluster "$@" ;;
    stop) stop_cluster ;;
    *) die "usage: cluster.sh start [PROCESSES] [WORKERS] [CONFIG] | stop" ;;
esac
