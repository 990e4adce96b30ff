"""The worker: Kafka in, the stages in order, replies and usage events out."""
