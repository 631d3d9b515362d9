"""`edgekit bench BUNDLE`: latency and memory of a bundle, side by side with the bare backend call
and (with --compare-keras MODEL: a model directory or .keras file) with Keras, all in one run, batch 1, after warm-up.

Measured (milliseconds, p50/p90/p99 each; the headline `*_ms` values are medians):
- runtime_ms      `runner.run_checked` on a prepared (quantized, validated) input: our wrapper
                  without preprocessing, i.e. what `EdgeModel.predict_tensors` costs minus quantization;
- bare_invoke_ms  the backend's own set_tensor + invoke + get_tensor (or session.run) on the same
                  interpreter/session and input, with no wrapper: the floor;
- keras_predict_ms / keras_call_ms  `model.predict(x, verbose=0)` and a `tf.function(jit_compile=False)`
                  call on the float input (Keras loaded in safe mode).
runtime and bare calls are timed alternately, so load from other processes hits both alike.
Cold start runs in a fresh process: import runtime, load the bundle, first result.
With --serve [N]: requests per second and latency through `edgekit serve` over loopback with N
client threads, by TensorFlow Serving's API (v1, JSON) and by the Open Inference Protocol (v2, binary
tensors and JSON tensors) on the same server, next to the runtime in-process with 1 and N threads
(`measure_serve`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from edgekit.core import log
from edgekit.runtime import child

_COLD_START = r"""
import sys, time
t0 = time.perf_counter()
from edgekit import runtime
from edgekit.runtime import child

def work():
    model = runtime.load(sys.argv[1], backend=None if sys.argv[2] == "auto" else sys.argv[2],
                         threads=int(sys.argv[3]) if sys.argv[3] != "0" else None)
    model.predict_tensors(model.example_tensors(1))
    from edgekit.runtime.timing import peak_rss_mb
    return {"in_process_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "backend": model.backend,
            "heavy_modules": sorted(m for m in ("tensorflow", "keras", "onnx", "tf2onnx") if m in sys.modules)}

sys.exit(child.child_main(work))
"""


def cold_start(bundle: str | Path, backend: str | None = None, threads: int | None = None) -> dict:
    """Fresh interpreter: import runtime, load the bundle, first result. `cold_start_s` is the wall
    time of the whole process (interpreter start and exit included)."""
    t = time.perf_counter()
    try:
        result = child.run([sys.executable, "-c", _COLD_START, str(bundle), backend or "auto", str(threads or 0)],
                           timeout=300, what="the cold-start process")
    except child.ChildFailed as exc:
        raise RuntimeError(str(exc)) from None
    wall = time.perf_counter() - t
    return {"cold_start_s": round(wall, 3), "cold_start_in_process_s": round(result["in_process_s"], 3),
            "cold_start_peak_rss_mb": result["peak_rss_mb"], "cold_start_heavy_modules": result["heavy_modules"]}


def _keras_timings(model_dir: str, x, runs: int, warmup: int, allow_unsafe: bool) -> dict:
    """Keras timings of the model (a model directory or a .keras file) on `x` (an array, or a dict
    input name -> array)."""
    from edgekit.runtime.timing import summary, time_calls
    from edgekit.train.io import load_model

    keras_model, _ = load_model(model_dir, allow_unsafe=allow_unsafe)
    import tensorflow as tf

    log("  timing Keras model.predict ...")
    predict_ms = time_calls(lambda: keras_model.predict(x, verbose=0), runs, warmup)
    call = tf.function(lambda t: keras_model(t, training=False), jit_compile=False)
    tx = tf.nest.map_structure(tf.constant, x)
    log("  timing Keras tf.function call ...")
    call_ms = time_calls(lambda: tf.nest.map_structure(lambda t: t.numpy(), call(tx)), runs, warmup)
    return {"keras_predict": summary(predict_ms), "keras_call": summary(call_ms)}


def measure(bundle: str | Path, runs: int = 100, warmup: int = 10, threads: int | None = None,
            backend: str | None = None, compare_keras: str | None = None, allow_unsafe: bool = False,
            cold: bool = True, baseline: str | None = None) -> dict:
    from edgekit import runtime
    from edgekit.runtime.timing import peak_rss_mb, summary, time_interleaved

    log(f"bench: loading {bundle}")
    with runtime.load(bundle, backend=backend, threads=threads) as model:
        x = model.example_tensors(1)
        feed = model.prepare(x)
        runner = model.runner
        run = runner.run_checked
        bare = runner.bare_call({i.name: a for i, a in zip(runner.inputs, feed)})
        # Same input, same interpreter: the wrapper must give the bare call's numbers.
        ours = run(feed)[runner.outputs[0].name]
        theirs = bare()
        theirs = theirs[0] if isinstance(theirs, list) else theirs
        if not np.array_equal(ours, theirs):
            raise RuntimeError("runtime and bare backend outputs differ on the same input")
        timed = {"runtime": lambda: run(feed), "bare": bare}
        base_model = None
        if baseline:
            # Another variant of the same model (e.g. fp32 next to int8), timed in the same loop so
            # both see the same machine load.
            base_model = runtime.load(baseline, backend=backend, threads=threads)
            base_feed = base_model.prepare(x)
            timed["baseline"] = lambda: base_model.runner.run_checked(base_feed)
        log(f"  timing runtime vs bare {model.backend} call{' vs baseline' if baseline else ''}: "
            f"{warmup} warm-up + {runs} runs each ...")
        try:
            times = time_interleaved(timed, runs, warmup)
        finally:
            if base_model is not None:
                base_model.close()
        result = {
            "bundle": str(bundle), "variant": model.bundle.variant, "format": model.bundle.format,
            "backend": model.backend, "threads": model.settings.threads, "xnnpack": model.settings.xnnpack,
            "batch": 1, "runs": runs, "warmup": warmup,
            "runtime": summary(times["runtime"]), "bare_invoke": summary(times["bare"]),
        }
        if baseline:
            result["baseline_bundle"] = str(baseline)
            result["baseline"] = summary(times["baseline"])
        result["peak_rss_mb"] = peak_rss_mb()  # before Keras/TensorFlow load
    if cold:
        log("  cold start in a fresh process ...")
        result.update(cold_start(bundle, backend, threads))
    if compare_keras:
        # Keras gets the float input (what the int8 model quantizes internally); a several-input
        # model's inputs by name (the bundle's input names are the Keras model's).
        result.update(_keras_timings(compare_keras, x, runs, warmup, allow_unsafe))
        result["peak_rss_with_keras_mb"] = peak_rss_mb()
    _add_ratios(result)
    result["targets"] = targets(result)
    return result


def _add_ratios(result: dict) -> None:
    """The p50 of each timed path as `*_ms`, and the ratios measured side by side in this run."""
    for key in ("runtime", "bare_invoke", "keras_predict", "keras_call", "baseline"):
        if key in result:
            result[f"{key}_ms"] = result[key]["p50"]

    def ratio(a: str, b: str, digits: int) -> float:
        return round(result[a] / max(result[b], 1e-9), digits)

    result["runtime_over_bare"] = ratio("runtime_ms", "bare_invoke_ms", 3)
    if "keras_predict_ms" in result:
        result["keras_predict_over_runtime"] = ratio("keras_predict_ms", "runtime_ms", 1)
        result["keras_call_over_runtime"] = ratio("keras_call_ms", "runtime_ms", 1)
    if "baseline_ms" in result:
        result["speedup_vs_baseline"] = ratio("baseline_ms", "runtime_ms", 2)


# The targets for the image model, evaluated on this run's own side-by-side numbers.
TARGETS = {
    "runtime_within_10pct_of_bare": lambda r: r["runtime_over_bare"] <= 1.10,
    "keras_predict_over_runtime_at_least_10": lambda r: r["keras_predict_over_runtime"] >= 10,
    "speedup_vs_baseline_at_least_1.8": lambda r: r["speedup_vs_baseline"] >= 1.8,
    "cold_start_at_most_0.5s": lambda r: r["cold_start_s"] <= 0.5,
    "cold_start_rss_at_most_80mb": lambda r: r["cold_start_peak_rss_mb"] <= 80,
}


def targets(result: dict) -> dict:
    """Each target this run has the numbers for -> met or not (absent when not measured)."""
    met = {}
    for name, check in TARGETS.items():
        try:
            met[name] = bool(check(result))
        except KeyError:
            continue
    return met


def format_summary(r: dict) -> str:
    def row(name, key):
        s = r[key]
        return f"  {name:<16} p50 {s['p50']:9.3f}  p90 {s['p90']:9.3f}  p99 {s['p99']:9.3f} ms"

    lines = [f"{r['bundle']} ({r['variant']}, {r['backend']}, threads {r['threads'] or 'default'}, batch 1)",
             row("runtime", "runtime"), row("bare invoke", "bare_invoke")]
    if "keras_predict" in r:
        lines += [row("keras predict", "keras_predict"), row("keras tf.function", "keras_call")]
    lines.append(f"  runtime / bare = {r['runtime_over_bare']:.3f}"
                 + (f"   keras predict / runtime = {r['keras_predict_over_runtime']:.1f}x"
                    if "keras_predict_over_runtime" in r else ""))
    if "baseline" in r:
        lines.append(row("baseline", "baseline") + f"  ({r['baseline_bundle']})")
        lines.append(f"  speedup vs baseline = {r['speedup_vs_baseline']:.2f}x")
    cold = f"; cold start {r['cold_start_s']:.3f} s, {r['cold_start_peak_rss_mb']} MB" if "cold_start_s" in r else ""
    lines.append(f"  peak RSS {r['peak_rss_mb']} MB{cold}")
    if r.get("targets"):
        lines.append("  targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in r["targets"].items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ through the server
_SERVE_READY = re.compile(r"serving .* on http://127\.0\.0\.1:(\d+) ")


def _start_server(bundle, workers: int, backend: str | None):
    """`python -m edgekit.runtime serve BUNDLE` on a free loopback port -> (process, port)."""
    cmd = [sys.executable, "-m", "edgekit.runtime", "serve", str(bundle), "--port", "0", "--threads", str(workers)]
    if backend:
        cmd += ["--backend", backend]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    for line in proc.stderr:  # until the server says where it listens
        lines.append(line.strip())
        m = _SERVE_READY.search(line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining the pipe
            return proc, int(m.group(1))
    proc.wait()
    raise RuntimeError(f"the server did not start: {lines[-1] if lines else proc.returncode}")


def _load(clients: int, per_client: int, warmup: int, make_call) -> dict:
    """`clients` threads each make `warmup` untimed then `per_client` timed calls of their own
    `make_call(i)()`, all starting together -> requests per second over the wall time, and latency."""
    calls = [make_call(i) for i in range(clients)]
    times = [np.empty(per_client) for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    clock = time.perf_counter

    errors: list[BaseException] = []

    def client(i: int) -> None:
        call, out = calls[i], times[i]
        try:
            for _ in range(warmup):
                call()
            barrier.wait()
            for j in range(per_client):
                t = clock()
                call()
                out[j] = clock() - t
        except threading.BrokenBarrierError:
            pass
        except Exception as exc:  # reported below; the other clients must not wait for this one
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    start = clock()
    for t in threads:
        t.join()
    wall = clock() - start
    if errors:
        raise RuntimeError(f"a client failed: {type(errors[0]).__name__}: {errors[0]}")
    from edgekit.runtime.timing import summary

    ms = np.concatenate(times) * 1e3
    return {"clients": clients, "requests": int(ms.size), "requests_per_s": round(ms.size / wall, 1),
            "latency_ms": summary(ms), "_ms": ms, "_wall": wall}


def _merge(parts: list[dict]) -> dict:
    """Several `_load` results of one kind (rounds) -> one: all requests over the summed wall time."""
    from edgekit.runtime.timing import summary

    ms = np.concatenate([p["_ms"] for p in parts])
    wall = sum(p["_wall"] for p in parts)
    return {"clients": parts[0]["clients"], "requests": int(ms.size), "requests_per_s": round(ms.size / wall, 1),
            "latency_ms": summary(ms)}


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def _v2_bodies(feed: dict) -> dict:
    """Open Inference Protocol infer requests for inputs by name: {"binary": (body, headers), "json":
    (body, headers)}; outputs come back as the inputs were sent."""
    from edgekit.runtime.serve.tensors import datatype_of

    specs = [{"name": n, "shape": list(a.shape), "datatype": datatype_of(a.dtype)} for n, a in feed.items()]
    as_json = {"inputs": [dict(spec, data=a.ravel().tolist()) for spec, a in zip(specs, feed.values())]}
    header = json.dumps({"inputs": [dict(spec, parameters={"binary_data_size": a.nbytes})
                                    for spec, a in zip(specs, feed.values())],
                         "parameters": {"binary_data_output": True}}).encode()
    blobs = b"".join(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes() for a in feed.values())
    return {"binary": (header + blobs, {"Content-Type": "application/octet-stream",
                                        "Inference-Header-Content-Length": str(len(header))}),
            "json": (json.dumps(as_json).encode(), {"Content-Type": "application/json"})}


def _v2_outputs(data: bytes, header_length: str | None) -> dict:
    """An Open Inference Protocol infer answer -> {output name: float32/int array}."""
    from edgekit.runtime.serve.tensors import DATATYPES

    n = int(header_length) if header_length else len(data)
    doc, offset, out = json.loads(data[:n]), n, {}
    for tensor in doc["outputs"]:
        dtype = DATATYPES[tensor["datatype"]]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = np.asarray(tensor["data"], dtype=dtype)
        else:
            array = np.frombuffer(data[offset:offset + size], dtype=dtype.newbyteorder("<")).astype(dtype)
            offset += size
        out[tensor["name"]] = array.reshape(tensor["shape"])
    return out


SERVE_ROUNDS = 3  # turns each protocol takes in `measure_serve`


def measure_serve(bundle, clients: int | None = None, runs: int = 100, warmup: int = 10,
                  backend: str | None = None) -> dict:
    """Batch-1 requests per second and latency, in one run on the same input:
    - in_process_1: one thread calling `EdgeModel.predict_tensors` (one single-threaded interpreter);
    - in_process_N: N threads, each with its own single-threaded interpreter (what the server does);
    - server: N client threads sending `:predict` JSON (TensorFlow Serving's v1 API) over loopback
      HTTP (keep-alive) to `edgekit serve --threads N` in a child process (which shares the CPU with
      the clients);
    - server_v2 / server_v2_json: the same server and clients through the Open Inference Protocol's
      infer route, tensors in the binary tensor data extension (what tritonclient sends by default) /
      as JSON.
    Each client makes `runs` timed requests after `warmup` untimed ones; every answer is checked
    once against the runtime's in-process output first."""
    import http.client

    from edgekit import runtime
    from edgekit.runtime.serve.pool import default_workers

    clients = clients or default_workers()
    name = Path(bundle).resolve().name
    models = [runtime.load(bundle, backend=backend, threads=1) for _ in range(clients)]
    try:
        x = models[0].example_tensors(1)
        expected = models[0].predict_tensors(x).tolist()
        by_name = x if isinstance(x, dict) else {models[0].input_names[0]: x}
        expected_v2 = models[0].predict_outputs(by_name)
        log(f"  serve: in-process, 1 thread and {clients} threads ...")
        one = _public(_load(1, runs * clients, warmup, lambda i: lambda: models[0].predict_tensors(x)))
        many = _public(_load(clients, runs, warmup, lambda i: lambda: models[i].predict_tensors(x)))
    finally:
        for m in models:
            m.close()
    body = json.dumps({"inputs": x.tolist() if isinstance(x, np.ndarray)
                       else {k: v.tolist() for k, v in x.items()}}).encode()
    requests = {"server": (f"/v1/models/{quote(name)}:predict", body, {"Content-Type": "application/json"})}
    v2 = _v2_bodies(by_name)
    requests["server_v2"] = (f"/v2/models/{quote(name)}/infer", *v2["binary"])
    requests["server_v2_json"] = (f"/v2/models/{quote(name)}/infer", *v2["json"])
    log(f"  serve: {clients} clients over loopback HTTP (v1 JSON, v2 binary, v2 JSON) ...")
    proc, port = _start_server(bundle, clients, backend)
    connections = []
    served = {}
    try:
        def make_call(path, payload, headers):
            def make(i):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connections.append(conn)

                def call():
                    conn.request("POST", path, body=payload, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"server answered {resp.status}: {data[:200]!r}")
                    return data, resp.getheader("Inference-Header-Content-Length")
                return call
            return make

        for key, (path, payload, headers) in requests.items():
            data, header_length = make_call(path, payload, headers)(-1)()
            same = (json.loads(data)["predictions"] == expected if key == "server" else
                    all(np.array_equal(a, expected_v2[n]) for n, a in _v2_outputs(data, header_length).items()))
            if not same:
                raise RuntimeError(f"the server's answer ({key}) differs from the in-process runtime's on the "
                                   "same input")
        # The protocols take turns, in rounds (order rotating), so that a change in machine load hits
        # them alike; each round's clients warm up first.
        rounds = max(1, min(SERVE_ROUNDS, runs))
        parts: dict[str, list] = {key: [] for key in requests}
        keys = list(requests)
        for r in range(rounds):
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                path, payload, headers = requests[key]
                share = runs // rounds + (1 if r < runs % rounds else 0)
                parts[key].append(_load(clients, share, warmup, make_call(path, payload, headers)))
        served = {key: _merge(p) for key, p in parts.items()}
    finally:
        for conn in connections:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    def ratio(a: dict, b: dict) -> float:
        return round(a["requests_per_s"] / max(b["requests_per_s"], 1e-9), 3)

    return {"clients": clients, "cpu_cores": os.cpu_count(), "in_process_1": one, "in_process_N": many, **served,
            "server_over_in_process_N": ratio(served["server"], many),
            "server_v2_over_in_process_N": ratio(served["server_v2"], many),
            "server_v2_over_server": ratio(served["server_v2"], served["server"]),
            "server_v2_json_over_server": ratio(served["server_v2_json"], served["server"])}


def format_serve(s: dict) -> str:
    def row(label, r):
        lat = r["latency_ms"]
        return (f"  {label:<34} {r['requests_per_s']:9.1f} req/s   p50 {lat['p50']:8.3f}  p99 {lat['p99']:8.3f} ms"
                f"  ({r['requests']} requests)")

    n = s["clients"]
    return "\n".join([f"  serve ({n} clients, {s['cpu_cores']} CPU cores, batch 1):",
                      row("in-process, 1 thread", s["in_process_1"]),
                      row(f"in-process, {n} threads x 1 interpreter", s["in_process_N"]),
                      row(f"server over loopback, {n} clients", s["server"]) + "  v1 :predict JSON",
                      row("  same, Open Inference Protocol", s["server_v2"]) + "  v2 infer, binary tensors",
                      row("  same, Open Inference Protocol", s["server_v2_json"]) + "  v2 infer, JSON tensors",
                      f"  server / in-process {n} threads = {s['server_over_in_process_N']:.2f}x requests per second"
                      f" (v1); v2 binary / v1 = {s['server_v2_over_server']:.2f}x, v2 JSON / v1 = "
                      f"{s['server_v2_json_over_server']:.2f}x"])


def run(args) -> int:
    result = measure(args.bundle, runs=args.runs, warmup=args.warmup, threads=args.threads,
                     backend=None if args.backend in (None, "auto") else args.backend,
                     compare_keras=args.compare_keras, allow_unsafe=getattr(args, "allow_unsafe", False),
                     baseline=getattr(args, "baseline", None))
    if getattr(args, "serve", None) is not None:
        result["serve"] = measure_serve(args.bundle, clients=args.serve or None, runs=args.runs, warmup=args.warmup,
                                        backend=None if args.backend in (None, "auto") else args.backend)
    if args.json_path:
        from edgekit.core import atomic_write_text

        atomic_write_text(args.json_path, json.dumps(result, indent=2) + "\n")
        log(f"bench: wrote {args.json_path}")
    log(format_summary(result))
    if "serve" in result:
        log(format_serve(result["serve"]))
    return 0
