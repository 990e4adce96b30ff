-- Routing explanations (issue: routing by capability, context and budget).
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS route_skipped Array(String) AFTER is_fallback;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS budget_downgrade Bool AFTER route_skipped
