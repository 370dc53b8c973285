-- Erasure requests and their completion (the audit trail of GDPR Art. 17 requests and tenant
-- removals; admin keys only). The query gateway writes a request's `pending` row when the
-- control record is in Kafka; the engine's process 0 writes its `completed` row (a higher
-- version) once every table is clean. Ids appear only as salted hashes; the requester as a
-- key id (a hash prefix of the admin key), never the key.
CREATE TABLE IF NOT EXISTS {database}._deletions
(
    request_id String,
    tenant String,
    kind String,
    id_hashes Array(String),
    requester_key_id String,
    requested_at_ms Int64,
    status String,
    completed_at_ms Int64,
    removed_tables Array(String),
    removed_rows Array(UInt64),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY request_id
