"""Chatwoot connector: Platform, Application and Client APIs, webhooks; the reference connector."""

from connectors.chatwoot.api import ApplicationAPI, ClientAPI, PlatformAPI, condition
from connectors.chatwoot.connector import ChatwootConfig, ChatwootConnector, sign

__all__ = [
    "ApplicationAPI",
    "ChatwootConfig",
    "ChatwootConnector",
    "ClientAPI",
    "PlatformAPI",
    "condition",
    "sign",
]
