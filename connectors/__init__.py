"""Source connectors for DictaMesh; discovered through the `dictamesh.connectors` entry points."""
