"""What analysts read: the cost and usage reports over ClickHouse (text, JSON, HTML) and the
spend sums the worker restores its budgets from. Every query goes through `UsageStore`."""
