-- Per tenant and minute: events by name, page views by path, unique visitors and persons,
-- sessions started, bounces, total session duration (ms), as (metric, dimension) -> value.
-- A corrected value is rewritten with a higher version; a value that fell to zero is
-- written as 0.
CREATE TABLE IF NOT EXISTS {database}.agg_minute_metrics
(
    tenant {lc_string},
    minute DateTime,
    metric {lc_string},
    dimension String,
    value Int64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, minute, metric, dimension)
