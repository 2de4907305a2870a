"""Static checks of the server-mode stack: docker-compose.yml and every file it relies on.

No Docker engine is needed: the compose file is validated against the Compose Specification JSON
schema (read from ../shared/data/compose-spec/, skipped with a message when absent), and the
Prometheus, Grafana and environment files are checked against what the compose file expects.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA_FILE = REPO.parent / "shared" / "data" / "compose-spec" / "compose-spec.json"
INFRA = REPO / "infrastructure"
ENV_EXAMPLE = INFRA / "compose.env.example"
PROMETHEUS_CONFIG = INFRA / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCES = INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_PROVIDERS = INFRA / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
GRAFANA_DASHBOARD = INFRA / "grafana" / "dashboards" / "dictamesh-overview.json"

BROKERS = ("redpanda-0", "redpanda-1", "redpanda-2")
REQUIRED_SERVICES = {
    *BROKERS,
    "console",
    "postgres",
    "redis",
    "prometheus",
    "grafana",
    "jaeger",
    "workbench",
}
# Secrets the workbench needs; compose must refuse to start without them (`${VAR:?message}`).
REQUIRED_SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "DICTAMESH_DASHBOARD_USERS",
    "DICTAMESH_COOKIE_SECRET",
)

# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?msg}`, `${NAME?msg}`, `${NAME:+x}`;
# `$${...}` is compose's escape for a literal dollar and is not a reference.
_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?")
_SECRET_KEY = re.compile(r"(PASSWORD|SECRET|TOKENS?|_USERS|_AUTH|_KEY)$")
_URL_CREDENTIALS = re.compile(r"://[^:/@\s]*:(?P<password>[^@\s]+)@")
_PORT_MAPPING = re.compile(r"(?:^|:)(?P<published>\d+):(?P<target>\d+)(?:/\w+)?$")


# -- helpers -------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _strings(node: Any) -> Iterator[str]:
    """Every string value (not key) in a loaded YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(entry.partition("=")[::2] for entry in env)
    return dict(env)


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _flag(service: dict[str, Any], name: str) -> str:
    """The value of `--name=value` (or `--name value`) in a service's command."""
    args = _command(service)
    for index, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and index + 1 < len(args):
            return args[index + 1]
    raise AssertionError(f"{name} missing from the command {args}")


def _published_ports(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> published host port, from short or long port syntax."""
    ports: dict[int, int] = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["target"])] = int(entry.get("published", entry["target"]))
            continue
        match = _PORT_MAPPING.search(str(entry))
        assert match, f"unexpected port mapping {entry!r}"
        ports[int(match["target"])] = int(match["published"])
    return ports


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each host-path mount of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":")[0]))
    return mounts


def _named_volumes(service: dict[str, Any]) -> list[str]:
    names = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "volume":
                names.append(volume["source"])
        elif ":" in volume and not volume.startswith((".", "/", "~")):
            names.append(volume.split(":")[0])
    return names


def _make_validator(schema: dict[str, Any]) -> Validator:
    # The spec declares "https://json-schema.org/draft-07/schema", which jsonschema's registry
    # knows only as "http://json-schema.org/draft-07/schema#"; normalise before looking it up.
    declared = str(schema.get("$schema", ""))
    normalised = declared.replace("https://", "http://", 1).rstrip("#") + "#"
    cls = validator_for({"$schema": normalised}, default=Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def validator() -> Validator:
    if not SCHEMA_FILE.is_file():
        pytest.skip(f"Compose Specification schema not found at {SCHEMA_FILE}")
    return _make_validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


# -- the compose file against the specification ------------------------------------------------


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], validator: Validator
) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda error: list(error.absolute_path))
    assert not errors, "\n".join(
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in errors
    )


def test_compose_file_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def _ports_not_a_list(doc: dict[str, Any]) -> None:
    doc["services"]["workbench"]["ports"] = "not-a-list"


def _unknown_top_level_key(doc: dict[str, Any]) -> None:
    doc["servicez"] = {}


def _unknown_depends_on_condition(doc: dict[str, Any]) -> None:
    doc["services"]["workbench"]["depends_on"]["postgres"]["condition"] = "service_ready"


def _healthcheck_typo(doc: dict[str, Any]) -> None:
    doc["services"]["postgres"]["healthcheck"]["intervall"] = "5s"


@pytest.mark.parametrize(
    ("breakage", "where", "text"),
    [
        (_ports_not_a_list, ("services", "workbench", "ports"), "not-a-list"),
        (_unknown_top_level_key, (), "servicez"),
        (_unknown_depends_on_condition, ("services", "workbench", "depends_on"), None),
        (_healthcheck_typo, ("services", "postgres", "healthcheck"), "intervall"),
    ],
    ids=["ports-not-a-list", "unknown-top-level-key", "bad-condition", "healthcheck-typo"],
)
def test_validator_rejects_a_broken_copy(
    compose: dict[str, Any],
    validator: Validator,
    breakage: Callable[[dict[str, Any]], None],
    where: tuple[str, ...],
    text: str | None,
) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    errors = list(validator.iter_errors(broken))
    assert errors, "the validator accepted a deliberately broken compose file"
    assert any(
        tuple(error.absolute_path)[: len(where)] == where
        and (text is None or text in error.message)
        for error in errors
    ), [f"{list(error.absolute_path)}: {error.message}" for error in errors]


# -- services ------------------------------------------------------------------------------


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = REQUIRED_SERVICES - services.keys()
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_images_are_the_intended_ones(services: dict[str, dict[str, Any]]) -> None:
    for broker in BROKERS:
        image = services[broker]["image"]
        assert re.fullmatch(r"redpandadata/redpanda:v2[45]\.\d+\.\d+", image), image
    assert services["console"]["image"].startswith("redpandadata/console:v")
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert "pg16" in services["postgres"]["image"]
    assert services["redis"]["image"].startswith("redis:7")
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    assert services["workbench"]["build"] in (".", {"context": "."})


def test_redpanda_brokers_form_one_cluster(services: dict[str, dict[str, Any]]) -> None:
    external_ports = set()
    for broker in BROKERS:
        service = services[broker]
        internal, external = _flag(service, "--advertise-kafka-addr").split(",")
        assert internal == f"internal://{broker}:9092"
        host, port = external.removeprefix("external://").rsplit(":", 1)
        assert host == "localhost"
        # The advertised external listener must be reachable at the same port on the host.
        assert _published_ports(service).get(int(port)) == int(port)
        external_ports.add(int(port))
        assert _flag(service, "--advertise-rpc-addr") == f"{broker}:33145"
        assert "rpk cluster health" in " ".join(service["healthcheck"]["test"])
        assert _published_ports(service).get(9644), f"{broker} does not publish its admin API"
        if broker != BROKERS[0]:
            assert _flag(service, "--seeds") == f"{BROKERS[0]}:33145"
    assert len(external_ports) == len(BROKERS)


def test_console_sees_every_broker(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["console"])
    assert env["KAFKA_BROKERS"].split(",") == [f"{broker}:9092" for broker in BROKERS]
    assert env["REDPANDA_ADMINAPI_URLS"].split(",") == [
        f"http://{broker}:9644" for broker in BROKERS
    ]


def test_workbench_points_at_the_compose_stack(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["workbench"])
    assert env["DICTAMESH_POSTGRES_URL"] == (
        "postgresql://dictamesh:${POSTGRES_PASSWORD}@postgres:5432/dictamesh"
    )
    assert env["DICTAMESH_KAFKA_BOOTSTRAP"].split(",") == [f"{broker}:9092" for broker in BROKERS]
    assert env["DICTAMESH_REDIS_URL"] == "redis://:${REDIS_PASSWORD}@redis:6379/0"
    assert env["DICTAMESH_OTEL_ENDPOINT"] == "http://jaeger:4317"
    assert _published_ports(services["jaeger"]).keys() >= {4317, 4318, 16686}
    for name in ("DICTAMESH_DASHBOARD_USERS", "DICTAMESH_COOKIE_SECRET"):
        assert env[name].startswith(f"${{{name}:?"), env[name]
    assert _command(services["workbench"])[:2] == ["dictamesh", "serve"]
    assert _published_ports(services["workbench"]).get(5006) == 5006


def test_consumers_scale_out_in_one_group(services: dict[str, dict[str, Any]]) -> None:
    consumer = services["consumer"]
    assert consumer["image"] == services["workbench"]["image"]
    assert _command(consumer)[:2] == ["dictamesh", "consume"]
    assert int(consumer["deploy"]["replicas"]) >= 2
    # Replicas cannot share a container name or a published host port.
    assert "container_name" not in consumer
    assert not consumer.get("ports")
    assert _environment(consumer) == _environment(services["workbench"])


def test_healthy_dependencies_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dependency: {"condition": "service_started"} for dependency in depends_on}
        for dependency, spec in depends_on.items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if spec["condition"] == "service_healthy":
                check = services[dependency].get("healthcheck")
                assert check, f"{name} waits for {dependency} to be healthy; it has no healthcheck"
                assert not check.get("disable"), f"{dependency}'s healthcheck is disabled"


def test_datastores_and_servers_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in (*BROKERS, "postgres", "redis", "prometheus", "grafana", "jaeger", "workbench"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_redis_requires_a_password_and_persists(services: dict[str, dict[str, Any]]) -> None:
    command = _command(services["redis"])
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert command[command.index("--appendonly") + 1] == "yes"


def test_volumes_and_network_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in _named_volumes(service):
            assert volume in declared, f"{name} mounts undeclared volume {volume}"
        assert service.get("networks") == ["dictamesh"], f"{name} is not on the one network"
    assert list(compose["networks"]) == ["dictamesh"]
    for name in (*BROKERS, "postgres", "redis", "prometheus", "grafana"):
        assert _named_volumes(services[name]), f"{name} keeps its data in no named volume"


def test_mounted_repository_files_exist(services: dict[str, dict[str, Any]]) -> None:
    mounted = []
    for name, service in services.items():
        for source, _target in _bind_mounts(service):
            path = (REPO / source).resolve()
            assert path.is_relative_to(REPO), f"{name} mounts {source} from outside the repo"
            assert path.exists(), f"{name} mounts {source}, which does not exist"
            mounted.append(path)
    assert PROMETHEUS_CONFIG in mounted
    assert INFRA / "grafana" / "provisioning" in mounted
    assert GRAFANA_DASHBOARD.parent in mounted


def test_dockerfile_runs_the_server() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install \"?\.", dockerfile, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd, "the Dockerfile has no exec-form CMD"
    args = json.loads(cmd[1])
    assert args[:2] == ["dictamesh", "serve"]
    # Inside a container the server must listen beyond loopback for the published port to work.
    assert args[args.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    assert args[args.index("--port") + 1] == "5006"


# -- Prometheus and Grafana -----------------------------------------------------------------


def _scrape_jobs() -> dict[str, dict[str, Any]]:
    config = _load_yaml(PROMETHEUS_CONFIG)
    return {job["job_name"]: job for job in config["scrape_configs"]}


def _targets(job: dict[str, Any]) -> set[str]:
    return {target for group in job.get("static_configs", []) for target in group["targets"]}


def test_prometheus_scrapes_the_workbench_with_a_mounted_token(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    job = _scrape_jobs()["workbench"]
    assert _targets(job) == {"workbench:5006"}
    assert job.get("metrics_path", "/metrics") == "/metrics"
    token_file = job["authorization"]["credentials_file"]
    assert job["authorization"].get("type", "Bearer") == "Bearer"
    # The token file must be a compose secret mounted into the Prometheus container.
    mounted = {}
    for entry in services["prometheus"].get("secrets", []):
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        path = target if target.startswith("/") else f"/run/secrets/{target}"
        mounted[path] = source
    assert token_file in mounted, f"{token_file} is not mounted into prometheus"
    secret = compose["secrets"][mounted[token_file]]
    assert secret.get("environment") or secret.get("file")


def test_prometheus_scrapes_every_redpanda_broker() -> None:
    job = _scrape_jobs()["redpanda"]
    assert job["metrics_path"] == "/public_metrics"
    assert _targets(job) == {f"{broker}:9644" for broker in BROKERS}


def test_prometheus_targets_are_compose_services(services: dict[str, dict[str, Any]]) -> None:
    for name, job in _scrape_jobs().items():
        for target in _targets(job):
            host = target.rsplit(":", 1)[0]
            assert host == "localhost" or host in services, f"job {name} scrapes unknown {host}"


def test_grafana_datasource_points_at_prometheus(services: dict[str, dict[str, Any]]) -> None:
    datasources = _load_yaml(GRAFANA_DATASOURCES)["datasources"]
    prometheus = [source for source in datasources if source["type"] == "prometheus"]
    assert len(prometheus) == 1
    assert prometheus[0]["url"] == "http://prometheus:9090"
    assert 9090 in _published_ports(services["prometheus"])


def test_grafana_loads_the_dashboard(services: dict[str, dict[str, Any]]) -> None:
    providers = _load_yaml(GRAFANA_PROVIDERS)["providers"]
    mounts = {
        (REPO / source).resolve(): target for source, target in _bind_mounts(services["grafana"])
    }
    assert [provider["options"]["path"] for provider in providers] == [
        mounts[GRAFANA_DASHBOARD.parent]
    ]
    assert mounts[INFRA / "grafana" / "provisioning"] == "/etc/grafana/provisioning"

    dashboard = json.loads(GRAFANA_DASHBOARD.read_text(encoding="utf-8"))
    datasource_uids = {source["uid"] for source in _load_yaml(GRAFANA_DATASOURCES)["datasources"]}
    exprs = []
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in datasource_uids
        exprs += [target["expr"] for target in panel["targets"]]
    for metric in ("up", "dictamesh_consumer_lag_messages", "dictamesh_component_up"):
        assert any(re.search(rf"\b{metric}\b", expr) for expr in exprs), metric


# -- secrets and environment -----------------------------------------------------------------


def test_no_service_has_a_literal_secret(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in _environment(service).items():
            if _SECRET_KEY.search(key):
                assert str(value).startswith("${"), f"{name}: {key} is not interpolated"
        for text in _strings(service):
            for match in _URL_CREDENTIALS.finditer(text):
                assert match["password"].startswith("${"), f"{name}: password in {text!r}"
        command = _command(service)
        for flag in ("--requirepass", "--password", "--masterauth"):
            if flag in command:
                assert command[command.index(flag) + 1].startswith("${"), f"{name}: {flag}"


def test_required_secrets_fail_fast_when_unset(compose: dict[str, Any]) -> None:
    texts = list(_strings(compose))
    for name in REQUIRED_SECRETS:
        assert any(f"${{{name}:?" in text for text in texts), f"{name} has no `:?` marker"


def _references(compose: dict[str, Any]) -> dict[str, bool]:
    """Each variable the compose file reads -> whether it must be set (no default)."""
    required: dict[str, bool] = {}
    for text in _strings(compose):
        for match in _REFERENCE.finditer(text):
            must = match[2] is None or "?" in match[2]
            required[match[1]] = required.get(match[1], False) or must
    for secret in (compose.get("secrets") or {}).values():
        if secret.get("environment"):
            required[secret["environment"]] = True
    return required


def test_env_example_lists_every_variable(compose: dict[str, Any]) -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    active = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", text, re.M))
    commented = set(re.findall(r"^#\s*([A-Za-z_][A-Za-z0-9_]*)=", text, re.M))
    for name, must in _references(compose).items():
        if must:
            assert name in active, f"{name} is required but not set in {ENV_EXAMPLE.name}"
        else:
            assert name in active | commented, f"{name} is not documented in {ENV_EXAMPLE.name}"
    assert set(REQUIRED_SECRETS) <= active
