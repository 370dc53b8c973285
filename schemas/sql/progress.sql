-- Per tenant, "complete up to T": every event the gateway accepted before `complete_until_ms`
-- (receive time, which the gateway's skew correction maps to event time) is reflected in every
-- table. Advanced when a checkpoint is committed; `epoch` is that checkpoint's.
CREATE TABLE IF NOT EXISTS {database}._progress
(
    tenant {lc_string},
    complete_until_ms Int64,
    epoch UInt64,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(epoch)
ORDER BY tenant
