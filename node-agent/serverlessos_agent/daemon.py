"""The agent daemon, its composition root: builds the parts, serves gRPC and /metrics,
samples stats. Nothing else decides here."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serverlessos.files import atomic_write_json

from . import __version__
from .auth.credentials import TlsFiles
from .cgroup import CgroupDriver, detect
from .errors import FailedPrecondition
from .migration.directory import MigrationDirs
from .migration.finish import MigrationFinisher
from .migration.permits import Permits
from .migration.source import CheckpointSource
from .migration.target import CheckpointTarget
from .migration.transfer import ReceiveLimits
from .observe.metrics import AgentCollector, Metrics, Snapshot
from .observe.node_status import NodeFacts, node_status
from .observe.stats import NodeFigures, StatsSampler
from .rpc.server import AgentServer
from .rpc.servicer import AgentServicer
from .runtime import criu, sandbox
from .runtime.criu import CriuInfo
from .runtime.launcher import SandboxConfig
from .runtime.lifecycle import LifecycleConfig
from .runtime.privileges import missing_privileges
from .runtime.restart_policy import Backoff
from .runtime.spawner import Spawner
from .runtime.supervisor import Supervisor
from .storage.event_journal import EventJournal
from .storage.log_files import rotate_all
from .storage.record_store import RecordStore

log = logging.getLogger("serverlessos_agent")


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    listen: str
    state_dir: Path
    cgroup_driver: str = "auto"
    cgroup_root: str = "serverlessos"
    node_cgroup: str = ""  # the node's cgroup subtree; empty = the whole machine
    metrics_listen: str = ""
    stats_interval: float = 2.0
    default_grace: float = 10.0
    max_processes: int = 1000
    backoff: Backoff = field(default_factory=Backoff)
    log_max_bytes: int = 10 * 2**20
    log_keep: int = 1
    criu: str = "criu"
    max_checkpoint_bytes: int = 64 << 30  # what one received checkpoint may hold
    process_ro_paths: tuple[str, ...] = ()  # node paths every process sees (sandbox.py)
    # Mutual TLS from these files (auth/credentials.py), or plaintext when insecure.
    tls_dir: Path | None = None
    insecure: bool = False
    # Get the certificate from the cluster's operator (cluster/certificates.py): needs
    # registration (a kubeconfig or a pod) and --tls-dir, where it is kept.
    tls_bootstrap: bool = False
    operator_namespace: str = "serverlessos-system"
    # Kubernetes registration (ServerlessNode): off unless one of these is set.
    kubeconfig: str | None = None
    in_cluster: bool = False
    advertise_address: str = ""
    heartbeat_interval: float = 5.0

    @property
    def registers(self) -> bool:
        return bool(self.kubeconfig) or self.in_cluster


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _lock_state_dir(state_dir: Path) -> int:
    # Records and events hold the processes' environments: private to the agent (its
    # files are 0600). Traversable (0711), not listable: a process's user namespace
    # resolves the path of its own tree in it (runtime/sandbox.py).
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o711)
    fd = os.open(state_dir / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another agent is already using the state dir {state_dir}") from None
    return fd


def _cgroups(config: AgentConfig) -> tuple[CgroupDriver, list[str]]:
    """The cgroup driver, and what keeps this node from starting processes (if anything)."""
    driver = detect(config.cgroup_root, config.cgroup_driver)
    problems = missing_privileges()
    try:
        driver.check()
        driver.create(driver.shim_group)
    except FailedPrecondition as exc:
        problems.append(str(exc))
    for problem in problems:
        log.warning("cannot start processes on this node: %s", problem)
    return driver, problems


async def _criu(config: AgentConfig) -> CriuInfo | None:
    criu_info = await asyncio.to_thread(criu.detect, config.criu)
    if criu_info is None:
        log.info("no CRIU (%s) on this node: processes cannot be migrated", config.criu)
    else:
        log.info(
            "CRIU %s at %s: %s",
            criu_info.version,
            criu_info.path,
            ", ".join(criu_info.features) if criu_info.usable else criu_info.problem,
        )
    return criu_info


def _sandbox(config: AgentConfig) -> SandboxConfig:
    """What processes see of this node; a bad --process-ro-path stops the agent."""
    for path in config.process_ro_paths:
        if problem := sandbox.check_ro_path(path):
            raise SystemExit(f"--process-ro-path: {problem}")
        if Path(path) == config.state_dir or config.state_dir.is_relative_to(path):
            raise SystemExit(f"--process-ro-path: {path!r} holds the agent's state")
    return SandboxConfig(config.process_ro_paths, sandbox.cgroup2_mount())


def _tls(config: AgentConfig) -> TlsFiles | None:
    """The port's credentials; refuses to guess between TLS and plaintext."""
    if config.tls_dir is not None and config.insecure:
        raise SystemExit("give --tls-dir or --insecure, not both")
    if config.tls_dir is None:
        if not config.insecure:
            raise SystemExit(
                "give --tls-dir DIR (ca.pem, cert.pem, key.pem: mutual TLS, the default on a "
                "cluster) or --insecure (plaintext: anyone who reaches the port can run "
                "processes as root on this node)"
            )
        log.warning("--insecure: the gRPC port is plaintext and unauthenticated")
        return None
    try:
        return TlsFiles(config.tls_dir, config.node_name)
    except FailedPrecondition as exc:
        raise SystemExit(str(exc)) from None


async def _bootstrap(config: AgentConfig) -> Any:
    """With --tls-bootstrap: this node's certificate, asked for and waited for (the
    Certificates object, to renew it later); None otherwise."""
    if not config.tls_bootstrap:
        return None
    if config.tls_dir is None or not config.registers:
        raise SystemExit("--tls-bootstrap needs --tls-dir and --kubeconfig or --in-cluster")
    from .cluster.certificates import CertificateRequestDenied, Certificates  # noqa: PLC0415

    certificates = Certificates(
        config.node_name, config.tls_dir, config.kubeconfig, config.operator_namespace
    )
    try:
        await certificates.ensure()
    except CertificateRequestDenied as exc:
        raise SystemExit(str(exc)) from None
    return certificates


async def run(config: AgentConfig) -> None:
    lock_fd = _lock_state_dir(config.state_dir)
    certificates = await _bootstrap(config)
    tls = _tls(config)
    driver, problems = _cgroups(config)
    try:
        sampler = StatsSampler(driver, node_cgroup=config.node_cgroup)
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"--node-cgroup {config.node_cgroup}: cannot read its usage: {exc}"
        ) from exc
    figures = NodeFigures(sampler)
    journal = EventJournal(config.state_dir / "events.jsonl")
    criu_info = await _criu(config)
    spawner = Spawner(can_restore=criu_info is not None and criu_info.usable)
    store = RecordStore(config.state_dir)
    supervisor = Supervisor(
        LifecycleConfig(
            default_grace=config.default_grace,
            backoff=config.backoff,
            max_processes=config.max_processes,
        ),
        driver,
        store=store,
        journal=journal,
        spawner=spawner,
        capacity=figures.capacity,
        privilege_problems=problems,
        sandbox=_sandbox(config),
    )
    table = supervisor.table
    await supervisor.adoption.recover()
    figures.refresh(table.groups())

    metrics = Metrics()
    loop = asyncio.get_running_loop()
    metrics.add(
        AgentCollector(
            config.node_name,
            driver.version,
            loop,
            lambda: Snapshot(table.list(), figures.latest(), supervisor.leases.expiries),
        )
    )
    host, port = split_host_port(config.listen)
    # CRIU's page server (post-copy) listens where the operator reaches this agent.
    advertised = split_host_port(config.advertise_address)[0] if config.advertise_address else host
    dirs = MigrationDirs(config.state_dir / "migrations")
    permits = Permits(config.node_name, tls)
    source = CheckpointSource(
        config.node_name,
        freezer=supervisor.freezer,
        dirs=dirs,
        criu=criu_info,
        page_server_host=advertised,
        table=table,
        permits=permits,
        layouts=supervisor.launcher.layout,
    )
    target = CheckpointTarget(
        config.node_name,
        table=table,
        store=store,
        lifecycle=supervisor.lifecycle,
        dirs=dirs,
        criu=criu_info,
        permits=permits,
        limits=ReceiveLimits(max_bytes=config.max_checkpoint_bytes),
    )
    finisher = MigrationFinisher(
        table=table, lifecycle=supervisor.lifecycle, source=source, target=target, dirs=dirs
    )
    server = AgentServer(
        tls=tls,
        servicer=AgentServicer(
            config.node_name,
            table=table,
            lifecycle=supervisor.lifecycle,
            resources=supervisor.resources,
            journal=journal,
            cgroups=driver,
            log_keep=config.log_keep,
            metrics=metrics,
            latest_sample=figures.latest,
            source=source,
            target=target,
            finisher=finisher,
            node_cgroup=config.node_cgroup.strip("/"),
        ),
    )
    bound = server.bind(host, port)
    if bound == 0:
        raise SystemExit(f"cannot listen on {config.listen}")
    await server.start()

    endpoint = {"node": config.node_name, "grpc": f"{host}:{bound}", "version": __version__}
    if config.metrics_listen:
        mhost, mport = split_host_port(config.metrics_listen)
        endpoint["metrics"] = f"{mhost}:{metrics.serve(mhost, mport)}"
    # Written last: its presence says the agent is ready; renamed into place, so
    # whoever sees it can read it whole.
    atomic_write_json(config.state_dir / "agent.json", endpoint, durable=False)
    log.info(
        "agent %s serving gRPC on %s:%d (cgroup %s, root %s, node %s)",
        config.node_name,
        host,
        bound,
        driver.version,
        config.cgroup_root,
        f"cgroup {config.node_cgroup}" if config.node_cgroup else "the whole machine",
    )

    tasks = []
    if config.registers:
        # Imported only here: an agent that does not register never loads the
        # Kubernetes client.
        from .cluster.registration import Registrar  # noqa: PLC0415

        advertise = config.advertise_address or endpoint["grpc"]
        if advertise.startswith(("0.0.0.0:", "[::]:", ":")):
            raise SystemExit(
                "--advertise-address HOST:PORT is needed when listening on all addresses, "
                "so the operator knows where to reach this agent"
            )
        facts = NodeFacts(config.node_name, advertise, driver.version, not problems, criu_info)
        registrar = Registrar(facts, config.kubeconfig)
        tasks.append(
            loop.create_task(
                registrar.run(
                    config.heartbeat_interval,
                    lambda: node_status(facts, figures.latest(), len(table), not problems),
                )
            )
        )

    async def housekeeping() -> None:
        while True:
            await asyncio.sleep(config.stats_interval)
            try:
                figures.refresh(table.groups())
                rotate_all(
                    (Path(r.log_path) for r in table.list()), config.log_max_bytes, config.log_keep
                )
                dirs.remove_leftovers()
            except Exception:
                log.exception("stats sampling failed")

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks.append(loop.create_task(housekeeping()))
    if certificates is not None:
        tasks.append(loop.create_task(certificates.renew()))
    await stop.wait()
    log.info("shutting down; managed processes keep running")
    for task in tasks:
        task.cancel()
    with contextlib.suppress(FileNotFoundError):
        (config.state_dir / "agent.json").unlink()
    await server.stop(grace=2)
    supervisor.close()
    await spawner.close()
    journal.close()
    os.close(lock_fd)
