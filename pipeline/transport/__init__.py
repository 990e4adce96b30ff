"""Edges to the outside world (Kafka, ClickHouse, LLM providers), each behind one small interface."""
