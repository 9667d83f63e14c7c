"""The metrics service app: /metrics serves appreciation, trust and connection figures from
snapshots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared.infra.errors import BrokerUnavailable, NotReady
from shared.infra.web import create_app
from shared.readmodels.directory import DirectoryView
from shared.readmodels.snapshots import CurrentSnapshots

from .collector import AppreciationCollector, ConnectionCollector, TrustCollector
from .settings import MetricsSettings


def create(settings: MetricsSettings | None = None) -> FastAPI:
    """Build the metrics service app."""
    settings = settings or MetricsSettings()
    directory = DirectoryView(settings)
    snapshots = CurrentSnapshots(settings)

    connections = ConnectionCollector(
        directory, snapshots, settings.thresholds, settings.anonymity_k
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await directory.start()
        await snapshots.start(wait=False)  # /readyz says when it has caught up
        computing = asyncio.create_task(connections.run(), name="connection-figures")
        try:
            yield
        finally:
            computing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await computing
            await snapshots.stop()
            await directory.stop()

    async def ready(app: FastAPI) -> bool:
        try:
            await snapshots.sync()
        except (BrokerUnavailable, NotReady):
            return False
        return True

    app = create_app("Rapport metrics service", lifespan, ready)
    app.state.registry.register(AppreciationCollector(directory, snapshots, settings.anonymity_k))
    app.state.registry.register(TrustCollector(directory, snapshots, settings.anonymity_k))
    app.state.registry.register(connections)
    return app
