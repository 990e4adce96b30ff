-- One row per provider call attempt, failed ones included.
-- ReplacingMergeTree on event_id: a re-delivered usage event replaces its twin at merge time;
-- exact reports read with FINAL.
CREATE TABLE IF NOT EXISTS {database}.llm_usage
(
    event_id          String,
    request_id        String,
    attempt           UInt16,
    ts                DateTime64(3, 'UTC'),
    tenant            LowCardinality(String),
    task_type         LowCardinality(String),
    model             LowCardinality(String),
    provider          LowCardinality(String),
    status            LowCardinality(String),
    error_code        LowCardinality(String),
    is_fallback       Bool,
    prompt_tokens     UInt32,
    completion_tokens UInt32,
    total_tokens      UInt32,
    cost_usd          Decimal(18, 9),
    latency_ms        Float64,
    kafka_partition   Int32,
    kafka_offset      Int64,
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (toDate(ts), tenant, event_id)
