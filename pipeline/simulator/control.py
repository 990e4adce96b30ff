"""The simulator's control API (``/_sim/...``: rules, request log, config, stats) and its listings
(``/health``, ``/v1/models``, ``/api/tags``): everything a test drives, nothing a provider serves.

Split from ``app`` so the server module stays about the provider endpoints; ``client`` is the
matching client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from pipeline.simulator import wire
from pipeline.simulator.faults import FaultRule

if TYPE_CHECKING:
    from pipeline.simulator.app import ProviderSimulator

_RULES = TypeAdapter(list[FaultRule])


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


def bad_request(message: str) -> web.Response:
    return json_response({"error": message}, status=400)


class ControlApi:
    """The control and listing handlers of one simulator."""

    def __init__(self, sim: ProviderSimulator) -> None:
        self._sim = sim

    def register(self, app: web.Application) -> None:
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._openai_models)
        app.router.add_get("/api/tags", self._ollama_tags)
        app.router.add_get("/_sim/requests", self._get_requests)
        app.router.add_delete("/_sim/requests", self._delete_requests)
        app.router.add_get("/_sim/rules", self._get_rules)
        app.router.add_put("/_sim/rules", self._put_rules)
        app.router.add_post("/_sim/rules", self._post_rule)
        app.router.add_delete("/_sim/rules", self._delete_rules)
        app.router.add_get("/_sim/config", self._get_config)
        app.router.add_patch("/_sim/config", self._patch_config)
        app.router.add_get("/_sim/stats", self._get_stats)

    # ------------------------------------------------------------------ listings

    async def _health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "requests": self._sim.calls})

    async def _openai_models(self, request: web.Request) -> web.Response:
        return json_response(wire.openai_models(self._sim.config.models, created=0))

    async def _ollama_tags(self, request: web.Request) -> web.Response:
        return json_response(wire.ollama_tags(self._sim.config.models))

    # ------------------------------------------------------------------ control API

    async def _get_requests(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return bad_request("since must be an integer")
        return json_response({"requests": self._sim.requests(since), "last_seq": self._sim.calls})

    async def _delete_requests(self, request: web.Request) -> web.Response:
        self._sim.clear_requests()
        return json_response({"cleared": True})

    async def _get_rules(self, request: web.Request) -> web.Response:
        return json_response({"rules": self._sim.book.snapshot()})

    async def _put_rules(self, request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read())
            self._sim.book.set_rules(_RULES.validate_python(data["rules"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
            return bad_request(f"expected {{'rules': [...]}}: {exc}")
        return json_response({"rules": self._sim.book.snapshot()})

    async def _post_rule(self, request: web.Request) -> web.Response:
        try:
            self._sim.book.add_rule(FaultRule.model_validate_json(await request.read()))
        except ValidationError as exc:
            return bad_request(str(exc))
        return json_response({"rules": self._sim.book.snapshot()}, status=201)

    async def _delete_rules(self, request: web.Request) -> web.Response:
        self._sim.book.clear()
        return json_response({"rules": []})

    async def _get_config(self, request: web.Request) -> web.Response:
        return json_response(self._sim.config.model_dump(mode="json", exclude={"rules"}))

    async def _patch_config(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            self._sim.configure(**changes)
        except (orjson.JSONDecodeError, ValueError) as exc:  # ValidationError is a ValueError
            return bad_request(str(exc))
        return json_response(self._sim.config.model_dump(mode="json", exclude={"rules"}))

    async def _get_stats(self, request: web.Request) -> web.Response:
        return json_response(self._sim.stats())
