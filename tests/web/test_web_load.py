"""A bounded load test on loopback: rounds of 200 concurrent streamed generations against ``rnnkit serve``.

Every request must be answered in full, none may fail, the same seed must give the same text under load (no
cross-talk between concurrent samplers), and the server's resident memory must not grow from round to round.
Run with ``-s`` to see the figures.
"""

import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

CONCURRENT = 200
ROUNDS = 3  # the first warms up (threads, allocator pools); memory is compared between the later ones
LENGTH = 32
MAX_GROWTH_MB = 20


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def one(client, seed: int) -> tuple[float, str | None, str]:
    """(latency s, failure or None, text) for one streamed request read to its end."""
    start = time.perf_counter()
    try:
        async with client.stream("POST", "/api/generate", json={"prompt": "The ", "length": LENGTH, "seed": seed,
                                                                "temperature": 1.0}) as response:
            body = await response.aread()
        if response.status_code != 200:
            return time.perf_counter() - start, f"status {response.status_code}: {body[:200]!r}", ""
        lines = [json.loads(line) for line in body.decode().splitlines()]
        text = "".join(line.get("text", "") for line in lines)
        if lines[-1] != {"done": True} or len(text) != LENGTH:
            return time.perf_counter() - start, f"incomplete: {lines[-1]}", text
        return time.perf_counter() - start, None, text
    except httpx.HTTPError as e:
        return time.perf_counter() - start, f"{type(e).__name__}: {e}", ""


async def round_of(url: str) -> list[tuple[float, str | None, str]]:
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(one(client, seed) for seed in range(CONCURRENT)))


def test_200_concurrent_generations(server):
    rss, rounds, wall, cpu = [rss_mb(server.pid)], [], [], []
    for _ in range(ROUNDS):
        start, cpu_start = time.perf_counter(), cpu_s(server.pid)
        rounds.append(asyncio.run(round_of(server.url)))
        wall.append(time.perf_counter() - start)
        cpu.append(cpu_s(server.pid) - cpu_start)
        rss.append(rss_mb(server.pid))
    for results, seconds, server_cpu in zip(rounds, wall, cpu, strict=True):
        latencies = sorted(r[0] for r in results)
        failures = [r[1] for r in results if r[1]]
        p50 = statistics.median(latencies)
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        print(f"\nload: {len(results)} concurrent requests x {LENGTH} characters, {len(failures)} failed, "
              f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms, "
              f"round {seconds:.2f} s, server CPU {server_cpu:.2f} s")
        assert len(results) == CONCURRENT and not failures, failures[:3]
    print(f"server RSS (MB) before and after each round: {', '.join(f'{m:.1f}' for m in rss)}")
    texts = [[r[2] for r in results] for results in rounds]
    assert texts[0] == texts[1] == texts[2] and len(set(texts[0])) > CONCURRENT // 2  # seeded, and distinct
    assert rss[-1] - rss[2] < MAX_GROWTH_MB, rss  # after warm-up, memory is flat
