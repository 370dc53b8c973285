-- Sessions by session_id (the message id of the first event, so its start never changes).
-- A session merged into another is rewritten with deleted = 1; readers filter on it.
CREATE TABLE IF NOT EXISTS {database}.sessions
(
    tenant {lc_string},
    session_id String,
    person_id String,
    visitor_id String,
    start_time DateTime,
    start_ms Int64,
    end_ms Int64,
    duration_ms Int64,
    events UInt32,
    page_views UInt32,
    is_bounce UInt8,
    entry_path String,
    exit_path String,
    entry_referrer String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    deleted UInt8,
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
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(start_time)
ORDER BY (tenant, start_time, session_id)
