-- Kafka records the engine could not decode (unknown wire version, corruption). Kept with
-- their position so nothing disappears silently and an operator can replay them once fixed.
CREATE TABLE IF NOT EXISTS {database}._dead_letters
(
    topic String,
    partition Int32,
    offset Int64,
    error String,
    payload_hex String,
    seen_at DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(seen_at)
ORDER BY (topic, partition, offset)
