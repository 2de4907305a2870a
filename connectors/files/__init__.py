"""Files connector: CSV, Parquet and JSON Lines from a directory, schemas inferred with Polars."""

from connectors.files.connector import FilesConfig, FilesConnector

__all__ = ["FilesConfig", "FilesConnector"]
