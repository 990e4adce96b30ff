"""The wire contract: event models (`models`), the rules they share with the published JSON
Schemas (`wire_rules`), and what is generated from them (`schema_export`, `asyncapi`)."""
