"""A LiteLLM Proxy `config.yaml` (or the router-mode provider record `{router_config: {...}}`) as our catalog.

`convert()` turns it into the documents of our own format (a models.yaml mapping, references kept
as written), so loading a LiteLLM config and loading what `pipeline config convert` wrote give the
same catalog. Entries sharing a `model_name` become deployments of one model; `litellm_params`
pass through (credentials by reference only: `os.environ/NAME`, `{secret_name}`); `model_info`
gives the context window, prices and capabilities; `router_settings` / `litellm_settings` map
onto resilience settings and per-model fallbacks (`litellm_router.py`). Whatever does not map is
named in the returned warnings, or refused with a ConfigError where ignoring it would change
behaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.catalog.call_params import OWNED_PARAMS, check_params
from pipeline.catalog.errors import ConfigError
from pipeline.catalog.litellm_router import Notes, RouterMapping, map_settings
from pipeline.catalog.models import LITELLM_RATE_FIELDS, Price
from pipeline.catalog.resilience import provider_of
from pipeline.catalog.secrets import is_reference
from pipeline.catalog.yaml_loader import read_yaml_mapping

#: The name a LiteLLM config has in PIPELINE_CONFIG_DIR (used when there is no models.yaml).
LITELLM_FILE = "config.yaml"

#: model_info per-token costs -> our Price fields (per million tokens).
#: LiteLLM's rate names -> our Price fields (one table, beside Price).
PRICE_FIELDS = LITELLM_RATE_FIELDS
#: model_info flags -> our capabilities.
CAPABILITY_FLAGS = {"supports_function_calling": "tools", "supports_response_schema": "json_mode",
                    "supports_vision": "vision"}
#: model_info keys read without a warning (LiteLLM bookkeeping, or informative only).
_INFO_QUIET = {"id", "base_model", "db_model", "max_output_tokens", "description", "team_id",
               "supports_parallel_function_calling", "supports_tool_choice", "supports_prompt_caching",
               "supports_system_messages"}
#: litellm_params mapped onto deployment fields (the rest pass through).
_DEPLOYMENT_FIELDS = ("api_base", "rpm", "tpm", "weight", "drop_params")
#: litellm_params that are the model's resilience settings (LiteLLM sets them per deployment).
_TIMEOUTS = {"timeout": "timeout_s", "request_timeout": "timeout_s", "stream_timeout": "first_token_timeout_s"}
_TOP_LEVEL = ("model_list", "router_settings", "litellm_settings", "general_settings", "environment_variables")


@dataclass(frozen=True, slots=True)
class ConvertedConfig:
    """Our models.yaml document for a LiteLLM config, and what did not map."""

    models: dict[str, Any]
    warnings: tuple[str, ...]


def read_litellm_config(file: Path) -> ConvertedConfig:
    """Read and convert one file; raises ConfigError naming the file and entry."""
    return convert(read_yaml_mapping(file), file)


def is_litellm_config(raw: dict[str, Any]) -> bool:
    """Whether a mapping looks like a LiteLLM config (a model_list, or the router-mode record)."""
    return "model_list" in raw or isinstance(raw.get("router_config"), dict)


def convert(raw: dict[str, Any], file: Path | str) -> ConvertedConfig:
    """The LiteLLM config `raw` as our models.yaml mapping (references kept as written)."""
    notes = Notes(str(file))
    if isinstance(raw.get("router_config"), dict):  # the seeds' router-mode provider record
        for key in raw:
            if key != "router_config":
                notes.warn(str(key), "provider-record field ignored (only router_config is read)")
        raw = raw["router_config"]
    for key, value in raw.items():
        if key == "general_settings" and isinstance(value, dict):
            notes.warn(key, f"ignored (the proxy's own settings): {', '.join(map(str, value))}")
        elif key == "environment_variables" and isinstance(value, dict):
            notes.warn(key, f"ignored, set them in the environment: {', '.join(map(str, value))}")
        elif key not in _TOP_LEVEL:
            notes.warn(str(key), "not supported, ignored")
    entries = raw.get("model_list")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(file, "model_list", "expected a non-empty list of {model_name, litellm_params}")
    groups = _group(entries, notes)
    mapping = map_settings(_section(raw, "router_settings", file), _section(raw, "litellm_settings", file),
                           list(groups), notes)
    models = {name: _model(name, group, mapping, notes) for name, group in groups.items()}
    document: dict[str, Any] = {"models": models}
    if mapping.defaults:
        document = {"defaults": mapping.defaults, **document}
    return ConvertedConfig(document, tuple(notes.warnings))


def _section(raw: dict[str, Any], key: str, file: Path | str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(file, key, "expected a mapping")
    return value


@dataclass(slots=True)
class _Entry:
    index: int
    params: dict[str, Any]
    info: dict[str, Any]


def _group(entries: list[Any], notes: Notes) -> dict[str, list[_Entry]]:
    """model_list entries by model_name, in order of first appearance."""
    groups: dict[str, list[_Entry]] = {}
    for i, entry in enumerate(entries):
        where = f"model_list[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(notes.file, where, "expected a mapping {model_name, litellm_params}")
        name, params, info = entry.get("model_name"), entry.get("litellm_params"), entry.get("model_info") or {}
        if not isinstance(name, str) or not name:
            raise ConfigError(notes.file, f"{where}.model_name", "required: the name requests use")
        if not isinstance(params, dict) or not isinstance(params.get("model"), str) or not params["model"]:
            raise ConfigError(notes.file, f"{where}.litellm_params.model", "required: the LiteLLM model string")
        if not isinstance(info, dict):
            raise ConfigError(notes.file, f"{where}.model_info", "expected a mapping")
        for key in entry:
            if key not in ("model_name", "litellm_params", "model_info"):
                notes.warn(f"{where}.{key}", "not supported, ignored")
        groups.setdefault(name, []).append(_Entry(i, params, info))
    return groups


def _model(name: str, group: list[_Entry], mapping: RouterMapping, notes: Notes) -> dict[str, Any]:
    """One catalog entry: model-level fields from the first deployment's model_info, one
    deployment per entry (a single entry stays a plain model)."""
    resilience = dict(mapping.per_model.get(name, {}))
    deployments = [_deployment(e, resilience, notes) for e in group]
    _ids(deployments)
    first = group[0]
    body: dict[str, Any] = {"litellm_model": deployments[0]["litellm_model"]}
    if len(deployments) == 1:
        body.update({k: v for k, v in deployments[0].items() if k != "id"})
    else:
        body["deployments"] = deployments
    if mapping.drop_params:
        body["drop_params"] = True
    body.update(_info(first, group, notes))
    if "price" not in body:
        _check_priced(group, deployments, notes)
    if "capabilities" not in body:
        body["capabilities"] = _known_capabilities([e.info.get("base_model") or d["litellm_model"]
                                                    for e, d in zip(group, deployments, strict=True)])
    body.update(mapping.fallbacks_for(name))
    if resilience:
        body["resilience"] = resilience
    return body


def _deployment(entry: _Entry, resilience: dict[str, Any], notes: Notes) -> dict[str, Any]:
    where = f"model_list[{entry.index}].litellm_params"
    params = dict(entry.params)
    out: dict[str, Any] = {"litellm_model": params.pop("model")}
    if "base_url" in params and "api_base" not in params:
        params["api_base"] = params.pop("base_url")
    for key in _DEPLOYMENT_FIELDS:
        if key in params:
            out[key] = params.pop(key)
    key = params.pop("api_key", None)
    if key is not None:
        if not isinstance(key, str) or not is_reference(key):
            raise ConfigError(notes.file, f"{where}.api_key", "must be a reference (os.environ/NAME or "
                                                              "{secret_name}), never the key itself")
        out["api_key"] = key
    for name, ours in _TIMEOUTS.items():
        if name in params:
            value = params.pop(name)
            if resilience.get(ours, value) != value:
                notes.warn(f"{where}.{name}", f"deployments of one model differ: the model's {ours} is "
                                              f"{resilience[ours]}")
            resilience.setdefault(ours, value)
    for name in ("num_retries", "max_retries"):
        if name in params:
            params.pop(name)
            notes.warn(f"{where}.{name}", "ignored: retries are the pipeline's (router_settings.num_retries, "
                                          "retry_policy)")
    entry.info = dict(entry.info)
    for name in [k for k in params if k in PRICE_FIELDS]:  # LiteLLM's custom pricing in litellm_params
        entry.info.setdefault(name, params.pop(name))
    refused = sorted(k for k in params if k in OWNED_PARAMS)
    if refused:
        raise ConfigError(notes.file, f"{where}.{refused[0]}", f"is set by the pipeline; use "
                                                                f"{OWNED_PARAMS[refused[0]]} instead")
    try:
        check_params(params)
    except ValueError as exc:
        raise ConfigError(notes.file, where, str(exc)) from None
    if params:
        out["litellm_params"] = params
    out["id"] = str(entry.info.get("id") or provider_of(out["litellm_model"], params.get("custom_llm_provider")))
    return out


def _ids(deployments: list[dict[str, Any]]) -> None:
    """Deployment ids unique within the model (`azure`, `azure-2`, ...) and usable in names."""
    seen: dict[str, int] = {}
    for d in deployments:
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", d["id"]) or "deployment"
        seen[base] = seen.get(base, 0) + 1
        d["id"] = base if seen[base] == 1 else f"{base}-{seen[base]}"


def _info(first: _Entry, group: list[_Entry], notes: Notes) -> dict[str, Any]:
    """context_window, price and capabilities from the first entry's model_info."""
    info = first.info
    where = f"model_list[{first.index}].model_info"
    out: dict[str, Any] = {}
    window = info.get("max_input_tokens") or info.get("max_tokens")
    if window is not None:
        out["context_window"] = window
    rates = {k: info[k] for k in PRICE_FIELDS if info.get(k) is not None}
    if rates:
        if not {"input_cost_per_token", "output_cost_per_token"} <= rates.keys():
            raise ConfigError(notes.file, where, "a price needs both input_cost_per_token and output_cost_per_token")
        out["price"] = Price.from_litellm(rates).model_dump(exclude_none=True)
        if any({k: e.info.get(k) for k in PRICE_FIELDS} != {k: info.get(k) for k in PRICE_FIELDS}
               for e in group[1:]):
            notes.warn(where, "deployments of one model have different prices: the first one's is used")
    elif isinstance(info.get("base_model"), str):  # LiteLLM prices a deployment name by its base model
        out.update(_base_model_price(info["base_model"], notes, where))
    flags = {cap for flag, cap in CAPABILITY_FLAGS.items() if info.get(flag)}
    if info.get("mode") == "embedding":
        flags.add("embeddings")
    if flags or any(flag in info for flag in CAPABILITY_FLAGS):
        out["capabilities"] = sorted(flags)
    for key in info:
        if key not in (*PRICE_FIELDS, *CAPABILITY_FLAGS, "max_input_tokens", "max_tokens", "mode", *_INFO_QUIET):
            notes.warn(f"{where}.{key}", "not supported, ignored")
    return out


def _base_model_price(base_model: str, notes: Notes, where: str) -> dict[str, Any]:
    """Every rate LiteLLM's map has for the base model (cache reads and writes, reasoning, audio,
    ...), as LiteLLM prices a deployment name by its base model: not only input and output, which
    would bill an Azure deployment's cached tokens at the full input rate."""
    from pipeline.transport.model_info import litellm_rates  # local: litellm import is slow

    rates = litellm_rates(base_model, tuple(PRICE_FIELDS))
    if rates is None:
        raise ConfigError(notes.file, f"{where}.base_model", f"LiteLLM has no price for {base_model!r}; "
                          "name a model its price map knows (e.g. azure/gpt-4o), or set input_cost_per_token "
                          "and output_cost_per_token")
    return {"price": Price.from_litellm(rates).model_dump(exclude_none=True)}


def _check_priced(group: list[_Entry], deployments: list[dict[str, Any]], notes: Notes) -> None:
    """Every call is priced: refuse, in LiteLLM's terms, a deployment name its map cannot price
    (an Azure deployment is named by its owner, so LiteLLM needs its base_model too)."""
    from pipeline.transport.model_info import token_prices  # local: litellm import is slow

    for entry, deployment in zip(group, deployments, strict=True):
        if token_prices(deployment["litellm_model"]) is None:
            raise ConfigError(notes.file, f"model_list[{entry.index}]",
                              f"LiteLLM has no price for {deployment['litellm_model']!r}: set model_info.base_model "
                              "(the model it serves, e.g. azure/gpt-4o) or input_cost_per_token and "
                              "output_cost_per_token (0 for a free local model)")


def _known_capabilities(litellm_models: list[Any]) -> list[str]:
    """What LiteLLM's model map says every deployment (or its base_model) can do: the proxy sends
    tools to any model, so a config that does not say keeps what the map knows."""
    from pipeline.transport.model_info import model_capabilities  # local: litellm import is slow

    found: frozenset[str] | None = None
    for model in litellm_models:
        caps = (model_capabilities(model) if isinstance(model, str) else None) or frozenset()
        found = caps if found is None else found & caps
    return sorted(found or ())
