"""In-process/CLI LLM provider simulator (OpenAI, Anthropic, Ollama wire formats).

Lets tests, the demo and benchmarks drive LiteLLM's real provider code against a
fast, deterministic server with injectable faults: chat (plain or streamed), tool
calls, JSON / structured output, and embeddings, each in the provider's own wire format.

Modules: ``faults`` (rules, config), ``reply`` (what the model answers), ``schema``
(values from JSON Schemas), ``wire`` and ``stream`` (body and stream builders),
``app`` (the server), ``client`` (the ``/_sim/`` control API).
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
