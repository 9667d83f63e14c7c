"""Reading a /metrics page as Prometheus would: through prometheus_client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def parse(text: str) -> dict[str, float]:
    """Every sample on a page, keyed as the exposition writes it: ``name`` or
    ``name{label="value",...}`` (labels in the order given)."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def scrape(url: str, timeout: float = 2.0) -> dict[str, float]:
    """The samples at ``url``; none while nothing answers there yet."""
    try:
        return parse(httpx.get(url, timeout=timeout).text)
    except httpx.HTTPError:
        return {}
