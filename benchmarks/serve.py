"""Load test of ``seqrec serve``: latency and throughput by concurrency, endpoint and backend, a soak with the
server's resident memory sampled, and a model reload in the middle of a load run. Writes
benchmarks/results/serve.json (rendered into RESULTS.md by benchmarks.table).

    .venv/bin/python -m benchmarks.serve                      # the full run (~20 minutes)
    .venv/bin/python -m benchmarks.serve --duration 5 --soak 30 --concurrency 1,32   # a quick look

The model is the SASRec run on amazon-beauty-bert4rec that ``make demo`` trains (runs/beauty-ce; trained here
with the same command when missing). Requests carry real histories: the last 50 events of the run's known
users. The load generator is a plain asyncio HTTP/1.1 client (one keep-alive connection per concurrent
client) in this process; the server is a separate process, so both share this machine's cores: the figures
are those of a server and its clients on one machine, measured on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "datasets" / "amazon-beauty-bert4rec" / "interactions.csv.gz"
TOKEN = "benchmark-token"
TARGETS = {"p50_ms_at_c1": 5.0, "recs_per_s_at_c32": 1000.0, "p99_ms_at_c32": 50.0, "errors": 0}


# ---- the server --------------------------------------------------------------------------------------
class Server:
    def __init__(self, run_dir: Path, backend: str, state: Path, extra: list[str]):
        env = {**os.environ, "SEQREC_ADMIN_TOKEN": TOKEN}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "seqrec.cli", "serve", str(run_dir), "--port", "0", "--backend", backend,
             "--state", str(state), *extra], stderr=subprocess.PIPE, text=True, env=env)
        while True:
            line = self.process.stderr.readline()
            if not line:
                raise RuntimeError(f"the server exited ({self.process.wait()})")
            found = re.search(r"on http://([\d.]+):(\d+)", line)
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                break
        # the rest of stderr is read by a thread so the pipe never fills (and kept: it may explain an error)
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---- the load generator -------------------------------------------------------------------------------
async def _request(reader, writer, head: bytes, body: bytes) -> tuple[int, bytes]:
    writer.write(head + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


def _head(method: str, path: str, body: bytes, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode()


async def load(server: Server, path: str, bodies: list[bytes], concurrency: int, seconds: float,
               during=None) -> dict:
    """``concurrency`` clients each sending requests back to back for ``seconds``; ``during`` (a coroutine
    function) runs alongside."""
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds

    async def client(seed: int):
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            while time.perf_counter() < stop_at:
                body = bodies[rng.randrange(len(bodies))]
                tick = time.perf_counter()
                try:
                    status, answer = await _request(reader, writer, _head("POST", path, body), body)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    errors.append(type(exc).__name__)
                    writer.close()
                    reader, writer = await asyncio.open_connection(server.host, server.port)
                    continue
                latencies.append(time.perf_counter() - tick)
                if status != 200:
                    errors.append(f"{status}: {answer[:200].decode(errors='replace')}")
        finally:
            writer.close()

    started = time.perf_counter()
    tasks = [asyncio.create_task(client(i)) for i in range(concurrency)]
    extra = [asyncio.create_task(during())] if during else []
    await asyncio.gather(*tasks)
    side = [await t for t in extra]
    wall = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    per_request = json.loads(bodies[0]).get("histories")
    rows = len(per_request) if per_request else 1
    out = {"concurrency": concurrency, "seconds": round(wall, 1), "requests": len(latencies),
           "errors": len(errors), "error_examples": sorted(set(errors))[:3],
           "requests_per_s": round(len(latencies) / wall, 1),
           "recommendations_per_s": round(len(latencies) * rows / wall, 1),
           "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
           "p95_ms": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
           "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
           "mean_ms": round(float(lat.mean()), 2) if len(lat) else None}
    if side:
        out["during"] = side[0]
    return out


async def admin(server: Server, path: str, payload: dict | None = None) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    body = json.dumps(payload or {}).encode()
    try:
        status, answer = await _request(reader, writer, _head("POST", path, body,
                                                              f"Authorization: Bearer {TOKEN}\r\n"), body)
    finally:
        writer.close()
    return status, json.loads(answer)


async def get(server: Server, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        status, body = await _request(reader, writer, _head("GET", path, b""), b"")
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return body
    finally:
        writer.close()


# ---- the runs --------------------------------------------------------------------------------------
def histories(run_dir: Path, n: int = 2000, seed: int = 0) -> list[list]:
    import seqrec

    model = seqrec.load(run_dir)
    h, vocab = model.histories_, model.vocab_
    rng = np.random.default_rng(seed)
    users = rng.choice(h.n_users, size=min(n, h.n_users), replace=False)
    return [vocab.decode_items(h.items[max(h.offsets[u], h.offsets[u + 1] - 50):h.offsets[u + 1]]).tolist()
            for u in users]


def ensure_run(run_dir: Path) -> None:
    if (run_dir / "config.json").is_file():
        return
    print(f"training {run_dir} (make demo's command)", flush=True)
    subprocess.run([sys.executable, "-m", "seqrec.cli", "train", "--data", str(DATA), "--model", "sasrec", "--loss",
                    "ce", "--out", str(run_dir), "--epochs", "5", "--valid-users", "10000", "--no-progress"],
                   check=True)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
            "python": platform.python_version()}


async def main_async(args) -> dict:
    run_dir = Path(args.run)
    ensure_run(run_dir)
    pool = histories(run_dir)
    singles = [json.dumps({"history": h, "k": args.k}).encode() for h in pool]
    batches = [json.dumps({"histories": [pool[(i * args.batch + j) % len(pool)] for j in range(args.batch)],
                           "k": args.k}).encode() for i in range(200)]
    result = {"run_dir": str(run_dir), "model": json.loads((run_dir / "config.json").read_text())["model"],
              "k": args.k, "batch_histories": args.batch, "duration_s": args.duration, "machine": machine(),
              "server_options": args.server_options, "targets": TARGETS, "load": []}
    state_dir = Path(tempfile.mkdtemp(prefix="seqrec-bench-"))
    for backend in args.backends:
        server = Server(run_dir, backend, state_dir / f"{backend}.sqlite", args.server_options)
        try:
            await load(server, "/v1/recommend", singles, 4, 3)  # warm-up
            for endpoint, path, bodies in (("single", "/v1/recommend", singles),
                                           ("batch", "/v1/recommend/batch", batches)):
                if endpoint not in args.endpoints:
                    continue
                for c in args.concurrency:
                    row = await load(server, path, bodies, c, args.duration)
                    row.update(backend=backend, endpoint=endpoint, rss_mib=round(server.rss_mib(), 1))
                    if row["errors"]:
                        row["server_log_tail"] = [line.rstrip() for line in server.log[-30:]]
                    print(json.dumps(row), flush=True)
                    result["load"].append(row)
            metrics = (await get(server, "/metrics")).decode()
            result.setdefault("batch_rows", {})[backend] = _batch_rows(metrics)
            if backend == args.backends[0]:
                result["reload"] = await reload_run(server, run_dir, singles, args)
                print(json.dumps({"reload": result["reload"]}), flush=True)
                if args.soak:
                    result["soak"] = await soak(server, singles, args)
        finally:
            server.stop()
    result["summary"] = summary(result)
    return result


def _batch_rows(metrics: str) -> dict:
    count = float(re.search(r"^seqrec_batch_rows_count (\S+)", metrics, re.M).group(1))
    total = float(re.search(r"^seqrec_batch_rows_sum (\S+)", metrics, re.M).group(1))
    return {"forward_passes": int(count), "histories": int(total), "mean_rows_per_pass": round(total / max(count, 1), 2)}


async def reload_run(server: Server, run_dir: Path, singles, args) -> dict:
    """Load at concurrency 32 for ``duration`` seconds; a reload of the run directory a third of the way in,
    a refused reload (a missing run directory) at two thirds."""
    async def reloads():
        await asyncio.sleep(args.duration / 3)
        tick = time.perf_counter()
        ok = await admin(server, "/v1/admin/reload", {"run_dir": str(run_dir)})
        seconds = round(time.perf_counter() - tick, 2)
        await asyncio.sleep(args.duration / 3)
        refused = await admin(server, "/v1/admin/reload", {"run_dir": str(run_dir) + "-missing"})
        return {"reload_status": ok[0], "reload_seconds": seconds, "refused_reload_status": refused[0]}

    return await load(server, "/v1/recommend", singles, 32, args.duration, during=reloads)


async def soak(server: Server, singles, args) -> dict:
    """Concurrency 32 for ``soak`` seconds, the server's resident memory sampled every 5 s."""
    samples = []

    async def sample():
        start = time.perf_counter()
        while time.perf_counter() - start < args.soak:
            samples.append((round(time.perf_counter() - start, 1), round(server.rss_mib(), 1)))
            await asyncio.sleep(5)
        return None

    row = await load(server, "/v1/recommend", singles, 32, args.soak, during=sample)
    rss = np.array([s[1] for s in samples])
    tenth = max(1, len(rss) // 10)
    row.update(rss_samples=samples, rss_first_tenth_median_mib=float(np.median(rss[:tenth])),
               rss_last_tenth_median_mib=float(np.median(rss[-tenth:])), rss_max_mib=float(rss.max()))
    row["rss_growth_mib"] = round(row["rss_last_tenth_median_mib"] - row["rss_first_tenth_median_mib"], 1)
    print(json.dumps({k: v for k, v in row.items() if k != "rss_samples"}), flush=True)
    return row


def summary(result: dict) -> dict:
    def find(backend, endpoint, c):
        return next((r for r in result["load"] if (r["backend"], r["endpoint"], r["concurrency"]) == (backend, endpoint, c)),
                    None)

    out = {}
    for backend in {r["backend"] for r in result["load"]}:
        c1, c32 = find(backend, "single", 1), find(backend, "single", 32)
        out[backend] = {
            "p50_ms_at_c1": c1 and c1["p50_ms"], "p50_ok": bool(c1 and c1["p50_ms"] <= TARGETS["p50_ms_at_c1"]),
            "single_recs_per_s_at_c32": c32 and c32["recommendations_per_s"],
            "single_p99_ms_at_c32": c32 and c32["p99_ms"],
            "single_c32_ok": bool(c32 and c32["recommendations_per_s"] >= TARGETS["recs_per_s_at_c32"]
                                  and c32["p99_ms"] <= TARGETS["p99_ms_at_c32"]),
            "errors": sum(r["errors"] for r in result["load"] if r["backend"] == backend)}
        b32 = find(backend, "batch", 32)
        if b32:
            out[backend].update(batch_recs_per_s_at_c32=b32["recommendations_per_s"], batch_p99_ms_at_c32=b32["p99_ms"])
    if "soak" in result:
        out["soak"] = {k: result["soak"][k] for k in ("requests", "errors", "rss_first_tenth_median_mib",
                                                       "rss_last_tenth_median_mib", "rss_growth_mib", "p99_ms")}
    if "reload" in result:
        out["reload"] = {k: result["reload"][k] for k in ("requests", "errors")} | result["reload"]["during"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "beauty-ce"))
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--endpoints", default="single,batch")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per load run")
    parser.add_argument("--soak", type=float, default=600.0, help="seconds of the soak (0: none)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32, help="histories per batch request")
    parser.add_argument("--out", default=str(RESULTS / "serve.json"))
    parser.add_argument("server_options", nargs=argparse.REMAINDER, help="after --: options for seqrec serve")
    args = parser.parse_args()
    args.backends, args.endpoints = args.backends.split(","), args.endpoints.split(",")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.server_options = [a for a in args.server_options if a != "--"]
    import uvloop
    result = uvloop.run(main_async(args))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
