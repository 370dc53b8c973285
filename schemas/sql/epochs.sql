-- Epoch plans: which records each epoch read. A source writes the row of epoch `epoch` for a
-- partition (the offset after its last record in that epoch) before any sink may write the
-- epoch's results. A restart replays the same records in the same epochs, so every result
-- it rewrites equals the one written before the crash, including results that a later epoch
-- replaced: nothing written by an epoch past the checkpoint is left behind.
CREATE TABLE IF NOT EXISTS {database}._epochs
(
    topic String,
    partition Int32,
    epoch UInt64,
    next_offset Int64,
    written_at DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(written_at)
ORDER BY (topic, partition, epoch)
