"""`make bench`: measure Rapport on this machine in one run, on both brokers side by
side (the embedded Tansu and one Apache Kafka node), beside the ceilings.

Writes docs/benchmarks.json (raw figures, by broker) and docs/BENCHMARKS.md (a table).
Load comes from separate processes (wrk, or a producer process) so it does not share the
service's event loop. Figures not measured are written as null.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from services.settings import RunSettings
from shared.contract.codec import CloudEvent, encode
from shared.contract.events import RECOGNITION_GIVEN, Person, event_key
from shared.contract.topics import RECOGNITION, SNAPSHOTS, create_topics
from shared.devtools.apache_kafka import KafkaCluster
from shared.infra.broker import free_port, start_tansu
from shared.infra.kafka import LINGER_MS, partition_for
from shared.infra.settings import Settings
from shared.infra.views import partitions_of
from tests.support.kafka import put_people
from tests.support.surveys import Table, response

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PEOPLE = 1000
BATCH = 500
DURATION_S = 15
CONNECTIONS = 64
BATCH_CONNECTIONS = 16  # 8,000 events in flight
WRK_TIMEOUT_S = 10
TARGETS = {
    "ingest_single_rps": (">=", 3000), "ingest_single_p99_ms": ("<=", 50),
    "ingest_batch_eps": (">=", 50_000), "aggregator_eps": (">=", 20_000),
    "freshness_p99_s": ("<=", 1), "takeover_s": ("<=", 10), "takeover_history_s": ("<=", 10),
    "aggregator_rss_mb": ("<=", 500), "ingest_single_failed": ("<=", 0),
    "ingest_single_ratio": (">=", 0.6), "ingest_batch_ratio": (">=", 0.8),
    "aggregator_ratio": (">=", 0.25), "aggregator_scale_ratio": (">=", 0.8),
    "two_workers_ratio": (">=", 1.7),
}  # fmt: skip
# Each against its ceiling in the same run: (figure, ceiling).
RATIOS = {
    "ingest_single_ratio": ("ingest_single_rps", "bare_fastapi_rps"),
    "ingest_batch_ratio": ("ingest_batch_eps", "raw_producer_eps"),
    "aggregator_ratio": ("aggregator_eps", "raw_consume_eps"),
    "aggregator_scale_ratio": ("aggregator_eps_5000_teams", "aggregator_eps"),
    "two_workers_ratio": ("two_workers_eps", "one_worker_eps"),
}
KEYS = ["ingest_single_rps", "ingest_single_p99_ms", "bare_fastapi_rps", "ingest_single_ratio",
        "ingest_batch_eps", "raw_producer_eps", "ingest_batch_ratio", "raw_batch_producer_eps",
        "aggregator_eps",
        "raw_consume_eps", "aggregator_ratio", "aggregator_eps_5000_teams",
        "aggregator_scale_ratio", "one_worker_eps", "two_workers_eps", "two_workers_ratio",
        "freshness_p50_s", "freshness_p99_s", "takeover_s", "takeover_history_s",
        "aggregator_rss_mb"]  # fmt: skip


BROKERS = {"tansu": "Tansu (embedded)", "kafka": "Apache Kafka (one node)"}
HISTORY_EVENTS = 1_000_000
HISTORY_PEOPLE = 100_000  # 5,000 teams of 20
HISTORY_DAYS = 28


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def recognition(i: int, people: int = PEOPLE, value: str = "growth") -> dict[str, Any]:
    return {"giver_id": f"p{i % people}", "recipient_ids": [f"p{(i * 7 + 1) % people}"],
            "message": "Thanks for the review!", "values": [value]}  # fmt: skip


@contextmanager
def process(
    args: list[str], env: dict[str, str], ready_url: str, timeout_s: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(ready_url, timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise RuntimeError(f"{args} not ready at {ready_url}")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wrk(
    url: str, body: str, headers: dict[str, str], connections: int = CONNECTIONS
) -> tuple[float, float, int]:
    """Requests/s, p99 latency in ms, and failed requests (non-2xx or no answer within
    ``WRK_TIMEOUT_S``: wrk leaves those out of its rate), from wrk."""
    script = (
        "wrk.method = 'POST'\nwrk.body = [["
        + body
        + "]]\n"
        + "".join(f"wrk.headers['{k}'] = '{v}'\n" for k, v in headers.items())
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{DURATION_S}s", f"--timeout={WRK_TIMEOUT_S}s",
         "--latency", "-s", f.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99_ms = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    return rps, p99_ms, sum(int(m[1]) for m in (bad, timeouts) if m)


def recognition_record(
    i: int, people: int = PEOPLE, value: str = "growth", days: int = 1
) -> tuple[list[tuple[str, bytes]], bytes]:
    """Headers and value of recognition ``i``, as the service publishes it; ``days``
    spreads the events over that many days, ending now."""
    at = datetime.now(UTC) - timedelta(days=i % days)
    data = {**recognition(i, people, value), "channel": "api", "occurred_at": at.isoformat()}
    return encode(CloudEvent(f"raw-{i}", "/bench", RECOGNITION_GIVEN, at, data))


def bench_key(i: int) -> bytes:
    """Recognition ``i``'s key, as the services key theirs: by event."""
    return event_key("/bench", f"raw-{i}").encode()


def producer(settings: Settings) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                            linger_ms=LINGER_MS, max_batch_size=1 << 20)  # fmt: skip


async def raw_producer(settings: Settings, n: int, people: int = PEOPLE, days: int = 1) -> float:
    """Events/s for a plain aiokafka producer (acks=all) sending the same records."""
    records = [recognition_record(i, people, days=days) for i in range(n)]
    kafka = producer(settings)
    await kafka.start()
    try:
        start = time.perf_counter()
        futures = [
            await kafka.send(RECOGNITION, value, key=bench_key(i), headers=headers)
            for i, (headers, value) in enumerate(records)
        ]
        await asyncio.gather(*futures)
        return n / (time.perf_counter() - start)
    finally:
        await kafka.stop()


async def raw_batch_producer(settings: Settings, n: int) -> float:
    """Events/s for plain aiokafka batches (``create_batch``, ``send_batch``: the API the
    services' ``Batches`` use), a batch request's worth (500) at a time, acks=all."""
    records = [recognition_record(i) for i in range(n)]
    kafka = producer(settings)
    await kafka.start()
    try:
        partitions = len(await kafka.partitions_for(RECOGNITION))
        start = time.perf_counter()
        sent = []
        for first in range(0, n, BATCH):
            batches: dict[int, Any] = {}
            for i in range(first, min(n, first + BATCH)):
                headers, value = records[i]
                key = bench_key(i)
                partition = partition_for(key, partitions)
                if partition not in batches:
                    batches[partition] = kafka.create_batch()
                batches[partition].append(timestamp=None, key=key, value=value, headers=headers)
            for partition, batch in batches.items():
                sent.append(await kafka.send_batch(batch, RECOGNITION, partition=partition))
        await asyncio.gather(*sent)
        return n / (time.perf_counter() - start)
    finally:
        await kafka.stop()


@contextmanager
def embedded(broker: str) -> Iterator[tuple[Settings, dict[str, str]]]:
    """A fresh broker with every topic; settings and env pointing at it. ``broker``:
    "tansu" (the embedded broker) or "kafka" (one Apache Kafka node); worker logs go to
    ``worker-*.log`` in its directory."""
    var = Path(tempfile.mkdtemp(prefix="rapport-bench-"))
    # No rate limit: the bench measures the service, not the limit.
    env = {"RAPPORT_ENVIRONMENT": "development", "RAPPORT_RATE_LIMIT_PER_S": "0",
           "RAPPORT_VAR_DIR": str(var), "RAPPORT_DEMO": "0",
           "RAPPORT_RECOGNITION_PORT": str(free_port())}  # fmt: skip
    with contextlib.ExitStack() as stack:
        if broker == "kafka":
            cluster = stack.enter_context(KafkaCluster(1, var / "kafka"))
            env["RAPPORT_KAFKA_BOOTSTRAP_SERVERS"] = cluster.bootstrap_servers
        else:
            port = free_port()
            env["RAPPORT_EMBEDDED_BROKER_PORT"] = str(port)
            tansu = start_tansu(port)
            stack.callback(tansu.wait, timeout=10)
            stack.callback(tansu.terminate)
        os.environ.update(env)
        settings = RunSettings()
        asyncio.run(create_topics(settings))
        log(f"{BROKERS[broker]}, files in {var}")
        try:
            yield settings, env
        finally:
            for key in env:
                os.environ.pop(key, None)


def people(n: int = PEOPLE, team_size: int = 20) -> list[dict[str, Any]]:
    teams = n // team_size
    return [{"id": f"p{i}", "name": f"P {i}", "email": f"p{i}@x.io", "team_id": f"t{i % teams}"}
            for i in range(n)]  # fmt: skip


def ingest(results: dict[str, Any], broker: str) -> None:
    with embedded(broker) as (settings, env):
        url = f"http://127.0.0.1:{settings.recognition_port}"
        cli = [sys.executable, "-m", "services.cli"]
        with process([*cli, "recognition"], env, f"{url}/readyz"):
            key = (settings.dev_key_file).read_text().strip()
            auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            httpx.post(f"{url}/v1/people/batch", json={"people": people()}, headers=auth,
                       timeout=30).raise_for_status()  # fmt: skip
            log("single POST /v1/recognitions ...")
            rps, p99, bad = wrk(f"{url}/v1/recognitions", json.dumps(recognition(1)), auth)
            results.update(ingest_single_rps=round(rps), ingest_single_p99_ms=round(p99, 1))
            results["ingest_single_failed"] = bad
            log("POST /v1/recognitions/batch (500 a request) ...")
            batch = json.dumps({"recognitions": [recognition(i) for i in range(BATCH)]})
            rps, _, bad = wrk(f"{url}/v1/recognitions/batch", batch, auth, BATCH_CONNECTIONS)
            results["ingest_batch_eps"] = round(rps * BATCH)
            results["ingest_batch_failed"] = bad
        log("raw aiokafka producer ...")
        results["raw_producer_eps"] = round(asyncio.run(raw_producer(settings, 200_000)))
        log("raw aiokafka batches ...")
        batched = asyncio.run(raw_batch_producer(settings, 200_000))
        results["raw_batch_producer_eps"] = round(batched)


async def raw_consume(settings: Settings, n: int) -> float:
    """Events/s for a plain consume + orjson + dict-update loop over the topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(RECOGNITION, p) for p in await partitions_of(consumer, RECOGNITION)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        counts: dict[str, int] = {}
        seen = 0
        start = time.perf_counter()
        while seen < n:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for r in records:
                    for person in orjson.loads(r.value)["recipient_ids"]:
                        counts[person] = counts.get(person, 0) + 1
                seen += len(records)
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def aggregator_metric(url: str, stage: str) -> float:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return 0
    found = re.search(rf'rapport_aggregator_events_total{{stage="{stage}"}} ([\d.e+]+)', text)
    return float(found[1]) if found else 0


async def drained(settings: Settings, received: int, start: float, value: str = "growth") -> float:
    """Seconds from ``start`` until the team snapshots add up to ``received``
    recognitions with ``value``: the exact total, nothing lost, nothing twice."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(SNAPSHOTS, bootstrap_servers=settings.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=16 << 20)  # fmt: skip
    await consumer.start()
    try:
        totals: dict[bytes | None, int] = {}
        while sum(totals.values()) != received:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    totals[r.key] = orjson.loads(r.value)["totals"].get(value, 0)
            if time.perf_counter() - start > 1200:
                raise RuntimeError(f"snapshots add up to {sum(totals.values())}, not {received}")
        return time.perf_counter() - start
    finally:
        await consumer.stop()


def rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024)  # type: ignore[index]


def worker(env: dict[str, str], metrics_port: int) -> subprocess.Popen[bytes]:
    """An aggregator worker process, its /metrics on ``metrics_port``, its log in the
    broker's directory."""
    logfile = Path(env["RAPPORT_VAR_DIR"]) / f"worker-{metrics_port}.log"
    with logfile.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "aggregator"],
            env={**os.environ, **env, "RAPPORT_AGGREGATOR_METRICS_PORT": str(metrics_port)},
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


@contextmanager
def workers(env: dict[str, str], count: int) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """``count`` aggregator workers with the URL of their /metrics; stopped on exit."""
    started = []
    for _ in range(count):
        port = free_port()
        started.append((worker(env, port), f"http://127.0.0.1:{port}/metrics"))
    try:
        yield started
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            proc.wait(timeout=30)


def started(metrics_url: str) -> float:
    """Wait until the worker has fanned out its first recognition; return that moment."""
    while aggregator_metric(metrics_url, "fan_out") == 0:
        time.sleep(0.05)
    return time.perf_counter()


def aggregator(results: dict[str, Any], broker: str, n: int = 200_000) -> None:
    """One worker draining a preloaded topic of ``n`` recognitions to exact totals."""
    with embedded(broker) as (settings, env):
        asyncio.run(put_people(settings, [Person(**p) for p in people()]))
        log(f"preloading {n:,} recognitions ...")
        asyncio.run(raw_producer(settings, n))
        log("raw consume loop ...")
        results["raw_consume_eps"] = round(asyncio.run(raw_consume(settings, n)))
        log("one aggregator worker ...")
        with workers(env, 1) as [(proc, metrics)]:
            # Every recognition in the bench has one recipient: n received in all.
            seconds = asyncio.run(drained(settings, n, started(metrics)))
            results["aggregator_eps"] = round(n / seconds)
            results["aggregator_rss_mb_200k"] = rss_mb(proc.pid)


def scale(results: dict[str, Any], broker: str, n: int = 200_000) -> None:
    """One worker draining ``n`` recognitions among ``HISTORY_PEOPLE`` people (5,000
    teams) over ``HISTORY_DAYS`` days: the same as ``aggregator``, for an organisation a
    hundred times larger."""
    with embedded(broker) as (settings, env):
        asyncio.run(put_people(settings, [Person(**p) for p in people(HISTORY_PEOPLE)]))
        log(f"preloading {n:,} recognitions among {HISTORY_PEOPLE:,} people ...")
        asyncio.run(raw_producer(settings, n, HISTORY_PEOPLE, days=HISTORY_DAYS))
        log("one aggregator worker, 5,000 teams ...")
        with workers(env, 1) as [(_, metrics)]:
            seconds = asyncio.run(drained(settings, n, started(metrics)))
            results["aggregator_eps_5000_teams"] = round(n / seconds)


def cpu_seconds(pid: int) -> float:
    """CPU time ``pid`` has used (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy (not idle, not waiting)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def scaling(results: dict[str, Any], broker: str, n: int = 200_000) -> None:
    """One worker, then two, draining ``n`` recognitions as a group already formed: the
    workers join on an empty topic, are frozen (SIGSTOP) while the recognitions are
    produced, and let go; from then until the snapshots add up to ``n``. Frozen, they
    leave the machine to the producer, as the preloaded parts do; their session
    timeout outlasts the freeze, so no rebalance comes in between. With the cores the
    workers used meanwhile, and the whole machine (broker too)."""
    for count, key in ((1, "one_worker"), (2, "two_workers")):
        with embedded(broker) as (settings, env):
            asyncio.run(put_people(settings, [Person(**p) for p in people()]))
            with workers({**env, "RAPPORT_SESSION_TIMEOUT_S": "20"}, count) as started_workers:
                log(f"{count} worker(s) joining ...")
                while sum(metric_value(url, "rapport_aggregator_partitions", "")
                          for _, url in started_workers) < settings.topic_partitions or any(
                    metric_value(url, "rapport_aggregator_partitions", "") == 0
                    for _, url in started_workers
                ):  # fmt: skip
                    time.sleep(0.2)
                log(f"{count} worker(s) frozen: {n:,} recognitions ...")
                pids = [proc.pid for proc, _ in started_workers]
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                try:
                    asyncio.run(raw_producer(settings, n))
                finally:
                    for pid in pids:
                        os.kill(pid, signal.SIGCONT)
                start, busy = time.perf_counter(), machine_busy_seconds()
                cpu = sum(cpu_seconds(pid) for pid in pids)
                seconds = asyncio.run(drained(settings, n, start))
                results[f"{key}_eps"] = round(n / seconds)
                used = sum(cpu_seconds(pid) for pid in pids) - cpu
                results[f"{key}_cores"] = round(used / seconds, 2)
                results[f"{key}_machine_cores"] = round(
                    (machine_busy_seconds() - busy) / seconds, 2
                )


def history(results: dict[str, Any], broker: str) -> None:
    """One worker after ``HISTORY_EVENTS`` recognitions among ``HISTORY_PEOPLE`` people
    over ``HISTORY_DAYS`` days: its throughput and RSS; then a second worker joins, and
    is SIGKILLed under load: until the first owns every partition again."""
    with embedded(broker) as (settings, env):
        population = [Person(**p) for p in people(HISTORY_PEOPLE)]
        asyncio.run(put_people(settings, population))
        n = HISTORY_EVENTS
        log(f"preloading {n:,} recognitions among {HISTORY_PEOPLE:,} people ...")
        asyncio.run(raw_producer(settings, n, HISTORY_PEOPLE, days=HISTORY_DAYS))
        log("one aggregator worker ...")
        with workers(env, 1) as [(proc, survivor)]:
            seconds = asyncio.run(drained(settings, n, started(survivor)))
            results["aggregator_rss_mb"] = rss_mb(proc.pid)
            results["aggregator_eps_1m"] = round(n / seconds)
            scrape(results, env)
            log(f"a second worker joins: {n:,} recognitions of history in the tables ...")
            with workers(env, 1) as [(victim, joined)]:
                start, partitions = time.perf_counter(), settings.topic_partitions
                while metric_value(joined, "rapport_aggregator_partitions", "") == 0 or (
                    metric_value(survivor, "rapport_aggregator_partitions", "") == partitions
                ):
                    time.sleep(0.1)
                results["join_history_s"] = round(time.perf_counter() - start, 2)
                log("takeover with history: 2,000 recognitions a second, then SIGKILL ...")
                owned, counted = asyncio.run(kill_under_load(settings, victim, survivor, n))
                results["takeover_history_s"] = round(owned, 2)
                results["takeover_history_backlog_counted_s"] = round(counted, 2)
                results["aggregator_rss_mb_after_takeover"] = rss_mb(proc.pid)


def scrape(results: dict[str, Any], env: dict[str, str]) -> None:
    """The metrics service over the history's snapshots (100,000 people): seconds for a
    round of connection figures (in its own thread), for one /metrics, and its RSS."""
    env = {**env, "RAPPORT_METRICS_PORT": str(free_port())}
    url = f"http://127.0.0.1:{env['RAPPORT_METRICS_PORT']}"
    log("the metrics service over 5,000 teams' snapshots ...")
    start = time.perf_counter()
    cli = [sys.executable, "-m", "services.cli", "metrics"]
    with process(cli, env, f"{url}/readyz", timeout_s=1800) as p:
        results["metrics_ready_s_1m"] = round(time.perf_counter() - start, 1)
        log(f"ready after {results['metrics_ready_s_1m']} s; rounds of connection figures ...")
        rounds: list[float] = []
        deadline = time.monotonic() + 300
        while len(set(rounds)) < 3 and time.monotonic() < deadline:  # three rounds done
            if took := metric_value(f"{url}/metrics", "rapport_connection_compute_seconds", ""):
                rounds.append(took)
            time.sleep(1)
        results["connections_compute_s_1m"] = round(rounds[-1], 2) if rounds else None
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            httpx.get(f"{url}/metrics", timeout=60).raise_for_status()
            seconds.append(time.perf_counter() - start)
        results["scrape_1m_s"] = round(min(seconds), 2)
        results["metrics_rss_mb_1m"] = rss_mb(p.pid)


def metric_value(url: str, name: str, labels: str) -> float:
    """One sample from a /metrics page; 0 if absent (or not served yet)."""
    selector = f"{{{re.escape(labels)}}}" if labels else ""
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return 0
    found = re.search(rf"^{name}{selector} ([\d.e+]+)$", text, re.M)
    return float(found[1]) if found else 0


def freshness(results: dict[str, Any], broker: str, samples: int = 200) -> None:
    """Seconds from a POST's 202 until the metrics service's /metrics counts it."""
    with embedded(broker) as (settings, env):
        env["RAPPORT_METRICS_PORT"] = str(free_port())
        cli = [sys.executable, "-m", "services.cli"]
        api = f"http://127.0.0.1:{settings.recognition_port}"
        metrics = f"http://127.0.0.1:{env['RAPPORT_METRICS_PORT']}"
        with (
            process([*cli, "recognition"], env, f"{api}/readyz"),
            process([*cli, "metrics"], env, f"{metrics}/readyz"),
            workers(env, 1),
            httpx.Client(base_url=api, timeout=10) as http,
        ):
            key = settings.dev_key_file.read_text().strip()
            http.headers["Authorization"] = f"Bearer {key}"
            http.post("/v1/people/batch", json={"people": people()}).raise_for_status()
            log(f"freshness: {samples} recognitions, one at a time ...")
            seconds = []
            for i in range(samples + 1):
                body = recognition(i)
                team = f"t{int(body['recipient_ids'][0][1:]) % (PEOPLE // 20)}"
                labels = f'team="{team}",value="growth"'
                before = metric_value(f"{metrics}/metrics", "rapport_recognitions_total", labels)
                posted = time.perf_counter()
                http.post("/v1/recognitions", json=body).raise_for_status()
                while metric_value(f"{metrics}/metrics", "rapport_recognitions_total",
                                   labels) == before:  # fmt: skip
                    if time.perf_counter() - posted > 60:
                        raise RuntimeError(f"recognition {i} not on /metrics after 60 s")
                    time.sleep(0.005)
                if i:  # the first one waits for the worker to join its group
                    seconds.append(time.perf_counter() - posted)
                time.sleep(0.05 + (i % 7) * 0.02)  # not in step with the snapshot timer
            seconds.sort()
            results["freshness_p50_s"] = round(seconds[len(seconds) // 2], 3)
            results["freshness_p99_s"] = round(seconds[int(len(seconds) * 0.99) - 1], 3)


async def steady_load(
    settings: Settings, rate: int, killed: asyncio.Event, sent: dict[str, int], first: int
) -> None:
    """Produce ``rate`` recognitions a second, ids from ``first`` on: "growth" until
    ``killed``, then "direction"."""
    kafka = producer(settings)
    await kafka.start()
    try:
        i, futures = first, []
        while sent["direction"] < rate * 5:
            value = "direction" if killed.is_set() else "growth"
            for _ in range(rate // 20):
                headers, record = recognition_record(i, value=value)
                futures.append(
                    await kafka.send(RECOGNITION, record, key=bench_key(i), headers=headers)
                )
                sent[value] += 1
                i += 1
            await asyncio.sleep(0.05)
        await asyncio.gather(*futures)
    finally:
        await kafka.stop()


def owns(metrics_url: str, partitions: int) -> None:
    """Wait until the worker says it owns ``partitions`` partitions, tables recovered."""
    while metric_value(metrics_url, "rapport_aggregator_partitions", "") < partitions:
        time.sleep(0.05)


async def kill_under_load(
    settings: Settings, victim: subprocess.Popen[bytes], survivor: str, before: int = 0
) -> tuple[float, float]:
    """SIGKILL ``victim`` under load. Seconds until the ``survivor`` (its /metrics URL)
    owns every partition, and until every recognition sent before the kill is counted
    (``before`` were on the topic already, "growth" each)."""
    killed = asyncio.Event()
    sent = {"growth": 0, "direction": 0}
    load = asyncio.create_task(steady_load(settings, 2000, killed, sent, first=before))
    await asyncio.sleep(10)  # both workers busy
    victim.send_signal(signal.SIGKILL)
    start = time.perf_counter()
    killed.set()
    await asyncio.to_thread(owns, survivor, settings.topic_partitions)
    owned = time.perf_counter() - start
    counted = await drained(settings, before + sent["growth"], start)
    await load
    return owned, counted


def takeover(results: dict[str, Any], broker: str) -> None:
    """Two workers under load, one SIGKILLed: until the survivor owns its partitions."""
    with embedded(broker) as (settings, env):
        asyncio.run(put_people(settings, [Person(**p) for p in people()]))
        with workers(env, 2) as [(victim, _), (_, survivor)]:
            time.sleep(3 * settings.session_timeout)  # both in the group
            log("takeover: 2,000 recognitions a second, then SIGKILL one of two workers ...")
            owned, counted = asyncio.run(kill_under_load(settings, victim, survivor))
            results["takeover_s"] = round(owned, 2)
            results["takeover_backlog_counted_s"] = round(counted, 2)


def bare(results: dict[str, Any], broker: str) -> None:
    """The ceiling of a single POST: a bare FastAPI endpoint (no broker; measured beside
    each broker's figures, in the same conditions)."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "tests.bench.bare:app", "--port", str(port),
            "--log-level", "warning"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with process(args, {}, f"{url}/docs"):
        log("bare FastAPI endpoint ...")
        rps, _, _ = wrk(f"{url}/v1/recognitions", json.dumps(recognition(1)),
                        {"Content-Type": "application/json"})  # fmt: skip
        results["bare_fastapi_rps"] = round(rps)


def cell(key: str, value: Any) -> str:
    if value is None:
        return "not measured"
    op, target = TARGETS.get(key, ("", None))
    if target is None:
        return f"{value:,}"
    ok = value >= target if op == ">=" else value <= target
    return f"{value:,}" + ("" if ok else " (**missed**)")


def write(results: dict[str, Any]) -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    brokers = list(BROKERS)
    rows = []
    for key in KEYS + sorted({k for b in brokers for k in results[b]} - set(KEYS)):
        op, target = TARGETS.get(key, ("", None))
        cells = " | ".join(cell(key, results[b].get(key)) for b in brokers)
        rows.append(f"| `{key}` | {cells} | {f'{op} {target:,}' if target is not None else ''} |")
    (DOCS / "BENCHMARKS.md").write_text(
        f"# Benchmarks\n\nMeasured with `make bench` on {results['machine']}, "
        f"{results['measured_at']}: every part on each broker in turn, on the same machine. "
        "Raw figures: `docs/benchmarks.json`. One part alone, on one broker or both: "
        "`.venv/bin/python -m tests.bench <part> [--broker tansu|kafka]` with a part of "
        + ", ".join(PARTS)
        + " (prints, writes nothing).\n\n"
        "| figure | " + " | ".join(BROKERS.values()) + " | target |\n"
        "|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "How:\n"
        f"- ingest: wrk (1 thread, {CONNECTIONS} connections, {DURATION_S} s, "
        f"{WRK_TIMEOUT_S} s timeout) from its own process against the recognition service, "
        "every 202 acknowledged by the broker; the bare endpoint validates the same body "
        f"without a broker; batches hold {BATCH}, over {BATCH_CONNECTIONS} connections; "
        "`*_failed` counts answers other than 2xx and requests timed out; the raw "
        "producer sends the same records with aiokafka (acks=all), one `send` each (the "
        "ceiling of `ingest_batch_ratio`); the raw batch producer appends them to aiokafka's "
        "produce batches itself, 500 at a time, as the services do (`shared.infra.kafka.Batches`), "
        "which costs less a record: the service can pass the first, not the second.\n"
        "- aggregator: one worker drains 200,000 preloaded recognitions (1,000 people, 50 "
        "teams), timed from its first recognition until the team snapshots add up to "
        "exactly 200,000; the raw loop is aiokafka + orjson + a dict over the same topic; "
        "`aggregator_eps_5000_teams`: the same among 100,000 people (5,000 teams) over 28 "
        "days (part scale).\n"
        "- scaling: one worker, then two, in their group, frozen (SIGSTOP) while "
        "200,000 recognitions are produced, then let go: until the snapshots add up to "
        "200,000; `*_cores`: CPU seconds the workers used a second meanwhile, "
        f"`*_machine_cores`: the whole machine (broker too), of {os.cpu_count()}.\n"
        "- ratios: each figure over its ceiling in the same run (`*_ratio`).\n"
        "- freshness: 200 recognitions one at a time, from the 202 until the metrics "
        "service's /metrics counts it.\n"
        "- takeover: two workers at 2,000 recognitions/s, one SIGKILLed: until the "
        "survivor owns every partition with its tables recovered "
        "(`*_backlog_counted_s`: until every recognition sent before the kill is "
        "in the snapshots, exactly).\n"
        f"- history: one worker drains {HISTORY_EVENTS:,} recognitions among "
        f"{HISTORY_PEOPLE:,} people (5,000 teams) over {HISTORY_DAYS} days "
        "(`aggregator_eps_1m`, `aggregator_rss_mb`); a second worker joins, and is "
        "SIGKILLed under the same load as above (`takeover_history_s`).\n"
        f"- guard: {GUARD_HISTORIES} random histories of 12 survey rounds per team size, "
        "each round answered by a random number of the team, through the aggregator's "
        "survey stage: the share of closed rounds the differencing guard publishes "
        "(`guard_published_<team>`; "
        + ", ".join(f"{t} people, {f} to {t} answering" for t, f in GUARD_TEAMS.items())
        + ").\n"
        f"- erasure: {ERASURES} people erased one after another over HTTP "
        "(`POST /v1/people/{id}/erasure`), each answered once the broker acknowledged "
        "their keys destroyed and their directory entry replaced "
        "(`erasure_p50_ms`, `erasure_p99_ms`).\n"
        f"- answers: {ANSWERS} people answer an open survey round one after another over "
        "HTTP, their answers sealed with a key of their own for the round: first answers "
        "(each makes its key: a write and a read back), then each again "
        "(`answer_first_p50_ms`, `answer_again_p50_ms`, and p99).\n"
        f"- replay: `rapport replay` of {REPLAYED:,} preloaded recognitions (1,000 people, "
        "50 teams) with one worker, then with two: recognitions a second from the "
        "command's start (topics created, workers started) until the new generation is "
        "current (`replay_eps_1_worker`, `replay_eps_2_workers`).\n"
    )


ERASURES = 200
REPLAYED = 200_000


def replay(results: dict[str, Any], broker: str) -> None:
    """``rapport replay`` of ``REPLAYED`` recognitions (1,000 people, 50 teams), with one
    worker and then with two: source records a second, from the command's start (topics
    created, workers started) until the new generation is current."""
    with embedded(broker) as (settings, env):
        asyncio.run(put_people(settings, [Person(**p) for p in people()]))
        log(f"preloading {REPLAYED:,} recognitions ...")
        asyncio.run(raw_producer(settings, REPLAYED))
        for count, key in ((1, "replay_eps_1_worker"), (2, "replay_eps_2_workers")):
            log(f"rapport replay --workers {count} ...")
            begin = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "services.cli", "replay",
                                   "--workers", str(count)], env={**os.environ, **env},
                                  cwd=ROOT, capture_output=True, text=True)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"replay failed: {done.stdout}{done.stderr}")
            results[key] = round(REPLAYED / (time.monotonic() - begin))


def erasure(results: dict[str, Any], broker: str) -> None:
    """What one erasure costs: ``ERASURES`` people erased one after another over HTTP, each
    answered once the broker acknowledged (their keys destroyed, their directory entry
    replaced), among 1,000 people who each gave a recognition."""
    with embedded(broker) as (settings, env):
        url = f"http://127.0.0.1:{settings.recognition_port}"
        with process([sys.executable, "-m", "services.cli", "recognition"], env,
                     f"{url}/readyz"):  # fmt: skip
            key = settings.dev_key_file.read_text().strip()
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                              timeout=30) as client:  # fmt: skip
                client.post("/v1/people/batch", json={"people": people()}).raise_for_status()
                batch = [recognition(i) for i in range(PEOPLE)]
                for start in range(0, PEOPLE, BATCH):
                    client.post(
                        "/v1/recognitions/batch",
                        json={"recognitions": batch[start : start + BATCH]},
                    ).raise_for_status()
                log(f"{ERASURES} erasures, one after another ...")
                took = []
                for i in range(ERASURES):
                    begin = time.perf_counter()
                    client.post(f"/v1/people/p{i}/erasure").raise_for_status()
                    took.append(time.perf_counter() - begin)
    took.sort()
    results["erasure_p50_ms"] = round(1000 * took[len(took) // 2], 1)
    results["erasure_p99_ms"] = round(1000 * took[int(len(took) * 0.99)], 1)


ANSWERS = 200


def answers(results: dict[str, Any], broker: str) -> None:
    """What sealing a survey answer costs: ``ANSWERS`` people answer an open round one
    after another over HTTP (each first answer makes the respondent's key for the round:
    a write and a read back), then each answers again (the key is there)."""
    with embedded(broker) as (settings, env):
        asyncio.run(put_people(settings, [Person(**p) for p in people()]))
        url = f"http://127.0.0.1:{settings.feedback_port}"
        with process([sys.executable, "-m", "services.cli", "feedback"], env, f"{url}/readyz"):
            key = settings.dev_key_file.read_text().strip()
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                              timeout=30) as client:  # fmt: skip
                client.post("/v1/survey-rounds", json={"survey_id": "b1"}).raise_for_status()
                items = [i["id"] for i in client.get("/v1/questions").json()["items"]]
                for name in ("first", "again"):
                    log(f"{ANSWERS} answers ({name}), one after another ...")
                    took = []
                    for i in range(ANSWERS):
                        body = {"survey_id": "b1", "respondent_id": f"p{i}", "enps": 8,
                                "answers": dict.fromkeys(items, 4),
                                "comment": "More time for deep work, please."}  # fmt: skip
                        begin = time.perf_counter()
                        client.post("/v1/survey-responses", json=body).raise_for_status()
                        took.append(time.perf_counter() - begin)
                    took.sort()
                    results[f"answer_{name}_p50_ms"] = round(1000 * took[len(took) // 2], 1)
                    results[f"answer_{name}_p99_ms"] = round(1000 * took[int(len(took) * 0.99)], 1)


GUARD_HISTORIES = 300
GUARD_TEAMS = {12: 5, 20: 18, 50: 40}  # team size: fewest who answer a round


def guard(results: dict[str, Any], broker: str) -> None:
    """Share of closed rounds the differencing guard publishes, the aggregator's survey
    stage run on a dict (the same on either broker): histories of 12 rounds, each answered
    by a random number of the team's people, from the fewest to all."""
    for team, fewest in GUARD_TEAMS.items():
        rng = random.Random(team)
        closed = shown = 0
        for _ in range(GUARD_HISTORIES):
            table = Table()
            for r in range(12):
                who = rng.sample(range(team), rng.randint(fewest, team))
                table.feed([response(i, rng.randint(1, 5), rng.randint(1, 5), survey=f"s{r}")
                            for i in who])  # fmt: skip
                table.close(f"s{r}")
            closed += 12
            shown += len(table.published().blocks)
        results[f"guard_published_{team}"] = round(shown / closed, 2)


PARTS = {"ingest": ingest, "bare": bare, "aggregator": aggregator, "scale": scale,
         "scaling": scaling, "freshness": freshness, "takeover": takeover,
         "history": history, "guard": guard, "erasure": erasure,
         "answers": answers, "replay": replay}  # fmt: skip


def ratios(results: dict[str, Any]) -> None:
    """Each ratio whose figure and ceiling were both measured."""
    for key, (figure, ceiling) in RATIOS.items():
        if results.get(figure) and results.get(ceiling):
            results[key] = round(results[figure] / results[ceiling], 2)


def main() -> None:
    """Run every part on both brokers, or the parts named on the command line on the
    brokers named with ``--broker`` (then nothing is written)."""
    args = sys.argv[1:]
    brokers = list(BROKERS)
    if "--broker" in args:
        at = args.index("--broker")
        brokers = args[at + 1 : at + 2]
        del args[at : at + 2]
    chosen = args or list(PARTS)
    unknown = [a for a in chosen if a not in PARTS] + [b for b in brokers if b not in BROKERS]
    if unknown or not brokers:
        usage = f"[{' | '.join(PARTS)} ...] [--broker {' | '.join(BROKERS)}]"
        wrong = " ".join(unknown) or "--broker without a broker"
        sys.exit(f"usage: python -m tests.bench {usage}\n(not known: {wrong})")
    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        **{b: dict.fromkeys(KEYS) for b in BROKERS},
    }
    for part in chosen:
        for broker in brokers:
            log(f"{part} on {BROKERS[broker]}")
            PARTS[part](results[broker], broker)
    for broker in brokers:
        ratios(results[broker])
    if chosen == list(PARTS) and brokers == list(BROKERS):
        write(results)
    log(json.dumps(results))


if __name__ == "__main__":
    main()
