"""The request path, one module per stage: validate -> route -> call -> reply/record.

Stages are plain functions and small classes over the contracts. What they need from the outside
world comes through seams with no vendor import: `transport/provider.py` (calls),
`transport/model_info.py` (prices, token counts) and the state protocols in `pipeline/state/`.
"""
