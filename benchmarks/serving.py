"""Serving many task adapters on one base model: memory with adapters vs the base alone, and
a bounded load test of the local endpoint (fixed request count, a time limit, 8 at once), run
twice: alone, and beside one hostile client that sends oversized, malformed and abandoned
requests the whole time (the well-formed clients must lose nothing and keep their p95 latency
within 1.5x).

Adapters here are LoRA adapters of the pipeline's shape (rank 16 on all linear layers) with
random weights: memory and speed depend on their shape, not on what they learned, and no
training run is needed. `make bench-serve` runs it on SmolLM2-135M; the tests on a tiny model.

    python -m benchmarks.serving --output runs/bench/serving.json
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

TASKS = ("dialogue-summary", "meeting-notes")
DIALOGUE = (
    "#Person1#: Could you send me the quarterly report by Friday?\n"
    "#Person2#: Sure. I still need the sales figures from Anna, but I will finish it on "
    "Thursday and send it to you and the team."
)


def request_body(max_new_tokens: int, dialogue: str = DIALOGUE) -> dict[str, Any]:
    """The dialogue as every client sends it: the shipped task's chat-completions body."""
    from training_scripts import tasks

    return tasks.chat_request(tasks.resolve_task_spec(tasks.DEFAULT_TASK), dialogue, max_new_tokens)


def make_adapters(base_model: str, out: Path, rank: int = 16) -> dict[str, Path]:
    """One random-weight LoRA adapter per task, saved as peft saves a trained one."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training_scripts import model_loading

    adapters = {}
    for seed, task in enumerate(TASKS):
        torch.manual_seed(seed)
        model = model_loading.load_model(base_model, quantize_4bit=False, dtype=torch.float32)
        config = LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False
        )
        peft_model = get_peft_model(model, config)
        adapters[task] = out / task
        peft_model.save_pretrained(adapters[task])
    return adapters


def resident_child(base_model: str, adapters: dict[str, str]) -> dict[str, int]:
    """In a fresh process: load the served model, answer once per task, report memory."""
    from benchmarks.measure import _status_bytes
    from pipelines.serving.adapters import BASE, AdapterModel, Request
    from training_scripts.logs import setup_logging

    setup_logging()
    model = AdapterModel(base_model, {t: Path(p) for t, p in adapters.items()})
    messages = request_body(16)["messages"]
    model.generate([Request(t, messages, 16) for t in (*adapters, BASE)])
    return {"rss_bytes": _status_bytes("VmRSS"), "peak_rss_bytes": _status_bytes("VmHWM")}


def resident(base_model: str, adapters: dict[str, Path]) -> dict[str, int]:
    code = (
        "import json, sys; from benchmarks.serving import resident_child; "
        "print(json.dumps(resident_child(sys.argv[1], json.loads(sys.argv[2]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, base_model, json.dumps({t: str(p) for t, p in adapters.items()})],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def serve_child(base_model: str, adapters: dict[str, str], port: int) -> None:
    import uvicorn

    from pipelines.serving.adapters import AdapterModel
    from pipelines.serving.server import create_app
    from training_scripts.logs import setup_logging

    setup_logging()
    model = AdapterModel(base_model, {t: Path(p) for t, p in adapters.items()})
    app = create_app(model, stage="bench", versions=dict.fromkeys(adapters, 0))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


HOSTILE_KINDS = ("oversized", "too_many_characters", "malformed", "abandoned")
ABANDON_AFTER_S = 0.2  # an abandoned request's client leaves this long after sending it


def post_raw(url: str, data: bytes, task: str, timeout: float = 60) -> int:
    """One POST /invocations; its status code (the connection closed early counts as 0)."""
    from pipelines.serving.server import COMPONENT_HEADER

    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(
            "POST",
            "/invocations",
            body=data,
            headers={"Content-Type": "application/json", COMPONENT_HEADER: task},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    except (ConnectionError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def abandon(url: str, data: bytes, task: str) -> str:
    """Send a request and leave before its answer."""
    from pipelines.serving.server import COMPONENT_HEADER

    parts = urllib.parse.urlsplit(url)
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\n{COMPONENT_HEADER}: {task}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as client:
        client.sendall(head.encode() + data)
        time.sleep(ABANDON_AFTER_S)
    return "left"


def hostile_requests(limits: dict[str, int]) -> dict[str, list[bytes]]:
    """Each kind's bodies: past the byte limit, past the characters the context can take,
    malformed in several ways, and well-formed but as long as an answer may be (abandoned)."""
    good = request_body(8)
    text = good["messages"][-1]["content"]
    longest = {**good, "max_tokens": 512}
    return {
        "oversized": [
            json.dumps(request_body(8, "word " * (limits["max_body_bytes"] // 5))).encode()
        ],
        "too_many_characters": [
            json.dumps(request_body(8, "x" * (limits["max_prompt_chars"] + 1))).encode()
        ],
        "malformed": [
            json.dumps({**good, "temperature": float("nan")}).encode(),
            json.dumps(good).replace(text[:8], "\\ud800").encode(),
            json.dumps({**good, "max_new_token": 4}).encode(),
            json.dumps({"inputs": [text]}).encode(),
            b'{"messages": [',
        ],
        "abandoned": [json.dumps(longest).encode()],
    }


def hostile_client(url: str, stop: threading.Event, limits: dict[str, int]) -> dict[str, Any]:
    """One client sending every kind of hostile request in turn until `stop`: what each got."""
    bodies = hostile_requests(limits)
    outcomes: dict[str, Counter[str]] = {kind: Counter() for kind in HOSTILE_KINDS}
    for turn in itertools.count():
        if stop.is_set():
            break
        kind = HOSTILE_KINDS[turn % len(HOSTILE_KINDS)]
        data = bodies[kind][turn // len(HOSTILE_KINDS) % len(bodies[kind])]
        task = TASKS[turn % len(TASKS)]
        if kind == "abandoned":
            outcomes[kind][abandon(url, data, task)] += 1
        else:
            outcomes[kind][str(post_raw(url, data, task))] += 1
    return {kind: dict(counts) for kind, counts in outcomes.items()}


def ping_latencies(url: str, stop: threading.Event, every_s: float = 0.25) -> list[float]:
    latencies = []
    while not stop.wait(every_s):
        started = time.perf_counter()
        with urllib.request.urlopen(f"{url}/ping", timeout=30) as response:
            response.read()
        latencies.append(time.perf_counter() - started)
    return latencies


def ping(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/ping", timeout=10) as response:
        return json.loads(response.read())


def load_test(
    url: str,
    requests: int,
    concurrency: int,
    time_limit_s: float,
    max_new_tokens: int,
    *,
    hostile: bool = False,
) -> dict[str, Any]:
    """`requests` requests, alternating tasks, `concurrency` at once; every one accounted for.
    With `hostile`, one more client sends oversized, malformed and abandoned requests the
    whole time. /ping is asked every quarter second throughout."""
    from pipelines.serving.client import invoke_local

    body = request_body(max_new_tokens)
    before = ping(url)
    stop = threading.Event()

    def one(index: int) -> float:
        started = time.perf_counter()
        invoke_local(url, TASKS[index % len(TASKS)], body, timeout=time_limit_s)
        return time.perf_counter() - started

    started = time.perf_counter()
    # The well-formed clients in a pool of their own: exactly `concurrency` at once.
    with ThreadPoolExecutor(2) as others, ThreadPoolExecutor(concurrency) as pool:
        pinger = others.submit(ping_latencies, url, stop)
        attacker = others.submit(hostile_client, url, stop, before["limits"]) if hostile else None
        futures = [pool.submit(one, i) for i in range(requests)]
        done, not_done = wait(futures, timeout=time_limit_s)
        for future in not_done:
            future.cancel()
        elapsed = time.perf_counter() - started
        stop.set()
        pings = sorted(pinger.result())
        attacks = attacker.result() if attacker else None
    latencies = sorted(f.result() for f in done if f.exception() is None)
    failed = [repr(f.exception()) for f in done if f.exception() is not None]
    after = ping(url)
    figures = {
        "requests": requests,
        "concurrency": concurrency,
        "max_new_tokens": max_new_tokens,
        "completed": len(latencies),
        "failed": len(failed),
        "failures": failed[:5],
        "unfinished": len(not_done),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 3),
        "p50_latency_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_latency_s": round(p95(latencies), 3) if latencies else None,
        "batches": after["batches"] - before["batches"],
        "largest_batch": after["largest_batch"],
        "longest_answer_tokens": after["longest_answer"],
        "ping_p95_s": round(p95(pings), 3) if pings else None,
        "ping_max_s": round(pings[-1], 3) if pings else None,
    }
    if attacks is not None:
        figures["hostile"] = attacks
        figures["abandoned_by_the_server"] = after["abandoned"] - before["abandoned"]
    return figures


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_and_load(base_model: str, adapters: dict[str, Path], args: argparse.Namespace) -> dict:
    port = free_port()
    code = (
        "import json, sys; from benchmarks.serving import serve_child; "
        "serve_child(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))"
    )
    paths = json.dumps({t: str(p) for t, p in adapters.items()})
    server = subprocess.Popen([sys.executable, "-c", code, base_model, paths, str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark's server did not start") from None
                time.sleep(0.5)
        shape = (args.requests, args.concurrency, args.time_limit, args.max_new_tokens)
        alone = load_test(url, *shape)
        attacked = load_test(url, *shape, hostile=True)
        return {"well_formed_alone": alone, "with_a_hostile_client": attacked}
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from training_scripts import measurements

    base_model = args.base_model
    if not base_model:
        from pipelines.fixtures.models import materialize_smollm2

        base_model = str(materialize_smollm2())
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        adapters = make_adapters(base_model, Path(scratch))
        adapter_bytes = sum(measurements.directory_size(p) for p in adapters.values())
        base_alone = resident(base_model, {})
        with_adapters = resident(base_model, adapters)
        load = serve_and_load(base_model, adapters, args)
    allowed = base_alone["rss_bytes"] * 1.10 + adapter_bytes
    return {
        "base_model": base_model,
        "adapters": len(adapters),
        "memory": {
            "base_alone": base_alone,
            "with_adapters": with_adapters,
            "adapter_files_bytes": adapter_bytes,
            "allowed_rss_bytes": int(allowed),  # the base alone + 10% + the adapters' size
            "within_bound": with_adapters["rss_bytes"] <= allowed,
        },
        "load": load,
        "hostile_client": hostile_verdict(load["well_formed_alone"], load["with_a_hostile_client"]),
    }


def hostile_verdict(alone: dict[str, Any], attacked: dict[str, Any]) -> dict[str, Any]:
    """Did the well-formed clients lose nothing and keep their p95 within 1.5x of their run
    alone, and was every hostile request refused with a 4xx or dropped by the server?"""
    ratio = attacked["p95_latency_s"] / alone["p95_latency_s"]
    refused = all(
        status.startswith("4")
        for kind, outcomes in attacked["hostile"].items()
        if kind != "abandoned"
        for status in outcomes
    )
    return {
        "p95_ratio": round(ratio, 3),
        "p95_within_1_5x": ratio <= 1.5,
        "well_formed_lost": attacked["requests"] - attacked["completed"],
        "hostile_all_refused_4xx": refused,
        "abandoned_sent": sum(attacked["hostile"]["abandoned"].values()),
        "abandoned_by_the_server": attacked["abandoned_by_the_server"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--base-model", default="", help="A model folder; default: SmolLM2-135M-Instruct."
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=300.0, help="Seconds for all requests.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--output", type=Path, default=None, help="Write the figures as JSON here.")
    args = parser.parse_args(argv)
    figures = run(args)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    memory, load, hostile = figures["memory"], figures["load"], figures["hostile_client"]
    alone = load["well_formed_alone"]
    ok = (
        memory["within_bound"]
        and alone["completed"] == alone["requests"]
        and hostile["well_formed_lost"] == 0
        and hostile["p95_within_1_5x"]
        and hostile["hostile_all_refused_4xx"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
