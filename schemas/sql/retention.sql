-- What retention did. On servers with TTL: the TTL each table was given (`tenant` empty), so a
-- restart with the same tenants file changes nothing (a new TTL rewrites the table's parts).
-- On 18.16: each mutation pass per table and tenant, with the rows it deleted and how long it
-- took (`duration_ms`, until `system.mutations` reported it done).
CREATE TABLE IF NOT EXISTS {database}._retention
(
    table_name String,
    tenant String,
    rule String,
    cutoff_secs Int64,
    rows UInt64,
    duration_ms UInt64,
    applied_at_ms Int64
)
ENGINE = MergeTree
ORDER BY (table_name, tenant, applied_at_ms)
