"""REST/JSON connector declared in YAML: endpoints, auth, pagination, keys, incremental field."""

from connectors.rest.connector import RestConfig, RestConnector
from connectors.rest.spec import EndpointSpec, RestSpec, load_spec

__all__ = ["EndpointSpec", "RestConfig", "RestConnector", "RestSpec", "load_spec"]
