"""`graft serve` with micro-batching on (`--batch-window-ms WINDOW`) against off (0): requests/s and latency.

1. The model: a Lite0 linear probe on 20 images per class of DATA/train (_runs.py `small_model`).
2. Two `graft serve RUN --port 0` processes on loopback, started once, both with `--engine ENGINE`:
   batching on and off.
3. ROUNDS interleaved rounds: CLIENTS threads, each with its own kept-alive connection, POST
   REQUESTS images of DATA (its files, one per request, as multipart uploads) to /predict;
   requests/s of the round and each request's latency. Ratio: on / off per round, the median.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ._runs import BenchmarkFailed, Context, Parameter, image_files, interleaved, small_model, start_graft

PARAMETERS = {
    "requests": Parameter(300, 32, "requests per server per round"),
    "clients": Parameter(16, 4, "client threads"),
    "rounds": Parameter(3, 1, "interleaved rounds"),
    "window": Parameter(5.0, 5.0, "--batch-window-ms of the batching server"),
    "engine": Parameter("auto", "auto", "graft serve --engine, for both servers"),
    "img_size": Parameter(0, 64, "the model's input size in px; 0: the backbone's own (224)"),
}


def key(values: dict) -> str:
    return "serve" if values["engine"] == "auto" else f"serve_{values['engine']}"


def start(run: Path, env: dict[str, str], *options: str) -> tuple[subprocess.Popen, str]:
    process = start_graft("serve", run, "--port", "0", *options, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if match:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, match.group(0)
    raise BenchmarkFailed(f"graft serve {run} {' '.join(options)} did not start")


def load_round(url: str, bodies: list[tuple[str, bytes]], requests: int, clients: int) -> tuple[float, dict]:
    import httpx

    local = threading.local()

    def one(index: int) -> float:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, timeout=120)
        name, data = bodies[index % len(bodies)]
        started = time.perf_counter()
        response = local.http.post("/predict", files={"file": (name, data)})
        if response.status_code != 200:
            raise BenchmarkFailed(f"{response.status_code}: {response.text}")
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    return requests / elapsed, {"p50_ms": round(1000 * statistics.median(latencies), 1),
                                "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1)}


def run(context: Context, *, requests: int, clients: int, rounds: int, window: float, engine: str, img_size: int) -> dict:
    import httpx

    model, env = small_model(context, img_size=img_size)
    bodies = [(p.name, p.read_bytes()) for p in image_files(context.data)[:2000]]
    servers = {"on": start(model, env, "--batch-window-ms", str(window), "--engine", engine),
               "off": start(model, env, "--batch-window-ms", "0", "--engine", engine)}
    try:
        settings = {mode: httpx.get(url + "model", timeout=30).json() for mode, (_, url) in servers.items()}
        for _, url in servers.values():  # warm-up: first requests, thread pools, allocator
            load_round(url, bodies, 2 * clients, clients)
        pair = interleaved(rounds, {"batching": (lambda: load_round(servers["off"][1], bodies, requests, clients),
                                                 lambda: load_round(servers["on"][1], bodies, requests, clients))},
                           log=context.log)["batching"]
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    on = {"requests_per_s": pair.summary(1)["measured"], "latency": pair.extras}
    off = {"requests_per_s": pair.summary(1)["baseline"], "latency": pair.baseline_extras}
    return {"summary": f"batching on / off {pair.ratio:.2f}x requests/s ({settings['on']['engine']})",
            "ratio": round(pair.ratio, 3), "ratios": pair.summary(3)["ratios"], "on": on, "off": off,
            "model": {k: settings["on"].get(k) for k in ("backbone", "strategy", "input_size", "engine", "precision")},
            "window_ms": settings["on"]["batching"]["window_ms"], "max_batch": settings["on"]["batching"]["max_batch"],
            "requests": requests, "clients": clients}
