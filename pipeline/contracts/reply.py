"""What the pipeline publishes back on a reply topic: the final `CompletionReply`, the
`CompletionChunk`s of a streamed answer, and the parts a reply carries (usage, error, the
provider attempts made, the routing decision, tool calls, choices, rerank results). Consumers
of replies need only this module and `common`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.contracts.common import SCHEMA_VERSION, AttemptOutcome, ErrorCode, SkipReason, WireEvent


class RerankResult(BaseModel):
    """One ranked document of a rerank reply: its position in the request's `documents`, and its score."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0, description="The document's position in the request's `documents`.")
    relevance_score: float = Field(description="The provider's relevance score (higher is more relevant).")


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ReplyError(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str


class Attempt(BaseModel):
    """One provider call made for a request (the fallback chain makes several)."""

    model_config = ConfigDict(frozen=True)

    model: str
    provider: str
    deployment: str | None = None
    outcome: AttemptOutcome
    error_code: ErrorCode | None = None
    latency_ms: float


class SkippedCandidate(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    reason: SkipReason
    detail: str = ""


class FallbackSource(StrEnum):
    """Where a request's fallbacks came from: its own `fallbacks`, or its explicit model's catalog entry."""

    REQUEST = "request"
    CATALOG = "catalog"


class RoutingInfo(BaseModel):
    """Why the answering model was chosen: the candidates passed over, and whether budgets forced it."""

    model_config = ConfigDict(frozen=True)

    skipped: list[SkippedCandidate] = Field(default_factory=list)
    budget_downgrade: bool = False
    fallbacks: list[str] = Field(
        default_factory=list, description="Models tried after the explicit model or the route's candidates, in order "
                                          "(those not eligible are also in `skipped`).")
    fallbacks_source: FallbackSource | None = Field(
        default=None, description="request: the request's own fallbacks; catalog: the explicit model's configured "
                                  "ones.")


class ReplyStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    arguments: str = Field(description="JSON text of the arguments, as the model wrote it.")


class ToolCall(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ReplyChoice(BaseModel):
    """One of the answers a request with `n` > 1 asked for."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    logprobs: Any = Field(default=None, description="With logprobs: this choice's, as the provider sent them.")


class CompletionChunk(WireEvent):
    """A piece of a streamed answer, published to the reply topic before the final reply.

    Chunks of one stream share `stream_id` and are numbered from 0 by `seq`, in order on one
    partition (the request's key): joining their `delta`s gives the reply's `content`. A stream
    whose attempt fails part way is abandoned: the next attempt (a retry or a fallback) streams
    anew under a new `stream_id` (`seq` from 0) whose first chunk names the abandoned one in
    `replaces`; a worker that dies mid-stream leaves the request to be served again, also as a
    new stream. Either way a chunk with a new `stream_id` means: discard what you have. The
    final reply names the stream to keep.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["chunk"] = "chunk"
    request_id: str
    stream_id: str
    seq: int = Field(ge=0)
    delta: str
    model: str = Field(description="Catalog name of the model streaming.")
    replaces: str | None = Field(
        default=None,
        description="On a restarted stream's first chunk: the stream_id of the partial stream to discard.",
    )


class CompletionReply(WireEvent):
    """The answer to one request, published to its `reply_to` (or the default reply topic)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["reply"] = Field("reply", description="Tells a reply from a chunk on the same topic.")
    request_id: str
    status: ReplyStatus
    content: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, description="Calls the model asks the caller to run.")
    finish_reason: str | None = None
    choices: list[ReplyChoice] | None = Field(
        default=None, description="Requests with n > 1: every choice, in order (`content` etc. are the first's).")
    logprobs: Any = Field(
        default=None, description="Requests with logprobs: the answer's token log probabilities, as the provider "
                                  "sent them (OpenAI's {content: [{token, logprob, top_logprobs}]}).")
    parsed: Any = Field(default=None, description="With response_format json: the content, parsed and validated.")
    embeddings: list[list[float]] | None = Field(default=None, description="Embedding requests: one vector per input.")
    results: list[RerankResult] | None = Field(
        default=None, description="Rerank requests: the documents by relevance, best first (top_n of them if set).")
    cached: bool = Field(False, description="Answered from the response cache: no provider call, no cost.")
    stream_id: str | None = Field(default=None, description="Streamed replies: the stream whose chunks built this.")
    stream_chunks: int = Field(
        0, description="Streamed replies: how many chunk events of `stream_id` preceded this reply.")
    stream_restarts: int = Field(
        0, ge=0, description="Streamed replies: partial streams abandoned before `stream_id` (their chunks are void).")
    model: str | None = Field(default=None, description="Catalog name of the model that answered.")
    provider: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: list[Attempt] = Field(default_factory=list)
    error: ReplyError | None = None
    routing: RoutingInfo = Field(default_factory=RoutingInfo)
    metadata: dict[str, Any] = Field(default_factory=dict)
    metadata_truncated: bool = Field(
        False, description="The request's metadata was too large to echo within the record limit; it was dropped."
    )
