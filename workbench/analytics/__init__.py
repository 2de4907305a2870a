"""Analytics: entity events and snapshots in DuckLake, with views kept fresh by the writer."""

from workbench.analytics.lake import (
    LakeConfig,
    LakeError,
    LakeNotFoundError,
    MaintenanceResult,
    PostgresTarget,
    Retention,
    default_data_path,
    open_lake,
)
from workbench.analytics.views import VIEWS, Analytics, AnalyticsQueryError
from workbench.analytics.writer import GROUP, AnalyticsWriter

__all__ = [
    "GROUP",
    "VIEWS",
    "Analytics",
    "AnalyticsQueryError",
    "AnalyticsWriter",
    "LakeConfig",
    "LakeError",
    "LakeNotFoundError",
    "MaintenanceResult",
    "PostgresTarget",
    "Retention",
    "default_data_path",
    "open_lake",
]
