"""What the idempotency store keeps for an answered request: the reply, its usage events, and
the record that produced them.

Storing the usage events with the reply lets the worker publish both at once instead of waiting
for the usage acknowledgement before replying (one broker round trip off every reply). Nothing
is lost by it: if the worker dies after storing but before both are acknowledged, its record is
delivered again, and a redelivery of *that same record* re-publishes the stored usage events
(the sink deduplicates them by event_id). A different record with the same request_id (a client
retry) gets the stored reply only, so a retry never counts a call twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

_MAGIC = b"\x00llm-pipeline-outcome-v1\n"


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    reply: bytes
    usage: tuple[bytes, ...] = ()
    source: str | None = None  # "topic/partition/offset" of the record that produced it

    def pack(self) -> bytes:
        header = orjson.dumps({"source": self.source, "sizes": [len(self.reply), *map(len, self.usage)]})
        return b"".join((_MAGIC, header, b"\n", self.reply, *self.usage))

    @classmethod
    def unpack(cls, data: bytes) -> StoredOutcome:
        """Also reads a bare reply (what the store held before usage was kept with it)."""
        if not data.startswith(_MAGIC):
            return cls(bytes(data))
        header_end = data.index(b"\n", len(_MAGIC))
        header = orjson.loads(data[len(_MAGIC):header_end])
        parts, at = [], header_end + 1
        for size in header["sizes"]:
            parts.append(bytes(data[at:at + size]))
            at += size
        if at != len(data):
            raise ValueError(f"stored outcome is {len(data)} bytes, its header accounts for {at}")
        return cls(parts[0], tuple(parts[1:]), header["source"])


def source_of(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"
