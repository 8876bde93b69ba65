"""Dagster resources: the settings, the warehouse, the dbt CLI.

Assets get plain-Python objects from these (``Settings``, ``Warehouse``) and
call ``pipeline.*`` with them. The warehouse path is computed in one place,
``Settings.warehouse_path``: the ``warehouse`` resource depends on the
``settings`` resource, so setting ``data_dir`` in a run's config moves the
warehouse, the artifacts, the reports and the dbt run artifacts together.
"""


import dagster as dg

from pipeline.config import Settings
from pipeline.warehouse import Warehouse


class SettingsResource(dg.ConfigurableResource):
    """Settings from ``CONVTRADE_*`` environment variables; any field here overrides them.

    Empty strings mean "keep the environment / default value".
    """

    data_dir: str = ""
    source: str = ""
    symbols: str = ""  # comma-separated
    intervals: str = ""  # comma-separated Bybit codes
    start: str = ""
    files_dir: str = ""
    seed: int = -1
    # One run that may shrink stored candles (launchpad: `resources: settings: config: allow_shrink: true`);
    # false keeps CONVTRADE_ALLOW_SHRINK (default false).
    allow_shrink: bool = False

    def settings(self) -> Settings:
        overrides: dict = {}
        for name in ("data_dir", "source", "symbols", "intervals", "start", "files_dir"):
            value = getattr(self, name)
            if value:
                overrides[name] = value
        if self.seed >= 0:
            overrides["seed"] = self.seed
        if self.allow_shrink:
            overrides["allow_shrink"] = True
        return Settings.from_env(**overrides)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file at ``settings.warehouse_path`` (``<data_dir>/warehouse.duckdb``)."""

    # (no `from __future__ import annotations` in this module: Dagster must see this type, not a string)
    settings: dg.ResourceDependency[SettingsResource]

    def warehouse(self) -> Warehouse:
        return Warehouse(self.settings.settings().warehouse_path)


def default_resources(settings: "SettingsResource | None" = None) -> dict:
    """``settings`` and ``warehouse`` resources (the dbt one is added by ``assets.definitions``).

    Tests pass ``SettingsResource(data_dir=...)`` to point everything at a temporary folder.
    """
    # configure_at_launch: a run's config for the "settings" key (the launchpad) also reaches the
    # warehouse resource that depends on it; a plain instance would be configured only at the top level.
    settings = settings or SettingsResource.configure_at_launch()
    return {"settings": settings, "warehouse": WarehouseResource(settings=settings)}
