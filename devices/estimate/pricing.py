"""Pricing the work of a graph on a device: per op, time = MACs / (class GMAC/s x dtype speed-up) +
bytes / (GB/s) + per-op overhead, each rate per core and scaled to N threads by Amdahl's law. The
numbers live in the device profile's `cost_model` (runtime/profiles/*.json), each with its source.
The work itself is counted by the format's graph reader (runtime/formats: `count_work`).
Every result is labelled an estimate ("estimate": true, and the word in every printed line).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from edgekit.core import UserError, format_bytes
from edgekit.runtime import formats, profiles
from edgekit.runtime.bundle import read_manifest
from edgekit.runtime.errors import ModelFileError
from edgekit.runtime.formats.graph import COMPUTE_CLASSES, GraphWork, OpWork

# Bundles ---------------------------------------------------------------------------------------------

def model_file(bundle: str | Path) -> Path:
    """The model file of a bundle folder (manifest.json's model_file), or the path itself for a file."""
    bundle = Path(bundle)
    if not bundle.exists():
        raise UserError(f"bundle not found: {bundle}")
    if bundle.is_file():
        if formats.by_suffix(bundle) is None:
            raise UserError(f"{bundle}: expected a bundle folder or a model file ({formats.suffixes()})")
        return bundle
    name = read_manifest(bundle)["model_file"]  # the runtime's one reader: one line when unreadable
    path = bundle / name
    if not path.is_file():
        raise UserError(f"{bundle}: model file {name!r} named by manifest.json is missing")
    return path


def count_work(bundle: str | Path) -> GraphWork:
    """The work of a bundle's (or a model file's) graph, counted by its format's reader."""
    path = model_file(bundle)
    try:
        return formats.by_suffix(path).impl().count_work(path.read_bytes(), path)
    except ModelFileError as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


# The cost model --------------------------------------------------------------------------------------

def thread_speedup(threads: int, parallel_fraction: float) -> float:
    """Amdahl's law: the speed-up of N threads when `parallel_fraction` of the work splits evenly."""
    return 1.0 / ((1.0 - parallel_fraction) + parallel_fraction / max(threads, 1))


def op_ms(op: OpWork, model: dict, threads: int, fmt: str) -> float:
    """Estimated milliseconds of one op under a profile's cost model."""
    rates = model["gmacs_per_core"]
    parallel = model["parallel_fraction"]
    speedup = thread_speedup(threads, parallel.get(op.op_class, parallel["default"]))
    dtype_speed = model["dtype_speedup"].get(op.op_class, {}).get(op.dtype) \
        or model["dtype_speedup"]["default"][op.dtype]
    seconds = op.bytes / (model["gbytes_per_s_per_core"] * 1e9 * speedup)
    if op.macs and rates.get(op.op_class):   # a class without a rate is priced by its bytes alone
        seconds += op.macs / (rates[op.op_class] * 1e9 * dtype_speed * speedup)
    seconds += model["op_overhead_us"] * 1e-6
    return 1000.0 * seconds * profiles.format_factor(model, fmt)


def op_uncertainty(op: OpWork, model: dict, fmt: str) -> float:
    """A multiplicative band (>= 1) for one op: calibrated fp32 classes get the held-out error, the
    rest the wider factors the profile gives (with their reasons)."""
    band = model["uncertainty"]
    factor = band["calibrated"]
    if op.dtype not in ("fp32", "fp16"):
        factor = max(factor, band["dtype"])
    if op.op_class == "lstm":
        factor = max(factor, band["lstm"])
    if not formats.get(fmt).cost_calibrated:   # the rates were fitted on another format's figures
        factor = max(factor, band["format"])
    return factor


def estimate(profile: dict | str, bundle: str | Path | None = None, *, threads: int | None = None,
             work: GraphWork | None = None) -> dict:
    """The estimate for one bundle on one device (JSON-ready; `estimate` is always True)."""
    profile = profiles.load(profile)
    model = profile.get("cost_model")
    if not model:
        raise UserError(f"device {profile['name']!r} has no cost_model in its profile: no estimate possible")
    threads = threads or profile["default_threads"]
    if threads > profile["cores"]:
        raise UserError(f"--threads {threads} exceeds the {profile['cores']} cores of {profile['name']}")
    work = work or count_work(bundle)
    fmt = work.format
    unsupported = profiles.format_unsupported_by(profile, fmt)
    point = low = high = 0.0
    per_class: dict[str, dict] = defaultdict(lambda: {"ops": 0, "macs": 0, "bytes": 0, "ms": 0.0})
    for op in work.ops:
        ms = op_ms(op, model, threads, fmt)
        band = op_uncertainty(op, model, fmt)
        point, low, high = point + ms, low + ms / band, high + ms * band
        row = per_class[op.op_class]
        row["ops"] += 1
        row["macs"] += op.macs
        row["bytes"] += op.bytes
        row["ms"] += ms
        row.setdefault("dtypes", {}).setdefault(op.dtype, 0)
        row["dtypes"][op.dtype] += 1
    memory_total = work.arena_bytes + work.weights_bytes
    budget = profile["memory_mb"] << 20
    dtypes = sorted({op.dtype for op in work.ops if op.op_class in COMPUTE_CLASSES}) or ["fp32"]
    basis = (f"cost model of {profile['name']} ({model['basis']}); {len(work.ops)} ops, "
             f"{work.macs / 1e6:.2f} M MACs, compute in {', '.join(dtypes)}; {threads} threads")
    warnings = []
    if work.uncounted:
        warnings.append(f"control flow ({', '.join(sorted(set(work.uncounted)))}) not counted: "
                        "the estimate misses the work inside its loops")
    if unsupported:
        warnings.append(unsupported)
    if any(op.op_class == "lstm" for op in work.ops):
        warnings.append("LSTM rates are not calibrated on published figures (none exist for these "
                        "boards): wide band")
    return {
        "estimate": True,
        "device": profile["name"],
        "bundle": str(bundle) if bundle is not None else work.path,
        "format": fmt,
        "threads": threads,
        "point_ms": round(point, 4), "low_ms": round(low, 4), "high_ms": round(high, 4),
        "basis": basis,
        "calibration": model.get("calibration", {}),
        "work": {"ops": len(work.ops), "macs": work.macs,
                 "by_class": {k: {**v, "ms": round(v["ms"], 4)} for k, v in sorted(per_class.items())}},
        "memory": {"estimate": True, "arena_bytes": work.arena_bytes, "weights_bytes": work.weights_bytes,
                   "total_bytes": memory_total, "budget_bytes": budget, "fits": memory_total <= budget,
                   "basis": "arena = peak of live activation tensors in op order (a lower bound: the "
                            "runtime adds scratch buffers); weights as held at run time"},
        "file_size_bytes": work.file_size_bytes,
        "runnable": unsupported is None,
        "warnings": warnings,
    }


def text_lines(result: dict) -> list[str]:
    """The printed form: every line says 'estimate'."""
    name = Path(result["bundle"]).name
    mem = result["memory"]
    lines = [
        f"estimate: {name} on {result['device']} ({result['threads']} threads): {result['point_ms']:.3g} ms "
        f"(range {result['low_ms']:.3g}-{result['high_ms']:.3g} ms)",
        f"estimate basis: {result['basis']}",
        f"estimate memory: {format_bytes(mem['total_bytes'])} (arena {format_bytes(mem['arena_bytes'])} + weights "
        f"{format_bytes(mem['weights_bytes'])}; budget {format_bytes(mem['budget_bytes'])}: "
        f"{'fits' if mem['fits'] else 'DOES NOT FIT'}); file {format_bytes(result['file_size_bytes'])}",
    ]
    for op_class, row in result["work"]["by_class"].items():
        dtypes = ",".join(f"{k}x{v}" for k, v in sorted(row["dtypes"].items()))
        lines.append(f"estimate by class: {op_class:11} {row['ops']:4d} ops {row['macs'] / 1e6:9.2f} M MACs "
                     f"{format_bytes(row['bytes']):>9} moved {row['ms']:8.3f} ms ({dtypes})")
    lines += [f"estimate warning: {w}" for w in result["warnings"]]
    return lines


def run(args) -> int:
    """`edgekit devices estimate NAME BUNDLE [--threads N] [--json]`."""
    result = estimate(args.name, args.bundle, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(text_lines(result)))
    return 0


