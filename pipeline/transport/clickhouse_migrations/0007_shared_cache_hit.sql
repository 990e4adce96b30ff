-- Response cache scope `shared`: a hit on another tenant's answer, booked to the tenant served at what the call would
-- have cost (no provider was paid for it: provider spend is the sum over rows where NOT shared_cache_hit).
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS shared_cache_hit Bool DEFAULT false AFTER tokens_estimated;
