-- Analytics columns and rollups (issue: usage analytics that loses nothing and counts nothing twice).
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS requested_model LowCardinality(String) AFTER task_type;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS is_final Bool AFTER is_fallback;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS http_status UInt16 AFTER error_code;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS cached_tokens UInt32 AFTER completion_tokens;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS reasoning_tokens UInt32 AFTER cached_tokens;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS ttft_ms Float64 AFTER latency_ms;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS attributes Map(String, String) AFTER ttft_ms;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS kafka_topic LowCardinality(String) AFTER attributes;
-- Insert deduplication for a non-replicated table: a retried insert with the same
-- insert_deduplication_token is dropped instead of stored twice.
ALTER TABLE {database}.llm_usage MODIFY SETTING non_replicated_deduplication_window = 10000;

-- Daily cost and tokens by tenant, task type, model, provider and status.
CREATE TABLE IF NOT EXISTS {database}.llm_cost_daily
(
    day               Date,
    tenant            LowCardinality(String),
    task_type         LowCardinality(String),
    model             LowCardinality(String),
    provider          LowCardinality(String),
    status            LowCardinality(String),
    calls             UInt64,
    prompt_tokens     UInt64,
    completion_tokens UInt64,
    cost_usd          Decimal(38, 9)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, tenant, task_type, model, provider, status);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.llm_cost_daily_mv TO {database}.llm_cost_daily AS
SELECT toDate(ts) AS day, tenant, task_type, model, provider, status,
       count() AS calls, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(cost_usd) AS cost_usd
FROM {database}.llm_usage
GROUP BY day, tenant, task_type, model, provider, status;

-- Hourly latency quantiles by model and provider.
CREATE TABLE IF NOT EXISTS {database}.llm_latency_hourly
(
    hour      DateTime('UTC'),
    model     LowCardinality(String),
    provider  LowCardinality(String),
    calls     AggregateFunction(count),
    latency   AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, model, provider);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.llm_latency_hourly_mv TO {database}.llm_latency_hourly AS
SELECT toStartOfHour(ts) AS hour, model, provider,
       countState() AS calls, quantilesState(0.5, 0.95, 0.99)(latency_ms) AS latency
FROM {database}.llm_usage
GROUP BY hour, model, provider;

-- Monthly spend by tenant (read by the budget restore at start-up).
CREATE TABLE IF NOT EXISTS {database}.llm_spend_monthly
(
    month    Date,
    tenant   LowCardinality(String),
    cost_usd Decimal(38, 9)
)
ENGINE = SummingMergeTree
ORDER BY (month, tenant);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.llm_spend_monthly_mv TO {database}.llm_spend_monthly AS
SELECT toStartOfMonth(ts) AS month, tenant, sum(cost_usd) AS cost_usd
FROM {database}.llm_usage
GROUP BY month, tenant
