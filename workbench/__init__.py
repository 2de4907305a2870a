"""DictaMesh Workbench: a notebook-native data-mesh workbench.

In a notebook::

    import workbench
    wb = workbench.connect()
    wb            # components and their health
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("dictamesh-workbench")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from workbench.client import Workbench

__all__ = ["Workbench", "__version__", "connect"]


def connect(**kwargs: Any) -> Workbench:
    """The `Workbench` bound to the configured stack; see `workbench.client.connect`."""
    from workbench.client import connect as _connect

    return _connect(**kwargs)


def __getattr__(name: str) -> Any:
    if name == "Workbench":
        from workbench.client import Workbench

        return Workbench
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
