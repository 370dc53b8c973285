#!/usr/bin/env bash
# The long crash test, run by hand (CI runs the short one): more events, more kills, an
# optimised build. Prints every kill and the table-by-table comparison with the reference.
#
#   deploy/crash-test.sh [EVENTS] [KILLS] [SEED]     (defaults: 300000 40 random)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
servers_up
CLICKSTREAM_CRASH_EVENTS="${1:-300000}" CLICKSTREAM_CRASH_KILLS="${2:-40}" \
CLICKSTREAM_CRASH_SEED="${3:-$RANDOM}" \
    cargo test --release -p clickstream-engine --test crash -- --nocapture
