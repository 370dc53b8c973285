-- Every identify/alias claim ever accepted for processing. The identity map is a function of
-- these, so the engine replays them at start: persons, and which identify of an anonymous id
-- came first, survive restarts without keeping old events.
CREATE TABLE IF NOT EXISTS {database}.identity_claims
(
    tenant {lc_string},
    kind {lc_string},
    time_ms Int64,
    message_id String,
    from_id String,
    user_id String
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, kind, from_id, user_id, message_id)
