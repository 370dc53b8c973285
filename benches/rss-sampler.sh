#!/usr/bin/env bash
# benches/rss-sampler.sh OUT: every 2 s, the engine's RSS (total and anonymous), its consumer lag, pending
# records and their payload bytes, checkpoint age, sink failures, state entries summed, records consumed, the bytes
# librdkafka fetched ahead (fetchq), and what each allocator holds (mimalloc committed, libc malloc in use and free,
# mimalloc's live bytes when the engine is a `live-heap` build, else 0),
# in KiB, to find transient peaks and tell which allocator holds them.
# Run it beside `bench memory` (it follows whichever `engine` process runs); stop it with kill.
out=${1:?usage: benches/rss-sampler.sh OUT}
echo "time pid rss_kb anon_kb lag pending pending_bytes ckpt_age sink_fail state_sum records fetchq_kb mi_commit_kb libc_used_kb libc_free_kb mi_live_kb" > "$out"
while true; do
  for pid in $(pgrep -x engine); do
    [ -r /proc/$pid/status ] || continue
    read rss anon < <(awk '/^VmRSS/{r=$2}/^RssAnon/{a=$2}END{print r, a}' /proc/$pid/status)
    cfg=$(tr '\0' '\n' < /proc/$pid/cmdline | grep -A1 -- '--config' | tail -1)
    listen=$(grep -o 'listen = "[^"]*"' "$cfg" 2>/dev/null | cut -d'"' -f2)
    m=$(curl -s -m 1 "http://$listen/metrics")
    val() { echo "$m" | awk -v n="$1" '$1 ~ "^"n {s+=$NF} END{printf "%.0f", s}'; }
    kib() { echo "$m" | awk -v n="$1" 'index($1, n) == 1 {s+=$NF} END{printf "%.0f", s/1024}'; }
    echo "$(date +%T) $pid $rss $anon $(val clickstream_engine_consumer_lag) $(val clickstream_engine_pending_records) $(val clickstream_engine_pending_bytes) $(val clickstream_engine_checkpoint_age_seconds) $(val clickstream_engine_sink_failures_total) $(val clickstream_engine_state_entries) $(val clickstream_engine_records_consumed_total) $(kib clickstream_engine_fetch_queue_bytes) $(kib 'clickstream_engine_heap_bytes{allocator="mimalloc",kind="committed"') $(kib 'clickstream_engine_heap_bytes{allocator="libc",kind="in_use"') $(kib 'clickstream_engine_heap_bytes{allocator="libc",kind="free"') $(kib 'clickstream_engine_heap_bytes{allocator="mimalloc",kind="live"')" >> "$out"
  done
  sleep 2
done
