"""Protocols and helpers shared by every connector: capabilities, config, HTTP toolkit, errors.

The sync engine (`connectors.base.sync`), discovery (`connectors.base.registry`) and the
``wb.connectors`` facade (`connectors.base.api`) are imported from their modules.
"""

from connectors.base.capabilities import (
    Adapter,
    Capability,
    EntityRecord,
    HealthStatus,
    Link,
    ResourceAdapter,
    ResourcePage,
    SchemaDeclaration,
    Stream,
    StreamingAdapter,
    WebhookAdapter,
    WebhookEvent,
)
from connectors.base.config import ConnectorConfig, build_config
from connectors.base.errors import (
    CircuitOpenError,
    ConnectorConfigError,
    SourceRequestError,
    SourceUnavailableError,
    SyncFailedError,
    UnsupportedCapabilityError,
    WebhookVerificationError,
)
from connectors.base.http import (
    ApiKeyAuth,
    BearerAuth,
    CircuitBreaker,
    HttpClient,
    OAuth2ClientCredentials,
    RateLimiter,
    RetryPolicy,
)

__all__ = [
    "Adapter",
    "ApiKeyAuth",
    "BearerAuth",
    "Capability",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConnectorConfig",
    "ConnectorConfigError",
    "EntityRecord",
    "HealthStatus",
    "HttpClient",
    "Link",
    "OAuth2ClientCredentials",
    "RateLimiter",
    "ResourceAdapter",
    "ResourcePage",
    "RetryPolicy",
    "SchemaDeclaration",
    "SourceRequestError",
    "SourceUnavailableError",
    "Stream",
    "StreamingAdapter",
    "SyncFailedError",
    "UnsupportedCapabilityError",
    "WebhookAdapter",
    "WebhookEvent",
    "WebhookVerificationError",
    "build_config",
]
