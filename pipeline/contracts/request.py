"""The request event: `CompletionRequest`, what an upstream service publishes to the requests
topic (a chat completion, an embedding or a rerank), with the validators that tie its fields to
its kind. Its parts and field limits are in `request_parts`; the conditions the validators
enforce are restated for the JSON Schema by `wire_rules.request_conditions`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from pipeline.contracts.common import DEFAULT_TENANT, SCHEMA_VERSION, RequestKind, WireEvent
from pipeline.contracts.request_parts import (
    MAX_CHOICES,
    MAX_FALLBACKS,
    MAX_INT32,
    MAX_INT64,
    MAX_RERANK_DOCUMENT_CHARS,
    MAX_RERANK_DOCUMENTS,
    MAX_RERANK_QUERY_CHARS,
    MAX_STOP_SEQUENCES,
    ChatMessage,
    LogitBias,
    NonEmptyStr,
    Penalty,
    ResponseFormat,
    Rfc3339,
    Stop,
    Tool,
    TopicName,
)
from pipeline.contracts.wire_rules import request_conditions

#: The fields only a rerank request carries.
RERANK_FIELDS: Final = ("query", "documents", "top_n")


def _one_text(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class CompletionRequest(WireEvent):
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
