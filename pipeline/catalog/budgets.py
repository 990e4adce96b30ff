"""`cost_controls` in routing.yaml: spend limits per tenant, per task type and overall."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Limits(BaseModel):
    """USD limits of one scope; an absent limit means unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily_usd: float | None = Field(default=None, gt=0)
    monthly_usd: float | None = Field(default=None, gt=0)
    request_ceiling_usd: float | None = Field(
        default=None, gt=0, description="Default max cost of one request when the request sets none."
    )


class CostControls(BaseModel):
    alert_threshold: float = Field(0.8, gt=0, le=1, description="Fraction of a budget that raises one alert.")
    default_request_ceiling_usd: float | None = Field(default=None, gt=0)
    global_: Limits = Field(default_factory=Limits, alias="global")
    default_tenant: Limits = Field(default_factory=Limits, description="For tenants not listed under tenants.")
    tenants: dict[str, Limits] = Field(default_factory=dict)
    task_types: dict[str, Limits] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _monthly_covers_daily(self) -> CostControls:
        scopes = {"global": self.global_, "default_tenant": self.default_tenant,
                  **{f"tenants.{k}": v for k, v in self.tenants.items()},
                  **{f"task_types.{k}": v for k, v in self.task_types.items()}}
        for name, limits in scopes.items():
            if limits.daily_usd and limits.monthly_usd and limits.daily_usd > limits.monthly_usd:
                raise ValueError(f"{name}: daily_usd {limits.daily_usd} exceeds monthly_usd {limits.monthly_usd}")
        return self

    def tenant_limits(self, tenant: str) -> Limits:
        return self.tenants.get(tenant, self.default_tenant)

    def request_ceiling(self, tenant: str, requested: float | None) -> float | None:
        """The request's own max_cost_usd, else the tenant's ceiling, else the global default."""
        if requested is not None:
            return requested
        return self.tenant_limits(tenant).request_ceiling_usd or self.default_request_ceiling_usd
