"""In-process/CLI LLM provider simulator (OpenAI, Anthropic, Ollama wire formats).

Lets tests, the demo and benchmarks drive LiteLLM's real provider code against a
fast, deterministic server with injectable faults.
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
