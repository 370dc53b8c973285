-- Source positions the engine has made durable: every record of `topic`/`partition` below
-- `next_offset` is reflected in every output table. Newer checkpoints supersede older ones;
-- offsets only grow, so the newest row of a partition is the one with the largest offset.
CREATE TABLE IF NOT EXISTS {database}._checkpoints
(
    topic String,
    partition Int32,
    next_offset Int64,
    epoch UInt64,
    written_at DateTime
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (topic, partition)
