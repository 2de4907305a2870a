"""Parameterized report notebooks (installed as workbench.notebooks)."""
