-- Which deployment of a model served each attempt (issue: provider resilience).
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS deployment LowCardinality(String) AFTER provider
