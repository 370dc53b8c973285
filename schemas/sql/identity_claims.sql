-- The identity claims the engine acted on: the earliest identify-like claim of each
-- (anonymous id, user id) pair, aliases, and user ids known from events without an anonymous
-- id (kind 'user'), each with the Kafka position of the event that made it. The identity map
-- is a function of these, so the engine reloads them at start: persons, and which claim on an
-- anonymous id came first, survive restarts without keeping old events. The position lets a
-- restart reload only the claims it will not replay (those below the low-water offset), so
-- replayed epochs see the identity map exactly as it was when they first ran; it is part of the
-- key, so a later claim of the same subject never replaces an earlier one's row.
CREATE TABLE IF NOT EXISTS {database}.identity_claims
(
    tenant {lc_string},
    kind {lc_string},
    time_ms Int64,
    message_id String,
    from_id String,
    user_id String,
    partition Int32,
    offset Int64
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, kind, from_id, user_id, message_id, partition, offset)
