"""In-process/CLI LLM provider simulator (OpenAI, Azure OpenAI, Anthropic, Ollama, Cohere rerank wire formats).

Lets tests, the demo and benchmarks drive LiteLLM's real provider code against a
fast, deterministic server with injectable faults: chat (plain or streamed), tool
calls, JSON / structured output, embeddings and rerank, each in the provider's own wire format.

Modules: ``faults`` (rules, config), ``reply`` (what the model answers), ``schema``
(values from JSON Schemas), ``wire`` (body builders per API, over ``wire_common``,
``wire_openai``, ``wire_anthropic`` and ``wire_ollama``) and ``stream`` (stream builders),
``azure`` (Azure OpenAI's paths, api-version and errors), ``rerank`` (Cohere rerank),
``app`` (the server), ``endpoints`` (its provider handlers), ``respond`` (how replies and
faults go on the wire), ``request_log`` (what is logged of each call), ``control`` (the
``/_sim/`` control API), ``client`` (that API's client).
"""

from pipeline.simulator.app import ProviderSimulator, run_forever, serve
from pipeline.simulator.client import SimulatorClient, SyncSimulatorClient
from pipeline.simulator.faults import Decision, FaultBook, FaultRule, SimulatorConfig

__all__ = [
    "Decision",
    "FaultBook",
    "FaultRule",
    "ProviderSimulator",
    "SimulatorClient",
    "SimulatorConfig",
    "SyncSimulatorClient",
    "run_forever",
    "serve",
]
