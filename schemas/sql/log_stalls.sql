-- Partitions whose log is not the one the checkpoints describe (a broker that lost its log, a
-- recreated topic, retention that deleted records a replay needs). The engine stops reading
-- and records why; a row with `resolved = 1` (the log came back, or a recovery ran) ends the
-- stall. The newest row of a partition wins. `/api/progress` and the ClickstreamLogMismatch
-- alert read it; `found_offset` is the log's end, start or the compared offset by `reason`.
CREATE TABLE IF NOT EXISTS {database}._log_stalls
(
    topic String,
    partition Int32,
    reason String,
    expected_offset Int64,
    found_offset Int64,
    detected_at_ms Int64,
    resolved UInt8
)
ENGINE = ReplacingMergeTree(detected_at_ms)
ORDER BY (topic, partition)
