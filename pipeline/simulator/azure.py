"""Azure OpenAI's wire format: what differs from OpenAI's (path, ``api-version``, ``api-key``, errors).

Azure serves OpenAI's bodies under ``/openai/deployments/{deployment}/...``: the deployment in
the path names the model (the body's ``model`` is ignored and the reply's ``model`` is the
deployment), every call needs an ``api-version`` query parameter (except on the v1 API), and the
key comes in an ``api-key`` header (or an Entra ID bearer token). Error bodies keep OpenAI's ``{"error": {...}}``
envelope with Azure's own codes and texts where LiteLLM's Azure exception mapping looks at them
(``litellm/litellm_core_utils/exception_mapping_utils.py``, ``_map_azure_exception``). Pure.
"""

from __future__ import annotations

from typing import Any

from pipeline.simulator import wire
from pipeline.simulator.faults import FaultKind

JsonDict = dict[str, Any]

CHAT_PATH = "/openai/deployments/{deployment}/chat/completions"
EMBEDDINGS_PATH = "/openai/deployments/{deployment}/embeddings"
#: Azure's v1 API (LiteLLM's ``api_version`` "v1", "latest" or "preview"): OpenAI's paths under
#: ``/openai/v1``, the deployment in the body's ``model``, no ``api-version``.
V1_CHAT_PATH = "/openai/v1/chat/completions"
V1_EMBEDDINGS_PATH = "/openai/v1/embeddings"
API_VERSION_PARAM = "api-version"


def missing_api_version() -> JsonDict:
    """Azure's 400 body for a call without ``?api-version=``."""
    return {"error": {"code": "MissingApiVersionParameter",
                      "message": "The api-version query parameter (?api-version=) is required for all requests."}}


def error_response(
    fault: FaultKind, deployment: str, *, prompt_tokens: int, api_version: str, retry_after_s: float = 1.0,
    status: int = 500,
) -> tuple[int, JsonDict, dict[str, str]]:
    """``(status, body, headers)`` of Azure's error reply for one fault (same statuses as OpenAI's).

    Raises ``ValueError`` for faults that are not an error body, like ``wire.error_response``.
    """
    code, body, headers = wire.error_response("openai", fault, deployment, prompt_tokens=prompt_tokens,
                                              retry_after_s=retry_after_s, status=status)
    if fault == "rate_limit":
        body = {"error": {"code": "429", "message": (
            f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {api_version} have "
            f"exceeded token rate limit of your current deployment {deployment} (simulated). "
            f"Please retry after {retry_after_s:g} seconds.")}}
    elif fault == "auth":
        # Never echo the key, not even masked.
        body = {"error": {"code": "401", "message": (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
            "key for an active subscription and use a correct regional API endpoint for your resource.")}}
    elif fault == "content_policy":
        body = {"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
                       "policy. (simulated)",
            "type": None, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation",
                           "content_filter_result": {"hate": {"filtered": True, "severity": "high"}}},
        }}
    elif fault == "server_error":
        body = {"error": {"code": "InternalServerError",
                          "message": f"Internal server error (simulated HTTP {code}) while processing your request."}}
    return code, body, headers
