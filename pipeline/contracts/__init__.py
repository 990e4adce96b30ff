"""The wire contract: event models (`models`, the public path, re-exporting `common`, `request_parts`,
`request`, `reply` and `accounting`), the rules they share with the published JSON Schemas
(`wire_rules`), and what is generated from them (`schema_export`, `asyncapi`)."""
