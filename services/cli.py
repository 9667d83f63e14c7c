"""The ``rapport`` command: one subcommand per process, plus ``run`` for all of them."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ctypes
import gc
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shared.infra.settings import Settings, UnsafeSettings

if TYPE_CHECKING:
    from services.settings import RunSettings

app = typer.Typer(help="Rapport: appreciation and trust metrics from everyday recognition.")
directory_app = typer.Typer(help="Manage the people directory.")
app.add_typer(directory_app, name="directory")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _logging() -> None:
    from shared.infra.logs import quiet_repeats

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_repeats()


@app.command()
def topics() -> None:
    """Create every missing topic with its settings, then check every topic's partitions,
    replication and settings against what Rapport needs (exit 1 if one differs)."""
    from shared.contract.topics import check_topics, create_topics
    from shared.readmodels.generations import current

    settings = Settings()
    created = asyncio.run(create_topics(settings))
    generation = asyncio.run(current(settings))  # the aggregator's topics: the current ones
    if generation.number > 1:
        created += asyncio.run(create_topics(settings, generation))
    typer.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
    problems = asyncio.run(check_topics(settings, generation=generation))
    for problem in problems:
        typer.echo(f"differs: {problem}", err=True)
    if problems:
        typer.echo("Existing topics are never changed: set them as needed, or the settings "
                   "to match them (a partition count cannot go down).", err=True)  # fmt: skip
        raise typer.Exit(1)
    typer.echo("every topic as needed" + (" (partitions only: embedded broker)"
                                          if settings.embedded else ""))  # fmt: skip


@app.command()
def broker() -> None:
    """Run the embedded broker (Tansu, memory storage) in the foreground, with topics."""
    from shared.contract.topics import create_topics
    from shared.infra.broker import start_tansu

    settings = Settings()
    proc = start_tansu(settings.embedded_broker_port, quiet=False)
    asyncio.run(create_topics(settings))
    typer.echo(f"broker ready on {settings.bootstrap_servers}")
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()


def _refuse(exc: UnsafeSettings) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@app.command()
def kafka(
    brokers: Annotated[int, typer.Option(help="Nodes: 1, or 3 (replication 3).")] = 1,
) -> None:
    """Run Apache Kafka (KRaft) from its Maven jars on free loopback ports, with topics;
    Ctrl-C stops every node. Development tooling: not in the image."""
    import signal

    from shared.contract.topics import create_topics

    try:
        from shared.devtools.apache_kafka import KAFKA_VERSION, KafkaCluster
    except ModuleNotFoundError:  # an installed Rapport (the image): pyproject leaves it out
        typer.echo("error: `rapport kafka` is development tooling; run it from a clone "
                   "of the repository (make run, make test)", err=True)  # fmt: skip
        raise typer.Exit(2) from None

    if brokers not in (1, 3):
        raise typer.BadParameter("1 or 3", param_hint="--brokers")
    with KafkaCluster(brokers) as cluster:
        settings = Settings(
            kafka_bootstrap_servers=cluster.bootstrap_servers,
            topic_replication_factor=min(3, brokers),
        )
        asyncio.run(create_topics(settings))
        typer.echo(f"Apache Kafka {KAFKA_VERSION}, {brokers} node(s), topics created; data in "
                   f"{cluster.directory}")  # fmt: skip
        typer.echo(f"export RAPPORT_KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}")
        for stop in (signal.SIGINT, signal.SIGTERM):  # leaving the block stops every node
            signal.signal(stop, lambda *_: sys.exit(0))
        signal.pause()


def _serve(module: str, port: int) -> None:
    import importlib

    import uvicorn

    from shared.infra.server import uvicorn_options
    from shared.infra.settings import HttpSettings

    _logging()
    create = importlib.import_module(f"services.{module}.api").create
    try:
        service = create()
    except UnsafeSettings as exc:
        raise _refuse(exc) from None
    _collect_garbage_less_often()
    # No access log: every request is counted and timed in the service's own /metrics.
    settings = HttpSettings()
    uvicorn.run(
        service,
        host=settings.host,
        port=port,
        log_level="info",
        access_log=False,
        **uvicorn_options(settings),
    )


@app.command()
def recognition() -> None:
    """Run the recognition service (kudos and directory writes)."""
    from services.recognition.settings import RecognitionSettings

    _serve("recognition", RecognitionSettings().recognition_port)


@app.command()
def feedback() -> None:
    """Run the feedback service (survey responses and self-assessments)."""
    from services.feedback.settings import FeedbackSettings

    _serve("feedback", FeedbackSettings().feedback_port)


@app.command()
def digest() -> None:
    """Run the digest service (weekly e-mails to managers; embedded: saved to var/outbox)."""
    from services.digest.settings import DigestSettings

    _serve("digest", DigestSettings().digest_port)


@app.command()
def metrics() -> None:
    """Run the metrics service (/metrics for Prometheus)."""
    from services.metrics.settings import MetricsSettings

    _serve("metrics", MetricsSettings().metrics_port)


def _release_large_buffers() -> None:
    """Have glibc hand buffers of 128 kB and more back to the system once freed.

    By default it raises that bar to the largest buffer freed so far, and fetches of
    about 1 MB then stay in the heap: about 35 MB more resident in a worker draining a
    backlog (``python -m tests.bench aggregator``). No-op elsewhere than glibc.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _collect_garbage_less_often() -> None:
    """Run Python's cycle collector after 200,000 new objects, not 700, and never over
    what exists at start (modules, the app): nothing there becomes garbage.

    A worker allocates millions of small objects a second (records, facts, buckets) and
    keeps hundreds of thousands (its tables, which hold no cycles); at the default the
    collector scanned them so often that it took about a quarter of the worker's time
    (``python -m tests.bench aggregator``: 10,000 events/s before, 13,000 to 15,000 after).
    A service's requests wait for the broker's acknowledgement, so their objects outlive
    collections and are promoted until a full one runs: at the default, a single POST
    took 350-420 µs of CPU and waited 75-85 ms at the 99th percentile under 64
    connections; with this, 220-300 µs and 25 ms (``python -m tests.bench ingest``).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)


@app.command()
def aggregator(
    generation: Annotated[
        int | None,
        typer.Option(min=1, help="The generation of topics to work in (default: the current one)."),
    ] = None,
) -> None:
    """Run one aggregator worker (start several to share the partitions)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from services.aggregator import transport
    from services.aggregator.app import create_app
    from services.aggregator.settings import AggregatorSettings
    from shared.contract.topics import Generation, TopicsMismatch, check_partitions
    from shared.readmodels.generations import current

    _release_large_buffers()
    _collect_garbage_less_often()
    settings = AggregatorSettings()
    try:
        settings.check_secrets()  # its master key opens survey answers
    except UnsafeSettings as exc:
        raise _refuse(exc) from None
    try:
        asyncio.run(check_partitions(settings))
        chosen = Generation(generation) if generation else asyncio.run(current(settings))
        if chosen.number > 1:  # its own topics too
            asyncio.run(check_partitions(settings, chosen))
    except TopicsMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    registry = CollectorRegistry()
    if settings.aggregator_metrics_port:
        start_http_server(settings.aggregator_metrics_port, settings.host, registry)
    worker = transport.Worker(create_app(settings, registry, chosen), loglevel="info")
    worker.execute_from_commandline()


@app.command()
def replay(
    workers: Annotated[int, typer.Option(min=1, help="Aggregator workers to replay with.")] = 1,
) -> None:
    """Rebuild every table and snapshot from the source topics into the next generation
    of the aggregator's topics, and switch to it once caught up (progress every 2 s)."""
    from services.aggregator.replay import replay as run_replay
    from services.aggregator.settings import AggregatorSettings

    _logging()
    asyncio.run(run_replay(AggregatorSettings(), workers, typer.echo))


@app.command()
def demo(
    url: Annotated[str | None, typer.Option(help="Recognition service URL.")] = None,
    feedback_url: Annotated[str | None, typer.Option(help="Feedback service URL.")] = None,
) -> None:
    """Seed a demo organisation, nine weeks of kudos and two survey rounds via the APIs."""
    from services.demo.seed import seed
    from services.settings import RunSettings

    _logging()
    settings = RunSettings()
    seed(
        url or f"http://{settings.host}:{settings.recognition_port}",
        feedback_url or f"http://{settings.host}:{settings.feedback_port}",
        _api_key(settings),
    )


def _api_key(settings: RunSettings) -> str:
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    from shared.infra.auth import ensure_dev_key

    if not settings.development:
        raise typer.BadParameter("set RAPPORT_API_KEY to a key with the needed scopes")
    return ensure_dev_key(settings)


@directory_app.command("import")
def directory_import(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="people.csv")],
) -> None:
    """Publish people from a CSV file (id,name,email,team_id,manager_id,timezone,active,
    slack_id; a header row names them: manager_id, timezone, active and slack_id may be left
    out)."""
    from services.recognition.directory_import import import_people
    from shared.infra.errors import RapportError
    from shared.infra.settings import SealingSettings

    _logging()
    try:
        with path.open(newline="") as f:
            count = asyncio.run(import_people(SealingSettings(), csv.DictReader(f)))
    except RapportError as exc:
        typer.echo(f"error: {exc}; nothing was published", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"published {count} people to the directory")


@app.command()
def run(
    aggregators: Annotated[int, typer.Option(help="Aggregator workers to start.")] = 1,
) -> None:
    """Start the whole platform on this machine (embedded broker unless one is configured);
    a process that dies is restarted with back-off while the others keep running.

    Outside development (``RAPPORT_ENVIRONMENT``), every secret must be set first.
    """
    from honcho.manager import Manager

    from services.settings import RunSettings
    from shared.contract.topics import create_topics
    from shared.infra.auth import ApiKeys, ensure_dev_key
    from shared.infra.broker import start_tansu

    _logging()
    settings = RunSettings()
    try:
        settings.check_secrets()
        ApiKeys.from_settings(settings)  # and every key long enough
    except UnsafeSettings as exc:
        raise _refuse(exc) from None
    broker_proc = None
    if settings.embedded:
        typer.echo(f"starting embedded broker (Tansu) on {settings.bootstrap_servers}")
        broker_proc = start_tansu(settings.embedded_broker_port)
    asyncio.run(create_topics(settings))
    rapport = shutil.which("rapport") or f"{sys.executable} -m services.cli"
    manager = Manager()

    def add(name: str, command: str, env: dict[str, str] | None = None) -> None:
        # Each under services.supervise: restarted with back-off if it dies, while the
        # broker and the others keep running.
        manager.add_process(name, f"{sys.executable} -m services.supervise {name} {rapport} "
                                  f"{command}", env=env)  # fmt: skip

    for service in ("recognition", "feedback", "metrics", "digest"):
        add(service, service)
    for i in range(aggregators):
        port = str(settings.aggregator_metrics_port + i)  # one /metrics port per worker
        add(f"aggregator.{i + 1}", "aggregator",
            {**os.environ, "RAPPORT_AGGREGATOR_METRICS_PORT": port})  # fmt: skip
    base = f"http://{settings.host}"
    urls = {
        "recognition": f"{base}:{settings.recognition_port}/docs",
        "feedback": f"{base}:{settings.feedback_port}/docs",
        "metrics": f"{base}:{settings.metrics_port}/metrics",
        "digest": f"{base}:{settings.digest_port}/docs",
    }
    for name, url in urls.items():
        typer.echo(f"  {name:<12} {url}")
    if settings.development and settings.api_keys is None:
        ensure_dev_key(settings)
        typer.echo(f"  dev API key  {settings.dev_key_file} (every scope)")
    if settings.development and settings.demo:
        threading.Thread(target=_demo_when_ready, args=(settings,), daemon=True).start()
    try:
        manager.loop()
    finally:
        if broker_proc is not None:
            broker_proc.terminate()
            broker_proc.wait(timeout=10)
    sys.exit(manager.returncode)


def _demo_when_ready(settings: RunSettings) -> None:
    from services.demo.seed import seed, wait_ready

    recognition = f"http://{settings.host}:{settings.recognition_port}"
    feedback = f"http://{settings.host}:{settings.feedback_port}"
    if wait_ready(recognition, feedback):
        seed(recognition, feedback, _api_key(settings))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
