"""`nlpipe serve` under load: 16 concurrent clients, one CoNLL-2003 test sentence per request.

    python benchmarks/serve_throughput.py RUN_DIR [--requests 320] [--clients 16] [--data-dir ../shared/data]

Starts the server twice on 127.0.0.1 — without grouping (``--max-batch-size 1``) and with the default
grouping (``--max-batch-size 32``) — and prints requests/s, the model calls the server made (``/health``) and
the median/95th-percentile latency of each. The figures include HTTP, JSON and the batching queue.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serving"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from perf_inference import test_sentences  # noqa: E402
from server_process import ServerProcess, post_json, request  # noqa: E402


def load(url: str, texts: list[str], clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(enumerate(texts))

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                _, text = queue.pop()
            start = time.perf_counter()
            status, _ = post_json(url + "/entities", {"texts": [text]})
            assert status == 200
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return time.perf_counter() - start, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    texts = test_sentences(args.data_dir, args.requests)
    for batch in (1, 32):
        log = Path(f"/tmp/serve_throughput_{batch}.log")
        with ServerProcess(args.run_dir, log, "--max-batch-size", str(batch)) as server:
            post_json(server.url + "/entities", {"texts": texts[:8]})  # warm-up
            before = request(server.url + "/health")[1]
            seconds, latencies = load(server.url, texts, args.clients)
            after = request(server.url + "/health")[1]
        latencies.sort()
        print(json.dumps({
            "max_batch_size": batch, "requests": len(latencies), "requests_per_s": round(len(latencies) / seconds, 1),
            "model_calls": after["batches"] - before["batches"],
            "latency_ms_p50": round(1000 * statistics.median(latencies), 1),
            "latency_ms_p95": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
