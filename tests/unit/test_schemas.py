"""The committed JSON Schemas in schemas/ are exactly what the pydantic contracts generate."""

import json
from pathlib import Path

from pipeline.contracts.schema_export import drifted_schemas, render_schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_schemas_do_not_drift() -> None:
    assert drifted_schemas(SCHEMAS) == [], "run `pipeline schemas` and commit the result"


def test_drift_is_detected(tmp_path: Path) -> None:
    for name, text in render_schemas().items():
        (tmp_path / name).write_text(text)
    assert drifted_schemas(tmp_path) == []
    doc = json.loads((tmp_path / "completion_request.schema.json").read_text())
    doc["required"].remove("task_type")
    (tmp_path / "completion_request.schema.json").write_text(json.dumps(doc))
    assert drifted_schemas(tmp_path) == ["completion_request.schema.json"]


def test_request_schema_states_the_contract() -> None:
    doc = json.loads((SCHEMAS / "completion_request.schema.json").read_text())
    assert set(doc["required"]) == {"request_id", "task_type"}
    assert doc["properties"]["messages"]["anyOf"][0]["minItems"] == 1
    shape = doc["allOf"][0]  # input for an embedding; query and documents for a rerank; else messages or template
    assert shape["then"]["required"] == ["input"]
    assert shape["else"]["if"]["properties"]["kind"] == {"const": "rerank"}
    assert shape["else"]["then"]["required"] == ["query", "documents"]
    assert [one["required"] for one in shape["else"]["else"]["oneOf"]] == [["messages"], ["template"]]  # null = absent
    assert doc["additionalProperties"] is False
