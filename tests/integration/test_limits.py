"""Limits every caller meets before any work: header size, body size however sent,
guessing keys, and a rate limit a real client can reach."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import Popen

import httpx
import pytest
from fastapi.testclient import TestClient

from services.recognition.api import create
from shared.infra.auth import FAILED_BURST, FAILED_PER_S, ensure_dev_key
from shared.infra.broker import free_port
from shared.infra.server import MAX_HEAD_BYTES
from shared.infra.settings import Settings
from shared.infra.web import MAX_BODY_BYTES
from tests.support import wait_until

KUDOS = {"giver_id": "p1", "recipient_ids": ["p2"], "message": "Thanks!", "values": ["growth"]}


@pytest.fixture
def service(
    settings: Settings, env: dict[str, str], spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> Iterator[str]:
    """The recognition service as `rapport recognition` runs it (uvicorn, real sockets)."""
    spawn("recognition", log=tmp_path / "recognition.log")
    url = f"http://127.0.0.1:{env['RAPPORT_RECOGNITION_PORT']}"

    wait_until(lambda: _up(url))
    yield url


def raw_request(port: int, head: bytes, *, chunk: int = 64 * 1024) -> bytes:
    """Send ``head`` in pieces as a client would; return whatever the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            for i in range(0, len(head), chunk):
                s.sendall(head[i : i + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the rest was sent
        answer = b""
        while piece := s.recv(65536):
            answer += piece
        return answer


def test_431_for_oversized_headers_before_any_work(service: str, env: dict[str, str]) -> None:
    port = int(env["RAPPORT_RECOGNITION_PORT"])
    big = b"a" * (8 << 20)  # 8 MiB in one header, no key: nobody is authenticated
    answer = raw_request(port, b"POST /v1/recognitions HTTP/1.1\r\nHost: x\r\nX-Big: " + big)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"error":"headers_too_large"' in answer
    long_url = raw_request(port, b"GET /healthz?" + b"q" * (MAX_HEAD_BYTES + 1) + b" HTTP/1.1")
    assert long_url.startswith(b"HTTP/1.1 431 ")
    # Headers just under the bound, over a kept-alive connection, still work.
    with httpx.Client(base_url=service) as client:
        for _ in range(3):
            ok = client.get("/healthz", headers={"X-Pad": "p" * (MAX_HEAD_BYTES - 1024)})
            assert ok.status_code == 200


def test_413_for_a_chunked_body_over_the_limit(service: str, settings: Settings) -> None:
    key = ensure_dev_key(settings)

    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(total // 65536):
            yield b" " * 65536
        yield b'"}'

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    over = httpx.post(f"{service}/v1/recognitions", content=chunks(MAX_BODY_BYTES + 65536),
                      headers=headers, timeout=30)  # fmt: skip
    assert over.status_code == 413, over.text
    assert over.json()["error"] == "payload_too_large"
    under = httpx.post(f"{service}/v1/recognitions", content=chunks(1 << 20), headers=headers)
    assert under.status_code == 422  # read whole, then validated: an unknown field
    assert {"field": "pad", "reason": "unknown field"} in under.json()["errors"]


def test_a_guesser_is_slowed_down_but_never_locks_out_a_valid_key(settings: Settings) -> None:
    key = ensure_dev_key(settings)
    with TestClient(create(settings)) as client:
        started = time.monotonic()
        guesses = [client.post("/v1/recognitions", json=KUDOS,
                               headers={"Authorization": f"Bearer guess-{i}"}).status_code
                   for i in range(300)]  # fmt: skip
        took = time.monotonic() - started
        assert guesses[:FAILED_BURST] == [401] * FAILED_BURST
        assert set(guesses) == {401, 429}
        # The burst, then one a second.
        assert guesses.count(401) <= FAILED_BURST + math.ceil(took * FAILED_PER_S) + 1
        slowed = client.post("/v1/recognitions", json=KUDOS,
                             headers={"Authorization": "Bearer one-more-guess"})  # fmt: skip
        assert slowed.status_code == 429 and int(slowed.headers["Retry-After"]) >= 1
        assert "invalid API keys" in slowed.json()["message"]
        # The same address with the valid key: judged by the key alone (a shared proxy).
        valid = client.post("/v1/recognitions", json={**KUDOS, "values": ["unknown"]},
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert valid.status_code == 422, valid.text
        # A missing key is not a guess: forgetting it does not lock anyone out.
        assert client.post("/v1/recognitions", json=KUDOS).status_code == 401


def test_the_client_address_is_the_peer_unless_a_trusted_proxy_forwarded_it(
    settings: Settings, spawn: Callable[..., Popen[bytes]], env: dict[str, str], tmp_path: Path
) -> None:
    def guesses(url: str, n: int) -> list[int]:
        """Wrong keys, each claiming to come from another address."""
        with httpx.Client(base_url=url) as http:
            return [http.post("/v1/recognitions", json=KUDOS, headers={
                "Authorization": f"Bearer guess-{i}", "X-Forwarded-For": f"203.0.113.{i}"
            }).status_code for i in range(n)]  # fmt: skip

    direct, behind = (free_port(), free_port())
    spawn("recognition", log=tmp_path / "direct.log",
          extra_env={"RAPPORT_RECOGNITION_PORT": str(direct)})  # fmt: skip
    spawn("recognition", log=tmp_path / "behind.log",
          extra_env={"RAPPORT_RECOGNITION_PORT": str(behind),
                     "RAPPORT_TRUSTED_PROXIES": "127.0.0.1/32"})  # fmt: skip
    for port in (direct, behind):
        wait_until(lambda p=port: _up(f"http://127.0.0.1:{p}"))
    # On loopback, a new X-Forwarded-For each time does not reset the client's bucket.
    assert 429 in guesses(f"http://127.0.0.1:{direct}", 3 * FAILED_BURST)
    # Behind a trusted proxy, each forwarded address is a client of its own.
    assert set(guesses(f"http://127.0.0.1:{behind}", 3 * FAILED_BURST)) == {401}


def test_the_default_rate_limit_is_one_a_client_can_reach(service: str, settings: Settings) -> None:
    """One client over a kept-alive connection (1-2 ms a request here, far above 50 a
    second); the count is checked against the time the requests took."""
    assert settings.rate_limit_per_s == 50  # bursts of 100
    rate = settings.rate_limit_per_s
    burst = int(2 * rate)
    key = ensure_dev_key(settings)
    body = {**KUDOS, "values": ["unknown"]}  # nothing is published, every one is counted
    started = time.monotonic()
    with httpx.Client(base_url=service, headers={"Authorization": f"Bearer {key}"}) as http:
        statuses = [http.post("/v1/recognitions", json=body).status_code for _ in range(400)]
    took = time.monotonic() - started
    assert statuses[:burst] == [422] * burst
    assert set(statuses) == {422, 429}
    # The whole burst, then no more than the rate allows in the time it took.
    assert statuses.count(422) <= burst + math.ceil(took * rate) + 1, took


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code == 200
    except httpx.HTTPError:
        return False
