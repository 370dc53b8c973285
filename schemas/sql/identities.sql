-- The person of every linked id (ids in no link are their own person). An unmerged id is
-- rewritten with deleted = 1.
CREATE TABLE IF NOT EXISTS {database}.identities
(
    tenant {lc_string},
    id_kind {lc_string},
    id String,
    person_id String,
    deleted UInt8,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, id, id_kind)
