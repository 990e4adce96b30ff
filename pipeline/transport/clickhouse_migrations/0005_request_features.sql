-- Request features: embeddings, streaming and the response cache show in every usage row.
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT 'completion' AFTER task_type;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS streamed Bool DEFAULT false AFTER ttft_ms;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS cache_hit Bool DEFAULT false AFTER streamed;
