-- Per tenant, hour, visitor and person: activity events and page views. Exact unique visitors
-- and persons over a long range are distinct counts over these rows (a visitor's events in
-- an hour are one row) instead of over every event. A row whose events moved to another
-- person (an identity merge) is rewritten with events = 0; readers skip those.
CREATE TABLE IF NOT EXISTS {database}.agg_hour_visitors
(
    tenant {lc_string},
    hour DateTime,
    visitor_id String,
    person_id String,
    events UInt32,
    page_views UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, hour, visitor_id, person_id)
