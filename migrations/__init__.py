"""Alembic environment and revisions of the DictaMesh schema (installed as workbench.migrations)."""
