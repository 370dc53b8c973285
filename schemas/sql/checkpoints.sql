-- Checkpoints: every sink on every worker has written every epoch up to `epoch`. Per
-- partition, `next_offset` is where the records of later epochs begin, and `low_water` is the
-- first offset a restart must replay to rebuild the state that is still open (dedup ids,
-- sessions, windows); `low_water_epoch` is the epoch that ended at `low_water` (0: the log's
-- beginning), so a restart loads epoch plans only from there. Offsets only grow, so the newest
-- row of a partition is the one with the largest offset. `log_mark` is a fingerprint of the
-- record at `next_offset - 1` (0: unknown), by which a restart recognises the log it describes.
CREATE TABLE IF NOT EXISTS {database}._checkpoints
(
    topic String,
    partition Int32,
    next_offset Int64,
    epoch UInt64,
    low_water Int64,
    low_water_epoch UInt64,
    received_until Int64,
    written_at DateTime,
    log_mark UInt64 DEFAULT 0
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (topic, partition)
