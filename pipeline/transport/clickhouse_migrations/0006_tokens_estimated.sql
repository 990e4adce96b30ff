-- Paid-but-failed attempts: token counts of a broken stream counted from its delivered text (the provider sent none).
ALTER TABLE {database}.llm_usage ADD COLUMN IF NOT EXISTS tokens_estimated Bool DEFAULT false AFTER cache_hit;
