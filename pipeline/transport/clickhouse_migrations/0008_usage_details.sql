-- Exact cost: the usage details a call is priced from, each a part of prompt_tokens or completion_tokens (cached_tokens
-- are the cache reads). Rows written before this migration read 0 (they were priced at the plain rates).
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS cache_write_tokens UInt32 DEFAULT 0 AFTER reasoning_tokens;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS audio_input_tokens UInt32 DEFAULT 0 AFTER cache_write_tokens;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS audio_output_tokens UInt32 DEFAULT 0 AFTER audio_input_tokens;
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS image_input_tokens UInt32 DEFAULT 0 AFTER audio_output_tokens;
