"""Which usage rows a report reads: `pipeline report --model/--tenant/--task-type`.

Every value is bound as a ClickHouse query parameter (`{model:String}` ...), never formatted
into SQL; an empty value matches any row, so each report is one constant query either way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RowFilter:
    """Attempts of this served model, tenant and task type ("" = any). Reports aggregate the matching rows."""

    model: str = ""
    tenant: str = ""
    task_type: str = ""

    def __post_init__(self) -> None:
        for name in ("model", "tenant", "task_type"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > 256 or "\x00" in value:
                raise ValueError(f"--{name.replace('_', '-')}: expected a name of at most 256 characters")

    @property
    def active(self) -> bool:
        return bool(self.model or self.tenant or self.task_type)

    def parameters(self) -> dict[str, str]:
        """The query parameters every filtered report binds."""
        return {"model": self.model, "tenant": self.tenant, "task_type": self.task_type}

    def describe(self) -> str:
        """For titles: ", model=m-gpt, tenant=acme" (empty when nothing is filtered)."""
        parts = [f"{k}={v}" for k, v in (("model", self.model), ("tenant", self.tenant),
                                          ("task_type", self.task_type)) if v]
        return "".join(f", {p}" for p in parts)


ANY_ROWS = RowFilter()
