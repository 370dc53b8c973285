#!/usr/bin/env bash
# Starts the whole pipeline locally: installs and starts ClickHouse, Redis and the Kafka-
# protocol broker, builds the release binaries, starts a 2-process engine cluster, the ingest
# gateway and a demo traffic generator, then prints what runs where. Safe to run again: servers
# that are up stay up, the project's own processes are restarted on the fresh build.
# `up.sh --prometheus` also starts Prometheus (Debian's package) with deploy/prometheus.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WITH_PROMETHEUS=0
for argument in "$@"; do
    case "$argument" in
        --prometheus) WITH_PROMETHEUS=1 ;;
        *) die "unknown option $argument (the only one is --prometheus)" ;;
    esac
done
PROMETHEUS_PORT="${CLICKSTREAM_PROMETHEUS_PORT:-19090}"

INGEST_PORT="${CLICKSTREAM_INGEST_PORT:-18080}"
QUERY_PORT="${CLICKSTREAM_QUERY_PORT:-18081}"
DEMO_RATE="${CLICKSTREAM_DEMO_RATE:-30}"

servers_up
ensure_geoip

log "building release binaries (first build takes a few minutes)"
(cd "$ROOT" && cargo build --release --quiet -p clickstream-engine -p clickstream-ingest-gateway -p clickstream-query-gateway -p clickstream-loadgen)

# The deployment's secret salt of erased ids' hashes (engine and query gateway share it): made
# once, kept with the state.
[ -s "$STATE_DIR/erasure_salt" ] || head -c 24 /dev/urandom | base64 >"$STATE_DIR/erasure_salt"
ERASURE_SALT="$(cat "$STATE_DIR/erasure_salt")"

cat >"$STATE_DIR/engine.toml" <<TOML
epoch_ms = 500
[kafka]
brokers = "$CLICKSTREAM_KAFKA_BROKERS"
topic = "events"
partitions = 12
[clickhouse]
url = "$CLICKSTREAM_CLICKHOUSE_URL"
database = "clickstream"
[metrics]
listen = "127.0.0.1:19464"
[live]
redis_url = "$CLICKSTREAM_REDIS_URL"
[retention]
tenants_file = "$ROOT/deploy/tenants.toml"
[erasure]
salt = "$ERASURE_SALT"
TOML

for name in loadgen ingest-gateway query-gateway; do stop_pidfile "$name"; done
"$ROOT/deploy/cluster.sh" start 2 1 "$STATE_DIR/engine.toml"

nohup "$ROOT/target/release/ingest-gateway" --listen "127.0.0.1:$INGEST_PORT" \
    --kafka-brokers "$CLICKSTREAM_KAFKA_BROKERS" --topic events --tenants "$ROOT/deploy/tenants.toml" \
    --redis-url "$CLICKSTREAM_REDIS_URL" \
    >"$LOG_DIR/ingest-gateway.log" 2>&1 &
echo $! >"$PID_DIR/ingest-gateway.pid"
wait_for "ingest gateway" 30 "$LOG_DIR/ingest-gateway.log" curl -fsS "http://127.0.0.1:$INGEST_PORT/readyz"

nohup "$ROOT/target/release/query-gateway" --listen "127.0.0.1:$QUERY_PORT" \
    --clickhouse-url "$CLICKSTREAM_CLICKHOUSE_URL" --database clickstream --tenants "$ROOT/deploy/tenants.toml" \
    --redis-url "$CLICKSTREAM_REDIS_URL" \
    --kafka-brokers "$CLICKSTREAM_KAFKA_BROKERS" --erasure-salt "$ERASURE_SALT" \
    >"$LOG_DIR/query-gateway.log" 2>&1 &
echo $! >"$PID_DIR/query-gateway.pid"
wait_for "query gateway" 30 "$LOG_DIR/query-gateway.log" curl -fsS "http://127.0.0.1:$QUERY_PORT/healthz"

if [[ "$WITH_PROMETHEUS" == 1 ]]; then
    stop_pidfile prometheus
    claim_port prometheus "$PROMETHEUS_PORT"
    nohup prometheus --config.file="$ROOT/deploy/prometheus/prometheus.yml" \
        --storage.tsdb.path="$STATE_DIR/prometheus" --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
        >"$LOG_DIR/prometheus.log" 2>&1 &
    echo $! >"$PID_DIR/prometheus.pid"
    wait_for "prometheus" 30 "$LOG_DIR/prometheus.log" curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"
fi

nohup "$ROOT/target/release/loadgen" --gateway "http://127.0.0.1:$INGEST_PORT" --rate "$DEMO_RATE" \
    >"$LOG_DIR/loadgen.log" 2>&1 &
echo $! >"$PID_DIR/loadgen.pid"

count_events() {
    curl -fsS "$CLICKSTREAM_CLICKHOUSE_URL" --data-binary "SELECT count() FROM clickstream.events FINAL" 2>/dev/null
}
has_events() { [[ "$(count_events)" =~ ^[1-9] ]]; }
wait_for "demo traffic in ClickHouse" 60 "$LOG_DIR/engine-0.log" has_events

# Eight weeks of history for the demo tenant, once per database, so the dashboard's retention
# grid and comparisons have weeks to show. Written straight into ClickHouse: the engine keeps
# events older than its lateness (72 h) as late, counted nowhere (loadgen --help).
has_history() {
    [[ "$(curl -fsS "$CLICKSTREAM_CLICKHOUSE_URL" --data-binary \
        "SELECT count() FROM clickstream.events WHERE tenant = 'demo' AND event_time < now() - INTERVAL 4 DAY" 2>/dev/null)" =~ ^[1-9] ]]
}
if ! has_history; then
    "$ROOT/target/release/loadgen" --seed-history-days 56 --tenant demo \
        --clickhouse-url "$CLICKSTREAM_CLICKHOUSE_URL" --database clickstream >>"$LOG_DIR/loadgen-history.log" 2>&1 \
        || echo "warning: the demo's history was not written (see $LOG_DIR/loadgen-history.log)" >&2
fi

cat <<TEXT

clickstream is running (state and logs in $STATE_DIR):
  ingest gateway   http://127.0.0.1:$INGEST_PORT   POST /v1/{track,page,screen,identify,alias,group,batch}
                   write key: demo_write_key (tenant "demo"); /healthz /readyz; metrics on http://127.0.0.1:19480/metrics
  engine           2 processes (deploy/cluster.sh), metrics on http://127.0.0.1:19464/metrics and :19465
  demo traffic     loadgen at $DEMO_RATE events/s, and 8 weeks of history written at the first start
  ClickHouse       $CLICKSTREAM_CLICKHOUSE_URL   database "clickstream"  ($(count_events) events so far)
  Kafka (tansu)    $CLICKSTREAM_KAFKA_BROKERS   topic "events"
  Redis            $CLICKSTREAM_REDIS_URL   (live counters: engine -> query gateway /live; rate limits)
  dashboard        http://127.0.0.1:$QUERY_PORT/#key=demo_read_key   (REST API: /openapi.json)
                   read-only share link: http://127.0.0.1:$QUERY_PORT/#share=demo_share_key
                   Ask: POST /api/ask (offline translator unless CLICKSTREAM_ASK_PROVIDER is set);
                   GraphQL: POST /api/graphql; metrics on http://127.0.0.1:19481/metrics

$(if [[ "$WITH_PROMETHEUS" == 1 ]]; then echo "  Prometheus       http://127.0.0.1:$PROMETHEUS_PORT   (alerts: /alerts; Grafana dashboard: deploy/grafana/clickstream.json)"; fi)

Try:
  curl -s $CLICKSTREAM_CLICKHOUSE_URL --data-binary "SELECT type, count() FROM clickstream.events FINAL GROUP BY type"
  curl -s -u demo_write_key: http://127.0.0.1:$INGEST_PORT/v1/track -d '{"anonymousId":"me","event":"Hello"}'
  curl -s -H 'Authorization: Bearer demo_read_key' http://127.0.0.1:$QUERY_PORT/api/ask -d '{"question":"top pages in the last 7 days"}'
  curl -s -H 'Authorization: Bearer demo_read_key' http://127.0.0.1:$QUERY_PORT/api/graphql -d '{"query":"{ stats(input: {metrics: [VISITORS], dateRange: \"7d\", dimensions: [\"visit:country\"]}) { rows { dimensions metrics } } }"}'
Stop everything with deploy/down.sh
TEXT
