"""The YAML declaration of a REST/JSON source.

```yaml
base_url: https://api.example.com/v2
auth: {type: api_key, header: X-API-Key}     # none | api_key (header or query) | bearer | oauth2
pagination: {type: page, page_param: page, size_param: per_page, size: 100}
endpoints:
  - name: customers                           # stream name; entity type unless entity_type
    path: /customers
    record_path: data.items                   # where the records are; omitted: the body is a list
    primary_key: id
    incremental: {field: updated_at, param: updated_since}
    display_field: name
    links: [{field: company_id, type: works_at, entity_type: company}]
  - name: events
    path: /events
    pagination: {type: cursor, cursor_param: cursor, cursor_path: meta.next}
```

Pagination types: ``page`` (page number and size), ``offset`` (offset and limit), ``cursor`` (a
token from the body sent back as a parameter), ``link`` (RFC 8288 ``Link: <...>; rel="next"``),
``none``. Secrets (API key, token, client secret) never sit in the YAML: they are the connector's
``api_key``, ``token`` and ``client_secret`` fields (environment or configuration service).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.base.errors import ConnectorConfigError


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AuthSpec(_Spec):
    type: Literal["none", "api_key", "bearer", "oauth2"] = "none"
    header: str = "X-API-Key"
    location: Literal["header", "query"] = Field(default="header", alias="in")
    token_url: str | None = None
    client_id: str | None = None
    scope: str | None = None

    @model_validator(mode="after")
    def _oauth2_fields(self) -> AuthSpec:
        if self.type == "oauth2" and not (self.token_url and self.client_id):
            raise ValueError("oauth2 auth needs token_url and client_id")
        return self


class PaginationSpec(_Spec):
    type: Literal["none", "page", "offset", "cursor", "link"] = "none"
    page_param: str = "page"
    size_param: str | None = "per_page"
    size: int = Field(default=100, ge=1)
    start: int = 1
    offset_param: str = "offset"
    limit_param: str = "limit"
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    max_pages: int = Field(default=100_000, ge=1)


class IncrementalSpec(_Spec):
    field: str = Field(min_length=1, description="Record field that grows with every change.")
    param: str | None = Field(default=None, description="Query parameter the cursor is sent in.")
    sorted: bool = Field(
        default=False,
        description="The API returns records in ascending `field` order; otherwise the stream "
        "is collected and sorted before syncing, so every committed cursor is safe.",
    )


class LinkSpec(_Spec):
    field: str
    type: str
    entity_type: str
    cardinality: Literal["one_to_one", "one_to_many", "many_to_one", "many_to_many"] = "many_to_one"


class EndpointSpec(_Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    path: str = Field(min_length=1)
    entity_type: str | None = None
    record_path: str | None = None
    primary_key: str = "id"
    params: dict[str, Any] = Field(default_factory=dict)
    pagination: PaginationSpec | None = None
    incremental: IncrementalSpec | None = None
    display_field: str | None = None
    deleted_field: str | None = None
    links: list[LinkSpec] = Field(default_factory=list)


class RestSpec(_Spec):
    base_url: str = Field(pattern=r"^https?://")
    auth: AuthSpec = AuthSpec()
    headers: dict[str, str] = Field(default_factory=dict)
    pagination: PaginationSpec = PaginationSpec()
    endpoints: list[EndpointSpec] = Field(min_length=1)
    requests_per_second: float | None = Field(default=None, gt=0)
    timeout: float = Field(default=15.0, gt=0)
    retries: int = Field(default=5, ge=1, le=20)

    @model_validator(mode="after")
    def _unique_names(self) -> RestSpec:
        names = [e.name for e in self.endpoints]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"endpoint names must be unique; repeated: {duplicated}")
        return self


def load_spec(source: Path | str | dict[str, Any], *, label: str = "spec") -> RestSpec:
    """A spec from a YAML file, YAML text or a mapping; errors name the field."""
    document: Any = source
    where = label
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source).expanduser()
        if not path.exists():
            raise ConnectorConfigError(
                f"{label}: REST spec file {path} does not exist.",
                remedy="point `spec` at a YAML file, or give the spec inline.",
            )
        where = str(path)
        document = path.read_text()
    if isinstance(document, str):
        try:
            document = yaml.safe_load(document)
        except yaml.YAMLError as exc:
            raise ConnectorConfigError(f"{where} is not valid YAML: {exc}") from None
    try:
        return RestSpec.model_validate(document)
    except ValidationError as exc:
        problems = []
        for problem in exc.errors():
            field = ".".join(str(p) for p in problem["loc"]) or "(root)"
            value = "" if problem["type"] == "missing" else f" (value {problem.get('input')!r})"
            problems.append(f"{field}: {problem['msg']}{value}")
        raise ConnectorConfigError(
            f"REST spec {where} is invalid: {'; '.join(problems)}.",
            remedy="fix the named fields; see docs/connectors.md for the format.",
        ) from None


def dig(document: Any, path: str | None) -> Any:
    """The value at a dotted path (``data.items``); None when any step is missing."""
    if not path:
        return document
    for step in path.split("."):
        if isinstance(document, dict):
            document = document.get(step)
        elif isinstance(document, list) and step.isdigit() and int(step) < len(document):
            document = document[int(step)]
        else:
            return None
    return document
