"""Dagster resources: the settings, the warehouse, the dbt CLI.

Assets get plain-Python objects from these (``Settings``, ``Warehouse``) and
call ``pipeline.*`` with them. The warehouse path is computed in one place,
``Settings.warehouse_path``: the ``warehouse`` resource depends on the
``settings`` resource, so setting ``data_dir`` in a run's config moves the
warehouse, the artifacts, the reports and the dbt run artifacts together.
"""


import dataclasses
from typing import Optional

import dagster as dg
from pydantic import Field

from pipeline.config import Settings
from pipeline.warehouse import Warehouse


class _SettingsFields(dg.ConfigurableResource):
    """Settings from the settings file and ``CONVTRADE_*`` environment variables; any field set here
    (the launchpad: ``resources: settings: config: {epochs: 5}``) overrides them. Unset (None) or empty
    fields keep the file / environment / default value."""

    def settings(self) -> Settings:
        overrides = {name: value for name, value in self._convtrade_fields().items()
                     if value is not None and value != ""}
        return Settings.from_env(**overrides)

    def _convtrade_fields(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(Settings)}


def _launchpad_type(field: dataclasses.Field) -> type:
    """The config type of a Settings field: its default's type (bool, int, float), else text (paths, lists)."""
    default = field.default
    return type(default) if isinstance(default, (bool, int, float)) else str


# Every field of Settings, typed, optional (one home: the fields are not retyped here). symbols / intervals
# are comma lists ("BTCUSDT,ETHUSDT"), paths are text.
SettingsResource = type("SettingsResource", (_SettingsFields,), {
    "__module__": __name__,
    "__doc__": _SettingsFields.__doc__,
    "__annotations__": {f.name: Optional[_launchpad_type(f)] for f in dataclasses.fields(Settings)},
    **{f.name: Field(default=None, description=f"CONVTRADE_{f.name.upper()} (default "
                                                f"{','.join(f.default) if isinstance(f.default, tuple) else f.default})")
       for f in dataclasses.fields(Settings)},
})


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
