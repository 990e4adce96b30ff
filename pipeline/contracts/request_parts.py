"""The parts a request is built from: chat messages, tools, structured-output formats, and the
field types and limits (non-empty names, stop sequences, logit bias, RFC 3339 deadlines, topic
names) its fields are declared with. `request` assembles them into `CompletionRequest`; kept
apart so that model stays readable and the limits have one home.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from pipeline.contracts.wire_rules import TOPIC_NAME_MAX, TOPIC_NAME_PATTERN, parse_rfc3339, topic_name_problem


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
