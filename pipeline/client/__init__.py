"""Publish a request to the pipeline over Kafka and await its reply, from Python.

    from pipeline.client import PipelineClient

    async with PipelineClient(settings) as client:
        reply = await client.complete(messages=[{"role": "user", "content": "Hi"}], task_type="summarize")
        result = await client.process_text("Summarise: ...", "summarize")   # .content .model .usage .error

`SyncPipelineClient` offers the same calls, blocking. How replies are routed to the right client,
and what that costs at scale, is described in `pipeline/client/_async.py`. Other languages code
against the JSON Schemas in `schemas/` (see docs/producers.md and examples/node/).
"""

from pipeline.client._async import (
    ClientError,
    PipelineClient,
    ProcessResult,
    PublishError,
    ReplyTimeout,
    StreamRestart,
)
from pipeline.client._sync import SyncPipelineClient

__all__ = ["ClientError", "PipelineClient", "ProcessResult", "PublishError", "ReplyTimeout", "StreamRestart",
           "SyncPipelineClient"]
