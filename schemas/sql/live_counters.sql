-- Live per-tenant counters, refreshed every epoch (current value per tenant and counter),
-- e.g. active_visitors_5m: visitors with an event in the last five minutes.
CREATE TABLE IF NOT EXISTS {database}.live_counters
(
    tenant {lc_string},
    counter {lc_string},
    value Int64,
    updated_at DateTime,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, counter)
