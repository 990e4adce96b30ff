"""The deployment material validates: docker-compose.yml (when the docker client is present) and
every Kubernetes manifest in deploy/k8s against bundled JSON schemas, offline (deploy/validate.sh)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("kubernetes_validate") is None or importlib.util.find_spec("jsonschema") is None,
    reason="validator not installed: pip install -e '.[deploy]' (kubernetes-validate, jsonschema)",
)


def test_deploy_material_validates() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "deploy" / "validate.sh")],
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"deploy/validate.sh exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "all deployment material valid" in result.stdout
