-- What the engine accepted but could not use as sent, one row per problem, so that a tenant
-- can see and fix its integration. `type = 'placeholder_id'`: the id in `field` (userId,
-- anonymousId or previousId) is a placeholder such as "undefined" or "null"; it linked
-- nothing, and the event was attributed to its other id. Rewritten identically on replay.
CREATE TABLE IF NOT EXISTS {database}.ingestion_warnings
(
    tenant {lc_string},
    type {lc_string},
    message_id String,
    field {lc_string},
    value String,
    event_time DateTime,
    event_time_ms Int64,
    received_at DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (tenant, type, message_id, field)
