"""SQL connector: tables or queries of any SQLAlchemy database become catalog entities."""

from connectors.sql.connector import QuerySpec, SqlConfig, SqlConnector

__all__ = ["QuerySpec", "SqlConfig", "SqlConnector"]
