-- Events, one row per message_id, enriched with the session and person the engine derived.
-- When a correction changes them (a session merge, an identity merge) the row is rewritten
-- with a higher version; replays after a crash rewrite identical rows. ReplacingMergeTree
-- keeps the highest version; readers use FINAL (or argMax by version).
-- Partitioned by month, never by tenant: thousands of tenants would explode the part count.
CREATE TABLE IF NOT EXISTS {database}.events
(
    tenant {lc_string},
    message_id String,
    type {lc_string},
    name String,
    anonymous_id String,
    user_id String,
    previous_id String,
    group_id String,
    event_time DateTime,
    event_time_ms Int64,
    original_timestamp_ms Nullable(Int64),
    sent_at_ms Nullable(Int64),
    received_at DateTime,
    received_at_ms Int64,
    path String,
    url String,
    referrer String,
    title String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    ip String,
    user_agent String,
    is_bot UInt8,
    locale {lc_string},
    library {lc_string},
    properties Nested(key String, value String),
    traits Nested(key String, value String),
    context Nested(key String, value String),
    session_id String,
    person_id String,
    late UInt8,
    utm_content String DEFAULT '',
    utm_term String DEFAULT '',
    source String DEFAULT '',
    channel {lc_string} DEFAULT '',
    device {lc_string} DEFAULT '',
    browser {lc_string} DEFAULT '',
    browser_version {lc_string} DEFAULT '',
    os {lc_string} DEFAULT '',
    os_version {lc_string} DEFAULT '',
    country {lc_string} DEFAULT '',
    region String DEFAULT '',
    city String DEFAULT '',
    non_interactive UInt8 DEFAULT 0,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, event_time, message_id)
