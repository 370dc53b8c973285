-- Every identify/alias claim ever accepted for processing. The identity map is a function of
-- these, so the engine reloads them at start: persons, and which identify of an anonymous id
-- came first, survive restarts without keeping old events. The claim's Kafka position lets a
-- restart reload only the claims it will not replay (those below the low-water offset), so
-- replayed epochs see the identity map exactly as it was when they first ran.
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
ORDER BY (tenant, kind, from_id, user_id, message_id)
