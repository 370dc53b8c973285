-- Every question asked through `POST /api/ask`: the SQL that ran, who answered (provider and
-- model, or the offline translator), latency, tokens and outcome. Written by the query gateway;
-- never one of Ask's views, so no question can read another's.
CREATE TABLE IF NOT EXISTS {database}.ask_log
(
    tenant {lc_string},
    asked_at DateTime,
    asked_at_ms Int64,
    question String,
    sql String,
    provider {lc_string},
    model String,
    attempts UInt8,
    latency_ms UInt32,
    input_tokens UInt32,
    output_tokens UInt32,
    outcome {lc_string},
    detail String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(asked_at)
ORDER BY (tenant, asked_at)
