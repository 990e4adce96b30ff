"""What every provider's wire format shares: the request's texts, tool calls, usage details, embeddings.

Cheap, deterministic functions of their arguments (the same prompt always gets the same reply text
and the same embedding vector), kept apart from the per-provider shapes (``wire_openai``,
``wire_anthropic``, ``wire_ollama``) so each of those only says how its provider spells them.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]


# --------------------------------------------------------------------------- requests


def text_of(content: object) -> str:
    """Flatten a message ``content`` (string, list of parts or blocks) to text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(text_of(part) for part in content)
    if isinstance(content, dict):
        text = content.get("text", content.get("content", ""))
        return text_of(text)
    return ""


def prompt_texts(api: str, body: JsonDict) -> list[str]:
    """All prompt strings a request carries, in order (system first)."""
    texts: list[str] = []
    if api == "anthropic" and body.get("system"):
        texts.append(text_of(body["system"]))
    if api == "ollama" and "prompt" in body:  # /api/generate
        if body.get("system"):
            texts.append(text_of(body["system"]))
        texts.append(text_of(body.get("prompt", "")))
        return texts
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            texts.append(text_of(message.get("content")))
    return texts


def last_user_text(api: str, body: JsonDict) -> str:
    """The text the simulated reply quotes back: the last user turn (or the prompt)."""
    if api == "ollama" and "prompt" in body:
        return text_of(body.get("prompt", ""))
    for message in reversed(body.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def estimate_tokens(texts: list[str]) -> int:
    """~4 characters per token, at least 1: cheap, stable, close enough for cost tests."""
    return max(1, math.ceil(sum(len(t) for t in texts) / 4))


def reply_text(model: str, user_text: str, n_words: int, *, choice: int = 0) -> str:
    """A deterministic reply of exactly ``max(n_words, head)`` whitespace-separated words; choices
    after the first (OpenAI ``n``) say which they are (``sim reply #2 from ...``)."""
    number = f" #{choice + 1}" if choice else ""
    head = f"sim reply{number} from {model} to: {user_text[:40]}".split()
    pad = [f"w{i}" for i in range(max(0, n_words - len(head)))]
    return " ".join(head + pad)


# --------------------------------------------------------------------------- shared shapes


@dataclass(frozen=True)
class ToolCall:
    """The one tool call a reply makes; ``seq`` makes the provider-style ids unique."""

    name: str
    arguments: dict[str, Any]
    seq: int = 0

    @property
    def arguments_json(self) -> str:
        """The arguments as OpenAI sends them: one JSON string (spaced, so a stream splits it)."""
        return json.dumps(self.arguments, ensure_ascii=False)

    @property
    def openai_id(self) -> str:
        return f"call_sim_{self.seq}"

    @property
    def anthropic_id(self) -> str:
        return f"toolu_sim_{self.seq}"


#: One choice of a chat reply: its text, or its tool call.
Choice = tuple[str | None, ToolCall | None]


@dataclass(frozen=True, slots=True)
class UsageDetails:
    """The usage details a chat reply reports (``SimulatorConfig``'s ``cached_tokens``,
    ``cache_write_tokens``, ``reasoning_tokens``); none by default, so the plain shapes stay."""

    cache_read: int = 0  # of the prompt tokens: OpenAI cached_tokens, Anthropic cache_read_input_tokens
    cache_write: int = 0  # of the prompt tokens: Anthropic cache_creation_input_tokens (OpenAI reports none)
    reasoning: int = 0  # of each choice's completion tokens (OpenAI reasoning_tokens)


NO_DETAILS = UsageDetails()

# --------------------------------------------------------------------------- embeddings


def embedding_inputs(body: JsonDict) -> list[str]:
    """The texts an embedding request carries: ``input`` (str or list) or legacy Ollama ``prompt``.

    Token-id inputs (OpenAI allows lists of ints) are embedded by their JSON text.
    """
    raw = body["input"] if "input" in body else body.get("prompt", "")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        if raw and all(isinstance(x, int) for x in raw):
            return [json.dumps(raw)]
        return [x if isinstance(x, str) else json.dumps(x) for x in raw]
    return [json.dumps(raw)]


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector seeded by the text alone: same text, same vector, any model or call.

    A shorter vector is the normalised prefix of a longer one (like OpenAI's ``dimensions``).
    """
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
