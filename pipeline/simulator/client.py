"""Clients for the simulator's ``/_sim/`` control API (async for tests, sync for scripts).

Both clients share ``_Call`` specs so only the transport differs between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from pipeline.simulator.faults import FaultRule

RuleLike = FaultRule | dict[str, Any]


def _rule_json(rule: RuleLike) -> dict[str, Any]:
    """Validate locally so a bad rule fails at the call site, not as a remote 400."""
    return FaultRule.model_validate(rule).model_dump(mode="json")


def _identity(data: Any) -> Any:
    return data


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    parse: Callable[[Any], Any] = field(default=_identity)


def _rules_of(data: Any) -> list[dict[str, Any]]:
    return data["rules"]


class _Calls:
    """Request specs for every control operation."""

    @staticmethod
    def set_rules(rules: Iterable[RuleLike]) -> _Call:
        return _Call("PUT", "/_sim/rules", json={"rules": [_rule_json(r) for r in rules]}, parse=_rules_of)

    @staticmethod
    def add_rule(rule: RuleLike) -> _Call:
        return _Call("POST", "/_sim/rules", json=_rule_json(rule), parse=_rules_of)

    @staticmethod
    def rules() -> _Call:
        return _Call("GET", "/_sim/rules", parse=_rules_of)

    @staticmethod
    def clear_rules() -> _Call:
        return _Call("DELETE", "/_sim/rules", parse=_rules_of)

    @staticmethod
    def requests(since: int) -> _Call:
        return _Call("GET", "/_sim/requests", params={"since": since}, parse=lambda d: d["requests"])

    @staticmethod
    def clear_requests() -> _Call:
        return _Call("DELETE", "/_sim/requests")

    @staticmethod
    def configure(changes: dict[str, Any]) -> _Call:
        return _Call("PATCH", "/_sim/config", json=changes)

    @staticmethod
    def stats() -> _Call:
        return _Call("GET", "/_sim/stats")


def _result(call: _Call, response: httpx.Response) -> Any:
    response.raise_for_status()
    return call.parse(response.json())


class SimulatorClient:
    """Async control-API client; ``async with SimulatorClient(url) as sim: ...``."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout)

    async def _do(self, call: _Call) -> Any:
        response = await self._http.request(call.method, call.path, json=call.json, params=call.params)
        return _result(call, response)

    async def set_rules(self, rules: Iterable[RuleLike]) -> list[dict[str, Any]]:
        return await self._do(_Calls.set_rules(rules))

    async def add_rule(self, rule: RuleLike) -> list[dict[str, Any]]:
        return await self._do(_Calls.add_rule(rule))

    async def rules(self) -> list[dict[str, Any]]:
        """Current rules, each with a ``fired`` count."""
        return await self._do(_Calls.rules())

    async def clear_rules(self) -> None:
        await self._do(_Calls.clear_rules())

    async def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return await self._do(_Calls.requests(since))

    async def clear_requests(self) -> None:
        await self._do(_Calls.clear_requests())

    async def configure(self, **changes: Any) -> dict[str, Any]:
        return await self._do(_Calls.configure(changes))

    async def stats(self) -> dict[str, Any]:
        return await self._do(_Calls.stats())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> SimulatorClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class SyncSimulatorClient:
    """Blocking twin of ``SimulatorClient`` for scripts and benchmarks."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._http = httpx.Client(base_url=url, timeout=timeout)

    def _do(self, call: _Call) -> Any:
        return _result(call, self._http.request(call.method, call.path, json=call.json, params=call.params))

    def set_rules(self, rules: Iterable[RuleLike]) -> list[dict[str, Any]]:
        return self._do(_Calls.set_rules(rules))

    def add_rule(self, rule: RuleLike) -> list[dict[str, Any]]:
        return self._do(_Calls.add_rule(rule))

    def rules(self) -> list[dict[str, Any]]:
        return self._do(_Calls.rules())

    def clear_rules(self) -> None:
        self._do(_Calls.clear_rules())

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self._do(_Calls.requests(since))

    def clear_requests(self) -> None:
        self._do(_Calls.clear_requests())

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self._do(_Calls.configure(changes))

    def stats(self) -> dict[str, Any]:
        return self._do(_Calls.stats())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SyncSimulatorClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
