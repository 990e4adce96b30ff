"""The wire contract: every event the pipeline reads or writes.

These pydantic models are the single source of truth; `schemas/*.json` are generated from
them (`pipeline schemas`) and a test fails when the two drift. Producers in other languages
code against those JSON Schemas, so every change here is a contract change: add optional
fields freely, never rename or repurpose one without bumping `SCHEMA_VERSION`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from pipeline.contracts.wire_rules import (
    TOPIC_NAME_MAX,
    TOPIC_NAME_PATTERN,
    parse_rfc3339,
    request_conditions,
    topic_name_problem,
)

SCHEMA_VERSION: Final = 1

#: Header carrying the request id on replies (and accepted on requests).
CORRELATION_HEADER = "correlation_id"

#: The tenant of a request that names none: its idempotency namespace, budget and reply topics.
DEFAULT_TENANT: Final = "default"


class ErrorCode(StrEnum):
    """Machine-readable reasons carried by error replies and dead-letter records."""

    # Input that never reached a provider.
    INVALID_JSON = "invalid_json"
    SCHEMA_INVALID = "schema_invalid"
    TOO_LARGE = "too_large"
    REPLY_TOPIC_NOT_ALLOWED = "reply_topic_not_allowed"
    UNAUTHENTICATED = "unauthenticated"  # the record may not act for its tenant (PIPELINE_TENANT_AUTH)
    UNKNOWN_MODEL = "unknown_model"
    NO_ROUTE = "no_route"
    NO_ELIGIBLE_MODEL = "no_eligible_model"
    BUDGET_EXCEEDED = "budget_exceeded"
    # Provider outcomes (per attempt, and for the final reply when every candidate failed).
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"  # the account's quota or credit is spent: not a rate limit
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    CONTEXT_WINDOW_EXCEEDED = "context_window_exceeded"
    CONTENT_POLICY = "content_policy"
    AUTH_ERROR = "auth_error"
    BAD_REQUEST = "bad_request"
    MALFORMED_RESPONSE = "malformed_response"
    PROVIDER_ERROR = "provider_error"
    ALL_CANDIDATES_FAILED = "all_candidates_failed"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL_ERROR = "internal_error"
    REPLY_UNDELIVERABLE = "reply_undeliverable"  # the reply topic refused the reply for good (dead letters only)
    UNDECODABLE_RECORD = "undecodable_record"  # the Kafka client could not decode the record (dead letters only)
    # Request features.
    UNKNOWN_TEMPLATE = "unknown_template"
    TEMPLATE_VARIABLES = "template_variables"
    INVALID_STRUCTURED_OUTPUT = "invalid_structured_output"
    STREAM_INTERRUPTED = "stream_interrupted"


class SkipReason(StrEnum):
    """Why the router passed over a candidate model for a request."""

    DISABLED = "disabled"
    MISSING_CAPABILITY = "missing_capability"
    CONTEXT_TOO_LONG = "context_too_long"
    OVER_COST_CEILING = "over_cost_ceiling"
    COOLING_DOWN = "cooling_down"
    RATE_LIMIT_REACHED = "rate_limit_reached"
    BUDGET_EXCEEDED = "budget_exceeded"
    LARGER_CONTEXT_NEEDED = "larger_context_needed"


class _Event(BaseModel):
    """Base of every event: unknown fields are rejected so typos surface as errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatMessage(BaseModel):
    """One OpenAI-format chat message. Extra keys (name, tool_calls, tool_call_id, ...) pass through,
    so a tool-calling conversation (assistant `tool_calls`, then `tool` results) is sent as is."""

    model_config = ConfigDict(extra="allow", frozen=True)

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


NonEmptyStr = Annotated[str, Field(min_length=1, max_length=256)]
MAX_INT32: Final = 2**31 - 1
MAX_INT64: Final = 2**63 - 1
#: The most choices (`n`) one request may ask for: each is a full completion, priced as such.
MAX_CHOICES: Final = 8
#: The most `fallbacks` one request may name (each is a provider call it may make).
MAX_FALLBACKS: Final = 8
#: Bounds on a rerank request (Cohere's own: at most 1,000 documents per query is its advice).
MAX_RERANK_DOCUMENTS: Final = 1000
MAX_RERANK_QUERY_CHARS: Final = 32_768
MAX_RERANK_DOCUMENT_CHARS: Final = 100_000
#: The fields only a rerank request carries.
RERANK_FIELDS: Final = ("query", "documents", "top_n")
#: OpenAI's limits on `stop` sequences and `logit_bias` entries.
MAX_STOP_SEQUENCES: Final = 4
MAX_LOGIT_BIAS: Final = 300


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string")  # not a number of seconds
    return parse_rfc3339(value)


def _topic_name(name: str) -> str:
    problem = topic_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def _one_text(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StopSequence = Annotated[str, Field(min_length=1, max_length=256)]
#: A token id, as OpenAI's `logit_bias` keys it: a decimal string.
TokenId = Annotated[str, Field(pattern=r"^[0-9]{1,10}$")]
Penalty = Annotated[float, Field(ge=-2, le=2)]
Stop = StopSequence | Annotated[list[StopSequence], Field(min_length=1, max_length=MAX_STOP_SEQUENCES)]
LogitBias = Annotated[
    dict[TokenId, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=MAX_LOGIT_BIAS),
    WithJsonSchema({"type": "object", "maxProperties": MAX_LOGIT_BIAS, "propertyNames": {"pattern": r"^[0-9]{1,10}$"},
                    "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}}),
]


#: An RFC 3339 date-time with its offset: what JSON Schema's `date-time` format means.
Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339), WithJsonSchema({"type": "string", "format": "date-time"})]
#: A Kafka topic name (legal characters, at most 249, not "." or "..").
TopicName = Annotated[str, Field(min_length=1, max_length=TOPIC_NAME_MAX, pattern=TOPIC_NAME_PATTERN),
                      AfterValidator(_topic_name)]


class RequestKind(StrEnum):
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    RERANK = "rerank"


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}},
                                       description="JSON Schema of the arguments.")


class Tool(BaseModel):
    """A tool the model may call (OpenAI format; LiteLLM translates it for other providers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["function"] = "function"
    function: ToolFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    name: str = Field("response", min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    json_schema: dict[str, Any] = Field(alias="schema", description="The JSON Schema the answer must satisfy.")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """Structured output: any JSON object (`json_object`) or one that satisfies a JSON Schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self

    def schema_problem(self) -> str | None:
        """Why `json_schema.schema` is not a usable JSON Schema (a rule no JSON Schema can state
        about another, so the worker checks it after the contract: `bad_request`), or None."""
        if self.json_schema is None:
            return None
        from jsonschema import SchemaError, validators

        try:
            validators.validator_for(self.json_schema.json_schema).check_schema(self.json_schema.json_schema)
        except SchemaError as exc:
            return f"response_format.json_schema.schema is not a valid JSON Schema: {exc.message}"
        return None

    @property
    def wants_json(self) -> bool:
        return self.type != "text"


class CompletionRequest(_Event):
    """A completion request published by an upstream service to the requests topic."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "request_id": "order-42-summary",
                    "task_type": "summarize",
                    "messages": [{"role": "user", "content": "Summarise: ..."}],
                    "tenant": "acme",
                },
                {
                    "request_id": "ticket-7-summary",
                    "task_type": "summarize",
                    "template": "summarize-ticket",
                    "variables": {"ticket": "The printer is on fire."},
                    "stream": True,
                },
                {
                    "request_id": "doc-9-vectors", "task_type": "embed", "kind": "embedding",
                    "input": ["first", "second"],
                },
                {
                    "request_id": "search-5-rerank", "task_type": "rerank", "kind": "rerank",
                    "query": "How do I reset my password?", "top_n": 2,
                    "documents": ["Resetting a password: open Settings.", "Our office hours.", "Password rules."],
                },
                {
                    "request_id": "order-43-summary", "task_type": "summarize", "model": "gpt-4o-mini",
                    "fallbacks": ["claude-haiku-4-5"], "messages": [{"role": "user", "content": "Summarise: ..."}],
                },
            ],
            # What the validators enforce, stated for producers in other languages (null = absent).
            "allOf": request_conditions(),
        },
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: NonEmptyStr = Field(description="Caller-chosen id; the idempotency key and correlation id.")
    task_type: NonEmptyStr = Field(description="What the request is for; selects the route in config/routing.yaml.")
    kind: RequestKind = Field(
        RequestKind.COMPLETION, description="completion (chat), embedding (vectors of `input`) or rerank "
                                            "(`documents` ordered by relevance to `query`).",
    )
    messages: list[ChatMessage] | None = Field(
        default=None, min_length=1,
        description="OpenAI chat format. A completion sends either `messages` or `template` (+ `variables`).",
    )
    template: NonEmptyStr | None = Field(default=None, description="A prompt template in config/templates.yaml.")
    variables: dict[str, Any] = Field(default_factory=dict, description="Values for the template's variables.")
    input: Annotated[
        list[Annotated[str, Field(min_length=1)]] | None,
        BeforeValidator(_one_text),
        WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1},
                                  {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                                  {"type": "null"}]}),
    ] = Field(default=None, min_length=1, description="Embedding requests: the texts to embed (a string is one text).")
    query: str | None = Field(default=None, min_length=1, max_length=MAX_RERANK_QUERY_CHARS,
                              description="Rerank requests: what the documents are ranked against.")
    documents: list[Annotated[str, Field(min_length=1, max_length=MAX_RERANK_DOCUMENT_CHARS)]] | None = Field(
        default=None, min_length=1, max_length=MAX_RERANK_DOCUMENTS,
        description=f"Rerank requests: the texts to rank (1 to {MAX_RERANK_DOCUMENTS}).")
    top_n: int | None = Field(default=None, ge=1, le=MAX_RERANK_DOCUMENTS,
                              description="Rerank requests: return only the best n results (default: all).")
    stream: bool = Field(False, description="Publish the answer as chunk events, then the final reply.")
    tools: list[Tool] | None = Field(default=None, min_length=1, description="Tools the model may call.")
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = Field(
        default=None, description='"auto", "none", "required" or {"type": "function", "function": {"name": ...}}.'
    )
    response_format: ResponseFormat | None = None
    cache: bool = Field(True, description="false: never answer this request from the response cache.")
    tenant: NonEmptyStr = DEFAULT_TENANT
    model: NonEmptyStr | None = Field(
        default=None, description="A catalog model name; when set, task routing is skipped."
    )
    fallbacks: list[NonEmptyStr] | None = Field(
        default=None, max_length=MAX_FALLBACKS, json_schema_extra={"uniqueItems": True},
        description=f"Catalog models tried, in order, after `model` or the route's candidates (up to {MAX_FALLBACKS}; "
                    "eligibility and budgets still apply). Absent: an explicit `model` keeps the catalog's "
                    "fallbacks for it; []: none.",
    )
    max_cost_usd: float | None = Field(default=None, gt=0, description="Ceiling on this request's cost.")
    max_tokens: int | None = Field(default=None, gt=0, le=MAX_INT32)
    temperature: float | None = Field(default=None, ge=0, le=2)
    # OpenAI's chat parameters, passed on to the provider as given (LiteLLM translates them; a
    # provider without one fails the attempt as bad_request unless the model sets drop_params).
    top_p: float | None = Field(default=None, ge=0, le=1, description="Nucleus sampling: 0 to 1.")
    stop: Stop | None = Field(default=None, description=f"A stop sequence, or a list of up to {MAX_STOP_SEQUENCES}.")
    seed: int | None = Field(default=None, ge=-MAX_INT64 - 1, le=MAX_INT64,
                             description="Best-effort deterministic sampling, where the provider supports it.")
    presence_penalty: Penalty | None = Field(default=None, description="-2 to 2.")
    frequency_penalty: Penalty | None = Field(default=None, description="-2 to 2.")
    logit_bias: LogitBias | None = Field(default=None,
                                         description="Token id (a decimal string) -> bias from -100 to 100.")
    logprobs: bool | None = Field(default=None, description="Ask for the log probabilities of the output tokens.")
    top_logprobs: int | None = Field(default=None, ge=0, le=20,
                                     description="0 to 20 most likely tokens per position; needs logprobs: true.")
    user: NonEmptyStr | None = Field(default=None, description="End-user id passed to the provider (abuse tracking).")
    parallel_tool_calls: bool | None = Field(default=None, description="Whether the model may call several tools "
                                                                       "at once; needs tools.")
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = Field(
        default=None, description="Reasoning models: how hard to think.")
    service_tier: Literal["auto", "default", "flex", "priority", "scale"] | None = Field(
        default=None, description="The provider's processing tier (OpenAI).")
    n: int | None = Field(
        default=None, ge=1, le=MAX_CHOICES,
        description=f"How many choices to generate (1 to {MAX_CHOICES}), each priced; not with stream. The reply's "
                    "`content` is the first, `choices` has them all.",
    )
    extra_body: dict[str, Any] | None = Field(
        default=None, description="Escape hatch: keys merged into the provider's request body as given (LiteLLM's "
                                  "extra_body), unchecked by the pipeline.")
    deadline_ms: int | None = Field(
        default=None, gt=0, le=MAX_INT32,
        description="Answer within this many ms of publishing (the Kafka record timestamp).",
    )
    deadline_at: Rfc3339 | None = Field(default=None, description="Absolute deadline (RFC 3339); the earlier wins.")
    reply_to: TopicName | None = Field(
        default=None, description="Reply topic; must match the worker's allowed reply topic pattern.",
        json_schema_extra={"not": {"enum": [".", ".."]}},
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Echoed back unchanged in the reply.")

    @model_validator(mode="after")
    def _shape_fits_kind(self) -> CompletionRequest:
        if self.kind is RequestKind.RERANK:
            return self._rerank_shape()
        given = [name for name in RERANK_FIELDS if getattr(self, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} belong to rerank requests (kind: rerank)")
        if self.kind is RequestKind.EMBEDDING:
            if self.input is None:
                raise ValueError("an embedding request needs input (a text or a list of texts)")
            extra = [name for name in ("messages", "template", "tools", "response_format") if getattr(self, name)]
            if self.stream:
                extra.append("stream")
            if extra:
                raise ValueError(f"an embedding request takes input only, not {', '.join(extra)}")
            return self
        if self.input is not None:
            raise ValueError("input belongs to embedding requests (kind: embedding)")
        if (self.messages is None) == (self.template is None):
            raise ValueError("a completion request needs messages or template, not both")
        if self.variables and self.template is None:
            raise ValueError("variables are given but no template")
        if self.tool_choice is not None and self.tools is None:
            raise ValueError("tool_choice needs tools")
        return self._sampling_fits()

    @model_validator(mode="after")
    def _fallbacks_distinct(self) -> CompletionRequest:
        """A model named twice would only be called twice for the same failure."""
        names = self.fallbacks or []
        repeated = sorted({f for f in names if names.count(f) > 1 or f == self.model})
        if repeated:
            raise ValueError(f"fallbacks: {', '.join(map(repr, repeated))} named twice or as the model itself")
        return self

    def _rerank_shape(self) -> CompletionRequest:
        """A rerank request takes query, documents and top_n, nothing that shapes a chat answer."""
        missing = [name for name in ("query", "documents") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a rerank request needs query and documents; missing {', '.join(missing)}")
        extra = [name for name in ("messages", "template", "input", "tools", "response_format") if getattr(self, name)]
        if self.stream:
            extra.append("stream")
        if extra:
            raise ValueError(f"a rerank request takes query, documents and top_n only, not {', '.join(extra)}")
        return self

    def _sampling_fits(self) -> CompletionRequest:
        if self.parallel_tool_calls is not None and self.tools is None:
            raise ValueError("parallel_tool_calls needs tools")
        if self.top_logprobs is not None and self.logprobs is not True:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.stream and (self.n or 1) > 1:
            raise ValueError(f"n={self.n} cannot be streamed: a stream carries one choice (send stream: false)")
        return self


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


class AttemptOutcome(StrEnum):
    OK = "ok"
    ERROR = "error"


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


class CompletionChunk(_Event):
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


class CompletionReply(_Event):
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


def _new_event_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class UsageEvent(_Event):
    """One provider call attempt (failed ones included), for cost accounting in ClickHouse."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=_new_event_id, description="Minted before the call; dedup key.")
    request_id: str
    tenant: str
    task_type: str
    requested_model: str = Field("", description="The request's explicit model, else its route's first choice.")
    model: str
    provider: str
    deployment: str = ""
    status: AttemptOutcome
    error_code: ErrorCode | None = None
    http_status: int = Field(0, description="The provider's HTTP status (200 on success, 0 if none).")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = Field(0, description="Cache reads (OpenAI cached_tokens, Anthropic cache_read_input_tokens), "
                                              "part of prompt_tokens.")
    reasoning_tokens: int = Field(0, description="Reasoning tokens, part of completion_tokens.")
    cache_write_tokens: int = Field(0, description="Prompt tokens written to the provider's cache (Anthropic "
                                                   "cache_creation_input_tokens), part of prompt_tokens.")
    audio_input_tokens: int = Field(0, description="Audio tokens, part of prompt_tokens.")
    audio_output_tokens: int = Field(0, description="Audio tokens, part of completion_tokens.")
    image_input_tokens: int = Field(0, description="Image tokens, part of prompt_tokens.")
    total_tokens: int = 0
    cost_usd: float = Field(0.0, description="USD, priced by token class from the usage details "
                                             "(docs/analytics.md, Exact cost).")
    latency_ms: float = 0.0
    ttft_ms: float = Field(0.0, description="Time to first token (streaming); 0 when not streamed.")
    kind: RequestKind = RequestKind.COMPLETION
    streamed: bool = False
    cache_hit: bool = Field(False, description="Answered from the response cache: no provider call; cost 0 "
                                               "unless shared_cache_hit.")
    shared_cache_hit: bool = Field(
        False, description="A cache hit on another tenant's answer (PIPELINE_RESPONSE_CACHE_SCOPE=shared): booked "
                           "to this tenant at what the call would have cost, though no provider was paid.")
    tokens_estimated: bool = Field(
        False, description="The token counts were counted from the text with LiteLLM's tokenizer: the provider "
                           "sent none (typically a stream that broke part way, whose delivered tokens are billed).")
    attempt: int = Field(ge=1, description="1-based position of this call within the request.")
    is_fallback: bool = False
    is_final: bool = Field(False, description="This attempt's result became the reply.")
    attributes: dict[str, str] = Field(default_factory=dict)
    route_skipped: list[str] = Field(default_factory=list, description="'model:reason' for each candidate passed over.")
    budget_downgrade: bool = False
    ts: datetime = Field(default_factory=_now)

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class BudgetAlert(_Event):
    """Published once per budget window when spend crosses the alert threshold (topic llm.alerts)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    alert_id: str = Field(default_factory=_new_event_id)
    budget: str = Field(description="e.g. 'tenant acme daily'.")
    key: str = Field(description="Budget and window, e.g. 'tenant=acme:daily:2026-11-23'.")
    limit_usd: float
    spent_usd: float
    threshold: float
    ts: datetime = Field(default_factory=_now)


#: Every public event, by the file name of its generated schema.
PUBLIC_EVENTS: dict[str, type[BaseModel]] = {
    "completion_request": CompletionRequest,
    "completion_reply": CompletionReply,
    "completion_chunk": CompletionChunk,
    "usage_event": UsageEvent,
    "budget_alert": BudgetAlert,
}


class DeadLetterHeader(StrEnum):
    """Headers on a dead-letter record; its value is the original message bytes, unchanged."""

    REASON = "dlq_reason"
    DETAIL = "dlq_detail"
    SOURCE_TOPIC = "dlq_source_topic"
    SOURCE_PARTITION = "dlq_source_partition"
    SOURCE_OFFSET = "dlq_source_offset"
    REQUEST_ID = "dlq_request_id"
    FAILED_AT = "dlq_failed_at"
    ATTEMPTS = "dlq_attempts"
    VALUE_OMITTED = "dlq_value_omitted"  # the original did not fit the DLQ: its size and why; the value is empty
