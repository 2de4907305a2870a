"""Panel dashboards served by `dictamesh serve` (installed as workbench.dashboards).

Each page is a module with a `PAGE` (`workbench.dashboards.layout.Page`); built-in pages and
those of
other packages are found the same way, through the `dictamesh.dashboards` entry-point group.
"""
