-- What the pipeline could not use as sent, one row per problem, so that a tenant can see and
-- fix its integration. Rewritten identically on replay. `type`:
-- - `placeholder_id` (engine): the id in `field` (userId, anonymousId or previousId) is a
--   placeholder such as "undefined" or "null"; it linked nothing, and the event was
--   attributed to its other id.
-- - `refused_event` (gateway): the event was not stored; `field` made it unusable, `detail`
--   says why, `value` is what was sent (at most 256 bytes). `message_id` is the event's, or
--   a UUIDv7 the gateway made up when it had none.
-- - `invalid_time_ignored`, `invalid_ip_ignored`, `invalid_context_ignored` (gateway): the
--   event was stored without the field (`timestamp` -> receipt time, `context.ip` -> the
--   request's address, a batch's `context` -> none).
CREATE TABLE IF NOT EXISTS {database}.ingestion_warnings
(
    tenant {lc_string},
    type {lc_string},
    message_id String,
    field {lc_string},
    value String,
    event_time DateTime,
    event_time_ms Int64,
    received_at DateTime,
    detail String DEFAULT ''
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (tenant, type, message_id, field)
