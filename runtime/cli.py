"""Device-side commands, usable where only the `runtime` extra is installed (a Raspberry Pi):

    python -m edgekit.runtime predict BUNDLE INPUT... [--json] [--backend B] [--threads N] [--device D] [--top-k K]
    python -m edgekit.runtime golden  BUNDLE GOLDEN.npz [--json] [--atol X] [--min-agreement Y]
    python -m edgekit.runtime bench   BUNDLE [--runs N] [--warmup N] [--threads N] [--json]

`edgekit predict` calls `predict_command(args)` with the same arguments. Errors are one line and a
non-zero exit: 2 for an EdgekitError, 1 when a golden comparison fails its tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from edgekit.runtime.errors import EdgekitError, InvalidInputError, first_line

BACKEND_CHOICES = ("auto", "litert", "tflite_runtime", "tensorflow", "onnxruntime")
# Fallback tolerances when neither the golden file's meta nor a flag gives one. Reasons: fp32 differs
# from Keras only by kernel summation order (~1e-6 on probabilities); fp16 weights round at ~1e-3
# relative; integer variants move probabilities by a few quantization steps (1/256 each) and may flip
# the top-1 class of near-tie samples.
DEFAULT_TOLERANCE = {
    "fp32": {"max_abs_error": 1e-4, "min_agreement": 1.0},
    "fp16": {"max_abs_error": 1e-2, "min_agreement": 0.99},
    "dynamic": {"max_abs_error": 0.1, "min_agreement": 0.95},
    "int8": {"max_abs_error": 0.15, "min_agreement": 0.95},
    "int16x8": {"max_abs_error": 0.1, "min_agreement": 0.95},
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse without abbreviations, for every parser and subparser of both CLIs: flags are a
    contract, so `--calibration` must never be read as `--calibration-samples`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_command(prog: str, command, debug: bool = False) -> int:
    """Run `command() -> exit code` the way both CLIs end: an EdgekitError (a user mistake, a bad
    input or model file) is one line and exit 2; an unexpected error is one line and exit 3 (with
    --debug, the traceback); Ctrl-C is 130; a closed output pipe (`| head`) ends quietly."""
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except EdgekitError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {first_line(exc)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 3


def _load(args, **extra):
    from edgekit import runtime

    backend = getattr(args, "backend", None)
    return runtime.load(args.bundle, backend=None if backend in (None, "auto") else backend,
                        threads=getattr(args, "threads", None), device=getattr(args, "device", None), **extra)


def _out(text: str) -> None:
    print(text, flush=True)


# ----------------------------------------------------------------------------------------- predict


def read_inputs(model, inputs: list[str]) -> tuple[list | np.ndarray, list[str]]:
    """Command-line inputs -> (what `EdgeModel.predict` takes, one display name per sample): texts
    as they are; image and WAV paths (the preprocessor reads them); .npy tensor files (each one
    sample, or a batch) for a bundle without preprocessing."""
    task = model.bundle.task
    if model.bundle.preprocessing is None:
        arrays, names = [], []
        rank = len(model.runner.inputs[0].shape)
        for item in inputs:
            path = Path(item)
            if path.suffix.lower() != ".npy":
                raise InvalidInputError(f"{item}: this bundle has no preprocessing; give .npy tensor files")
            if not path.is_file():
                raise InvalidInputError(f"input file not found: {item}")
            try:
                arr = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InvalidInputError(f"cannot read {path} as a numpy array: {exc}") from None
            arr = arr if arr.ndim == rank else arr[None]
            arrays.append(arr)
            names += [item] if len(arr) == 1 else [f"{item}[{i}]" for i in range(len(arr))]
        try:
            return np.concatenate(arrays), names
        except ValueError as exc:
            raise InvalidInputError(f"input arrays do not stack into one batch: {exc}") from None
    if task in ("image", "speech"):
        for item in inputs:
            if not Path(item).is_file():
                raise InvalidInputError(f"{task} input not found: {item}")
    return list(inputs), list(inputs)


def predict_command(args) -> int:
    with _load(args) as model:
        raw, names = read_inputs(model, list(args.inputs))
        predictions = model.predict(raw)
        top_k = getattr(args, "top_k", 3) or 3
        if getattr(args, "json", False):
            rows = [{"input": name, **p.to_dict(top_k)} for name, p in zip(names, predictions)]
            _out(json.dumps({"bundle": str(args.bundle), "backend": model.backend, "predictions": rows}, indent=2))
            return 0
        for name, p in zip(names, predictions):
            shown = name if len(name) <= 60 else name[:57] + "..."
            tops = "  ".join(f"{label} {prob:.3f}" for label, prob in p.top(top_k))
            _out(f"{shown}: {p.label} ({p.score:.3f})   top-{top_k}: {tops}")
            if p.frame_labels is not None:
                _out(f"  frames: {' '.join(p.frame_labels)}")
    return 0


# ------------------------------------------------------------------------------------------ golden


def read_golden(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            x, reference = data["x"], data["reference"]
            meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    except KeyError as exc:
        raise InvalidInputError(f"golden file {path} lacks {exc}; expected x, reference, y, meta") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read golden file {path}: {exc}") from None
    return x, reference, meta if isinstance(meta, dict) else {}


def golden_tolerance(meta: dict, variant: str | None, atol=None, min_agreement=None) -> dict:
    """Flags win; then the golden meta's `tolerance` (flat, or keyed by variant); then DEFAULT_TOLERANCE."""
    tol = dict(DEFAULT_TOLERANCE.get(variant or "fp32", DEFAULT_TOLERANCE["int8"]))
    given = meta.get("tolerance")
    if isinstance(given, dict):
        if isinstance(given.get(variant), dict):
            given = given[variant]
        tol.update({k: float(v) for k, v in given.items()
                    if k in ("max_abs_error", "min_agreement") and isinstance(v, (int, float))})
    if atol is not None:
        tol["max_abs_error"] = float(atol)
    if min_agreement is not None:
        tol["min_agreement"] = float(min_agreement)
    return tol


def machine() -> dict:
    return {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "numpy": np.__version__}


def golden_command(args) -> int:
    from edgekit.runtime.compare import compare

    x, reference, meta = read_golden(args.golden)
    with _load(args) as model:
        output = model.predict_tensors(x)
        try:
            result = compare(reference, output)
        except ValueError as exc:
            raise InvalidInputError(f"golden reference does not match the bundle's output: {exc}") from None
        tol = golden_tolerance(meta, model.bundle.variant, args.atol, args.min_agreement)
        passed = result.max_abs_error <= tol["max_abs_error"] and result.agreement >= tol["min_agreement"]
        report = {"bundle": str(args.bundle), **result.to_dict(), "passed": bool(passed), "tolerance": tol,
                  "backend": model.backend, "machine": machine()}
    if args.json:
        _out(json.dumps(report))
    else:
        _out(f"{args.bundle}: {'PASS' if passed else 'FAIL'}  samples {result.samples}  max_abs_error "
             f"{result.max_abs_error:.3g} (<= {tol['max_abs_error']:g})  agreement {result.agreement:.3f} "
             f"(>= {tol['min_agreement']:g})  cosine {result.cosine:.6f}  [{model.backend}]")
    return 0 if passed else 1


# ------------------------------------------------------------------------------------------- bench


def bench_command(args) -> int:
    from edgekit.runtime.timing import peak_rss_mb, summary, time_calls

    with _load(args) as model:
        feed = model.prepare(model.example_tensors(1))
        run = model.runner.run_checked
        ms = time_calls(lambda: run(feed), args.runs, args.warmup)
        report = {"bundle": str(args.bundle), "backend": model.backend, "variant": model.bundle.variant,
                  "threads": model.settings.threads, "latency_ms": summary(ms), "peak_rss_mb": peak_rss_mb(),
                  "machine": machine()}
    if args.json:
        _out(json.dumps(report))
    else:
        lat = report["latency_ms"]
        _out(f"{args.bundle} [{report['backend']}]: p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  "
             f"p99 {lat['p99']:.3f} ms  ({args.runs} runs)  peak RSS {report['peak_rss_mb']} MB")
    return 0


# -------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m edgekit.runtime", description="edgekit device-side runtime")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p):
        p.add_argument("bundle", metavar="BUNDLE")
        p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
        p.add_argument("--threads", type=positive_int)
        p.add_argument("--device", help="device profile name or .json file supplying defaults")
        p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("predict", help="labels with probabilities for texts, images or WAV files")
    common(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--top-k", type=positive_int, default=3)
    p = sub.add_parser("golden", help="compare the bundle with a golden npz from `edgekit verify --save-golden`")
    common(p)
    p.add_argument("golden", metavar="GOLDEN.npz")
    p.add_argument("--atol", type=float, help="max absolute probability error (default: golden meta)")
    p.add_argument("--min-agreement", type=float, help="min top-1 agreement (default: golden meta)")
    p = sub.add_parser("bench", help="latency percentiles and peak RSS of the bare model call")
    common(p)
    p.add_argument("--runs", type=positive_int, default=100)
    p.add_argument("--warmup", type=positive_int, default=10)
    return parser


COMMANDS = {"predict": predict_command, "golden": golden_command, "bench": bench_command}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"edgekit.runtime {args.command}", lambda: COMMANDS[args.command](args), debug=args.debug)
