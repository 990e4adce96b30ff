"""The request path, one module per stage: validate -> route -> call -> reply/record.

Stages are plain functions and small classes over the contracts; none imports a transport.
"""
