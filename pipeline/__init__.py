"""llm-pipeline: consume -> validate -> route -> call -> reply -> record."""

import os as _os

# LiteLLM fetches its model price map from the network at import unless told not to;
# these machines (and many production networks) cannot reach it.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"
