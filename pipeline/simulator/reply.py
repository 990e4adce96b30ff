"""What the simulated model says to a chat request: text, one tool call, or JSON.

Decided once per request, from the body alone, so the streamed and non-streamed
forms of a reply are the same reply (their concatenated deltas are equal).

Rules, per wire format:

* ``tools`` present and ``tool_choice`` not "none" (OpenAI ``"none"``, Anthropic
  ``{"type": "none"}``): call the forced tool (OpenAI ``{"type": "function",
  "function": {"name": ...}}``, Anthropic ``{"type": "tool", "name": ...}``) or else
  the first one, with arguments generated from its schema;
* unless the last message is a tool result (OpenAI/Ollama role "tool", Anthropic
  ``tool_result`` block): then the reply is text quoting the result, so a two-turn
  tool loop ends. LiteLLM's Anthropic JSON-mode tool (``json_tool_call``, forced for
  ``response_format`` on models without native structured output) is the exception:
  it is always called, being how that JSON answer is delivered;
* JSON requested (OpenAI ``response_format``, Ollama ``format``, Anthropic
  ``output_format`` / ``output_config.format``): JSON text conforming to the schema,
  or ``{"answer": <reply text>}`` without one;
* otherwise the usual ``sim reply from <model> to: ...`` text.

Under the ``invalid_json`` fault, JSON content and tool arguments break their schema
(``schema.invalid_instance``; plain text when there is no schema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline.simulator import schema as jsonschema_gen
from pipeline.simulator import wire
from pipeline.simulator.wire import JsonDict, ToolCall

# LiteLLM's name for the tool that carries an Anthropic ``response_format`` answer.
RESPONSE_FORMAT_TOOL = "json_tool_call"


@dataclass(frozen=True)
class Reply:
    """Either ``content`` (text or JSON text) or ``tool_call``; never both."""

    content: str | None
    tool_call: ToolCall | None = None


def tool_result_text(api: str, body: JsonDict) -> str | None:
    """The tool output the request ends with, or ``None`` if the last turn is not a tool result."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if api in ("openai", "ollama") and last.get("role") == "tool":
        return wire.text_of(last.get("content"))
    content = last.get("content")
    if api == "anthropic" and last.get("role") == "user" and isinstance(content, list):
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return " ".join(wire.text_of(b.get("content")) for b in results)
    return None


def _tool_spec(tool: object) -> tuple[str, JsonDict] | None:
    """``(name, parameters schema)`` of an OpenAI/Ollama or Anthropic tool definition."""
    if not isinstance(tool, dict):
        return None
    function = tool.get("function")
    if isinstance(function, dict) and function.get("name"):
        params = function.get("parameters")
        return str(function["name"]), params if isinstance(params, dict) else {}
    if tool.get("name"):
        params = tool.get("input_schema", tool.get("parameters"))
        return str(tool["name"]), params if isinstance(params, dict) else {}
    return None


def _forced_name(choice: object) -> str | None:
    if not isinstance(choice, dict):
        return None
    if choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        return str(name) if name else None
    if choice.get("type") == "tool" and choice.get("name"):
        return str(choice["name"])
    return None


def requested_tool(api: str, body: JsonDict) -> tuple[str, JsonDict] | None:
    """The tool the reply should call (forced one, else the first), or ``None`` for no call."""
    if api == "ollama" and "prompt" in body:  # /api/generate has no tools
        return None
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    specs = [spec for spec in map(_tool_spec, tools) if spec is not None]
    choice = body.get("tool_choice")
    if not specs or choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    forced = _forced_name(choice)
    if forced is None:
        return specs[0]
    return forced, next((params for name, params in specs if name == forced), {})


def requested_json(api: str, body: JsonDict) -> tuple[bool, JsonDict | None]:
    """``(wanted, schema)``: whether the request asks for JSON content, and the schema if it gives one."""
    if api == "openai":
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            return True, None
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            declared = fmt.get("json_schema")
            spec = declared if isinstance(declared, dict) else {}
            found = spec.get("schema")
            return True, found if isinstance(found, dict) and found else None
        return False, None
    if api == "anthropic":
        fmt = body.get("output_format")
        config = body.get("output_config")
        if fmt is None and isinstance(config, dict):
            fmt = config.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            found = fmt.get("schema")
            return True, found if isinstance(found, dict) and found else None
        return False, None
    fmt = body.get("format")  # ollama: "json" or a schema object
    if fmt == "json":
        return True, None
    if isinstance(fmt, dict):
        return True, fmt
    return False, None


def _dumps(value: Any) -> str:
    """Spaced separators: the text splits into words, so a JSON reply streams in several deltas."""
    return json.dumps(value, ensure_ascii=False)


def plan_reply(
    api: str, model: str, body: JsonDict, n_words: int, *, seq: int, invalid_json: bool = False, choice: int = 0,
) -> Reply:
    """The reply for one successful chat request (see the module docstring for the rules);
    ``choice``: which of the request's ``n`` choices (text replies say which they are)."""
    result = tool_result_text(api, body)
    text = wire.reply_text(model, result if result is not None else wire.last_user_text(api, body), n_words,
                           choice=choice)
    tool = requested_tool(api, body)
    if tool is not None and (result is None or tool[0] == RESPONSE_FORMAT_TOOL):
        name, params = tool
        args = jsonschema_gen.invalid_instance(params) if invalid_json else jsonschema_gen.instance(params)
        if not isinstance(args, dict):  # a tool's input is always an object
            args = {"value": args}
        return Reply(None, ToolCall(name, args, seq))
    wanted, found = requested_json(api, body)
    if not wanted:
        return Reply(text)
    if found is None:
        return Reply(text if invalid_json else _dumps({"answer": text}))
    return Reply(_dumps(jsonschema_gen.invalid_instance(found) if invalid_json else jsonschema_gen.instance(found)))
