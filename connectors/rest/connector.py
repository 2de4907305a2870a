"""The REST connector: each declared endpoint is a stream; records become catalog entities."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr, model_validator

from connectors.base.capabilities import (
    Capability,
    EntityRecord,
    Link,
    ResourceAdapter,
    ResourcePage,
    Stream,
)
from connectors.base.config import ConnectorConfig
from connectors.base.errors import ConnectorConfigError, SourceUnavailableError
from connectors.base.http import (
    ApiKeyAuth,
    BearerAuth,
    HttpClient,
    OAuth2ClientCredentials,
    RateLimiter,
    RetryPolicy,
)
from connectors.base.schema import jsonable
from connectors.rest.spec import EndpointSpec, RestSpec, dig, load_spec


class RestConfig(ConnectorConfig):
    spec: Path | dict[str, Any] = Field(description="A YAML file, or the spec inline.")
    base_url: str | None = Field(default=None, description="Overrides the spec's base_url.")
    api_key: SecretStr | None = None
    token: SecretStr | None = None
    client_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _spec_loads(self) -> RestConfig:
        load_spec(self.spec)  # raises with the field named
        return self


class RestConnector(ResourceAdapter[RestConfig]):
    """Any REST/JSON API, declared in YAML (endpoints, auth, pagination, incremental field)."""

    name = "rest"
    version = "0.1.0"
    description = "Any REST/JSON API declared in YAML (auth, pagination, incremental)."
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.READ, Capability.PAGINATION, Capability.BATCH}
    )
    config_class = RestConfig

    def __init__(self, config: RestConfig, *, instance: str | None = None) -> None:
        super().__init__(config, instance=instance)
        self.spec: RestSpec = load_spec(config.spec)
        self._http: HttpClient | None = None

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            spec = self.spec
            self._http = HttpClient(
                self.config.base_url or spec.base_url,
                name=f"{self.instance} REST API",
                auth=self._auth(),
                headers=spec.headers,
                timeout=spec.timeout,
                retry=RetryPolicy(attempts=spec.retries),
                rate_limit=RateLimiter(spec.requests_per_second, burst=5)
                if spec.requests_per_second
                else None,
            )
        return self._http

    def _auth(self) -> httpx.Auth | None:
        auth = self.spec.auth
        if auth.type == "none":
            return None
        secret = {
            "api_key": self.config.api_key,
            "bearer": self.config.token,
            "oauth2": self.config.client_secret,
        }[auth.type]
        field = {"api_key": "api_key", "bearer": "token", "oauth2": "client_secret"}[auth.type]
        if secret is None:
            from connectors.base.config import env_var

            raise ConnectorConfigError(
                f"Connector {self.instance!r} uses {auth.type} auth but has no {field}.",
                remedy=f"set {env_var(self.instance, field)} (or the configuration service).",
            )
        if auth.type == "api_key":
            return ApiKeyAuth(secret, name=auth.header, where=auth.location)
        if auth.type == "bearer":
            return BearerAuth(secret)
        return OAuth2ClientCredentials(
            str(auth.token_url), str(auth.client_id), secret, scope=auth.scope
        )

    def shutdown(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        super().shutdown()

    def endpoint(self, name: str) -> EndpointSpec:
        for endpoint in self.spec.endpoints:
            if endpoint.name == name:
                return endpoint
        from workbench.errors import UnknownNameError

        raise UnknownNameError("endpoint", name, [e.name for e in self.spec.endpoints])

    def check(self) -> None:
        first = self.spec.endpoints[0]
        next(iter(self._pages(first, {})), None)

    # -- reading ----------------------------------------------------------------------------
    def streams(self) -> list[Stream]:
        return [
            Stream(
                e.name,
                e.entity_type or e.name,
                e.primary_key,
                e.incremental.field if e.incremental else None,
                f"GET {e.path}",
            )
            for e in self.spec.endpoints
        ]

    def read(self, stream: Stream, *, cursor: Any = None) -> Iterator[dict[str, Any]]:
        endpoint = self.endpoint(stream.name)
        params = dict(endpoint.params)
        incremental = endpoint.incremental
        if incremental and cursor is not None and incremental.param:
            params[incremental.param] = cursor
        records = (r for page in self._pages(endpoint, params) for r in page)
        if incremental is None:
            yield from records
            return
        fresh = (r for r in records if cursor is None or _ge(dig(r, incremental.field), cursor))
        if incremental.sorted:
            yield from fresh
        else:
            yield from sorted(fresh, key=lambda r: _key(dig(r, incremental.field)))

    def _pages(  # noqa: PLR0912 - one branch per pagination style
        self, endpoint: EndpointSpec, params: dict[str, Any]
    ) -> Iterator[list[dict[str, Any]]]:
        paging = endpoint.pagination or self.spec.pagination
        url: str = endpoint.path
        query: dict[str, Any] | None = dict(params)
        page, offset, token = paging.start, 0, None
        for _ in range(paging.max_pages):
            request = dict(query or {})
            if paging.type == "page":
                request[paging.page_param] = page
                if paging.size_param:
                    request[paging.size_param] = paging.size
            elif paging.type == "offset":
                request[paging.offset_param] = offset
                request[paging.limit_param] = paging.size
            elif paging.type == "cursor" and token is not None:
                request[paging.cursor_param] = token
            response, document = self.http.fetch("GET", url, params=request or None)
            records = self._records(endpoint, document)
            yield records
            if paging.type == "none" or not records:
                return
            if paging.type == "page":
                if paging.size_param and len(records) < paging.size:
                    return
                page += 1
            elif paging.type == "offset":
                if len(records) < paging.size:
                    return
                offset += len(records)
            elif paging.type == "cursor":
                token = dig(document, paging.cursor_path)
                if token in (None, ""):
                    return
            elif paging.type == "link":
                following = response.links.get("next", {}).get("url")
                if not following:
                    return
                url, query = str(response.url.join(following)), None

    def _records(self, endpoint: EndpointSpec, document: Any) -> list[dict[str, Any]]:
        found = dig(document, endpoint.record_path)
        if found is None:
            return []
        if not isinstance(found, list):
            raise SourceUnavailableError(
                f"{self.instance}: {endpoint.path} has no list at record_path "
                f"{endpoint.record_path!r} (found {type(found).__name__}).",
                remedy="check record_path in the spec against a response of the API.",
            )
        return [r for r in found if isinstance(r, dict)]

    def map_record(self, stream: Stream, record: dict[str, Any]) -> EntityRecord:
        endpoint = self.endpoint(stream.name)
        key = dig(record, endpoint.primary_key)
        if key is None:
            raise SourceUnavailableError(
                f"{self.instance}: a record of {endpoint.path} has no primary key "
                f"{endpoint.primary_key!r}: {str(record)[:200]}",
                remedy="check primary_key in the spec.",
            )
        links = []
        for link in endpoint.links:
            target = dig(record, link.field)
            for value in target if isinstance(target, list) else [target]:
                if value is not None:
                    links.append(Link(link.type, link.entity_type, str(value), link.cardinality))
        display = dig(record, endpoint.display_field) if endpoint.display_field else None
        deleted = bool(dig(record, endpoint.deleted_field)) if endpoint.deleted_field else False
        return EntityRecord(
            stream.entity_type,
            str(key),
            jsonable(record),
            str(display) if display is not None else None,
            links,
            deleted=deleted,
            cursor=dig(record, endpoint.incremental.field) if endpoint.incremental else None,
        )

    # -- resources --------------------------------------------------------------------------
    def _list(self, resource: str, *, page: Any, page_size: int, **filters: Any) -> ResourcePage:
        endpoint = self.endpoint(resource)
        paging = endpoint.pagination or self.spec.pagination
        params = {**endpoint.params, **filters}
        number = int(page or paging.start)
        if paging.type == "page":
            params[paging.page_param] = number
            if paging.size_param:
                params[paging.size_param] = page_size
        _, document = self.http.fetch("GET", endpoint.path, params=params)
        records = self._records(endpoint, document)
        following = number + 1 if paging.type == "page" and records else None
        return ResourcePage(records, following)


def _key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def _ge(value: Any, cursor: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value >= cursor)
    except TypeError:
        return str(value) >= str(cursor)
