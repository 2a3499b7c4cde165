"""`graft serve` with micro-batching on (the default window) against off (`--batch-window-ms 0`).

    python benchmarks/serve.py --data ../shared/datasets/flowers-dev [--run RUN] [--requests 400] [--clients 16] [--rounds 3]

1. The model: RUN, else a linear-probe run trained here on 20 images per class of DATA/train
   (tf_efficientnet_lite0 at its own 224 px), so the server runs a real classifier.
2. Two `graft serve RUN --port 0` processes on loopback, started once: batching on
   (`--batch-window-ms`, `--window`, 5 ms) and off (0). Both use the same engine (`--engine`, auto).
3. In interleaved rounds (on, off; the next round starts with the other), `--clients` threads, each
   with its own kept-alive connection, POST `--requests` images of DATA (JPEG files as multipart
   uploads) to /predict; requests/s of the round and each request's latency.
Prints requests/s, median and 95th-percentile latency of each, and the ratio on/off per round and its
median; writes them under "serve" in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _results import store
from _runs import train_small_probe

EXTENSIONS = {".jpg", ".jpeg", ".png"}


def start(run: Path, *options: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-c", "from graft.cli.main import main; main()", "serve", str(run), "--port", "0", *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if match:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, match.group(0)
    raise SystemExit(f"graft serve did not start: {' '.join(command)}")


def load_round(url: str, bodies: list[tuple[str, bytes]], requests: int, clients: int) -> dict:
    import httpx

    local = threading.local()

    def one(index: int) -> float:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, timeout=120)
        name, data = bodies[index % len(bodies)]
        started = time.perf_counter()
        response = local.http.post("/predict", files={"file": (name, data)})
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text}")
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    return {"requests_per_s": requests / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))], "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="images to send (every image under it), and DATA/train to train on")
    parser.add_argument("--run", type=Path, help="a run folder to serve (default: train a linear probe on DATA/train)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=5.0, help="--batch-window-ms of the batching server")
    parser.add_argument("--engine", default="auto", help="graft serve --engine for both servers")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="graft-serve-bench-"))
    env = {**os.environ, "GRAFT_CACHE": os.environ.get("GRAFT_CACHE", str(work / "cache"))}
    os.environ.update(env)
    run = options.run
    if run is None:
        run = train_small_probe(options.data, work, env)
    bodies = [(p.name, p.read_bytes()) for p in sorted(options.data.rglob("*")) if p.suffix.lower() in EXTENSIONS][:2000]
    if not bodies:
        raise SystemExit(f"{options.data}: no images")

    on, off = ("--batch-window-ms", str(options.window)), ("--batch-window-ms", "0")
    servers = {"on": start(run, *on, "--engine", options.engine), "off": start(run, *off, "--engine", options.engine)}
    import httpx

    settings = {mode: httpx.get(url + "model", timeout=30).json() for mode, (_, url) in servers.items()}
    rounds: dict[str, list[dict]] = {"on": [], "off": []}
    try:
        for _, url in servers.values():  # warm-up: first requests, thread pools, allocator
            load_round(url, bodies, 2 * options.clients, options.clients)
        for index in range(options.rounds):
            order = ["on", "off"] if index % 2 == 0 else ["off", "on"]
            for mode in order:
                rounds[mode].append(load_round(servers[mode][1], bodies, options.requests, options.clients))
                print(f"round {index + 1} {mode:>3}: " + ", ".join(f"{k} {v:.1f}" for k, v in rounds[mode][-1].items()), flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)

    ratios = [on["requests_per_s"] / off["requests_per_s"] for on, off in zip(rounds["on"], rounds["off"])]
    median = {mode: {key: statistics.median(r[key] for r in rounds[mode]) for key in rounds[mode][0]} for mode in rounds}
    print(f"\nbatching on / off, requests/s: rounds {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")
    for mode in ("on", "off"):
        print(f"{mode:>3}: {median[mode]['requests_per_s']:.1f} req/s, p50 {median[mode]['p50_ms']:.0f} ms, "
              f"p95 {median[mode]['p95_ms']:.0f} ms  ({settings[mode]['engine']}, window {settings[mode]['batching']['window_ms']} ms)")
    store({"serve" if options.engine == "auto" else f"serve_{options.engine}": {
        "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
        "requests": options.requests, "clients": options.clients, "rounds": options.rounds,
        "model": {key: settings["on"][key] for key in ("backbone", "strategy", "input_size", "engine", "precision")},
        "window_ms": settings["on"]["batching"]["window_ms"], "max_batch": settings["on"]["batching"]["max_batch"],
        "on": rounds["on"], "off": rounds["off"], "ratio_rounds": ratios, "ratio_median": statistics.median(ratios),
        "median": median, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
    }})


if __name__ == "__main__":
    main()
