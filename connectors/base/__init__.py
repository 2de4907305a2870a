"""Protocols and helpers shared by every connector."""
