#!/usr/bin/env bash
# Runs every check and test: installs and starts the servers the tests talk to (the same
# installer as up.sh), then formatting, lints, and the whole test suite. CI runs exactly this.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
started=$SECONDS

# A cold one-shot build gains nothing from incremental compilation and its cache is GBs.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL=0; fi
servers_up
ensure_sdks
ensure_geoip
ensure_chdb
ensure_kube_validate
log "formatting"
cargo fmt --all --check
log "lints"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The engine's diagnostic build (live heap bytes counted) is compiled and linted here too.
cargo clippy -p clickstream-engine --all-targets --features live-heap --quiet -- -D warnings
log "tests"
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$LOG_DIR/test-output.log" || status=$?
summary="$(awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
    END { printf "%d passed, %d failed, %d skipped", passed, failed, ignored }' "$LOG_DIR/test-output.log")"
log "finished in $((SECONDS - started))s"
echo "tests: $summary"
exit "$status"
