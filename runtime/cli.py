"""Device-side commands, usable where only the `runtime` extra is installed (a Raspberry Pi):

    python -m edgekit.runtime predict BUNDLE INPUT... [--json] [--backend B] [--threads N] [--device D] [--top-k K]
    python -m edgekit.runtime golden  BUNDLE GOLDEN.npz [--json] [--atol X] [--rtol R] [--min-agreement Y]
    python -m edgekit.runtime bench   BUNDLE [--runs N] [--warmup N] [--threads N] [--json]
    python -m edgekit.runtime serve   BUNDLE... [--host H] [--port P] [--threads N] [--token-file FILE]
    python -m edgekit.runtime listen  BUNDLE FILE.wav|- [--rate HZ] [--json]   (words in a long recording or stream)

Backends' own log lines (the TFLite "Created ... XNNPACK delegate" banner) are hidden unless --verbose.

`edgekit predict` calls `predict_command(args)` with the same arguments. Errors are one line and a
non-zero exit: 2 for an EdgekitError, 1 when a golden comparison fails its tolerance.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings

import numpy as np

from edgekit.runtime.commandline import BACKEND_CHOICES, ArgumentParser, load_bundle, out, positive_int, run_command
from edgekit.runtime.errors import InvalidInputError

# ----------------------------------------------------------------------------------------- predict


def read_inputs(model, inputs: list[str]) -> tuple[list | np.ndarray | dict, list[str]]:
    """Command-line inputs -> (what `EdgeModel.predict` takes, one display name per sample), as the
    bundle's model kind reads them (runtime/kinds.py): texts as they are; image and WAV paths (the
    preprocessor reads them); .npy/.npz tensor files (each one sample, or a batch) for a bundle
    without preprocessing."""
    from edgekit.runtime.kinds import TENSOR

    kind = model.kind if model.bundle.preprocessing is not None else TENSOR
    return kind.read_inputs(model, inputs)


def _tensor_rows(names: list[str], outputs: dict[str, np.ndarray]) -> list[dict]:
    """Outputs by name (batch first) -> one JSON-ready row per input sample."""
    return [{"input": name, "outputs": {k: np.asarray(v[i]).tolist() for k, v in outputs.items()}}
            for i, name in enumerate(names)]


def predict_command(args) -> int:
    with load_bundle(args) as model:
        raw, names = read_inputs(model, list(args.inputs))
        with warnings.catch_warnings(record=True) as notes:  # e.g. a recording longer than the clip
            warnings.simplefilter("always", UserWarning)
            predictions = model.predict(raw)
        for note in notes:
            print(f"note: {note.message}", file=sys.stderr)
        top_k = getattr(args, "top_k", 3) or 3
        if isinstance(predictions, dict):  # a tensor model: its outputs by name
            rows = _tensor_rows(names, predictions)
            if getattr(args, "json", False):
                out(json.dumps({"bundle": str(args.bundle), "backend": model.backend, "predictions": rows},
                                indent=2))
                return 0
            for row in rows:
                shown = row["input"] if len(row["input"]) <= 60 else row["input"][:57] + "..."
                out(f"{shown}: " + "  ".join(f"{k} {np.array2string(np.asarray(v), precision=4, threshold=12)}"
                                             for k, v in row["outputs"].items()))
            return 0
        if getattr(args, "json", False):
            rows = [{"input": name, **p.to_dict(top_k)} for name, p in zip(names, predictions)]
            out(json.dumps({"bundle": str(args.bundle), "backend": model.backend, "predictions": rows}, indent=2))
            return 0
        for name, p in zip(names, predictions):
            shown = name if len(name) <= 60 else name[:57] + "..."
            tops = "  ".join(f"{label} {prob:.3f}" for label, prob in p.top(top_k))
            out(f"{shown}: {p.label} ({p.score:.3f})   top-{top_k}: {tops}")
            if p.frame_labels is not None:
                out(f"  frames: {' '.join(p.frame_labels)}")
    return 0


# ------------------------------------------------------------------------------------------ golden


def golden_gate(meta: dict, variant: str | None, atol=None, rtol=None, min_agreement=None, recipe=None):
    """Flags win; then the golden meta's `tolerance` (keyed by variant, or flat); then the one
    tolerance table (edgekit/runtime/gates.py). `--atol` alone bounds every element's |diff| (rtol
    0); with `--rtol` an element fails only when it exceeds both (Polygraphy's rule)."""
    from edgekit.runtime import gates

    gate = gates.from_meta(meta, variant, recipe=recipe)
    if gate is None:
        raise InvalidInputError(f"no gate for variant {variant!r} (recipe {recipe!r}); pass --atol and "
                                "--min-agreement, or re-export the bundle")
    flags = {}
    if atol is not None:
        flags.update(atol=float(atol), rtol=0.0 if rtol is None else float(rtol))
    elif rtol is not None:
        flags["rtol"] = float(rtol)
    if min_agreement is not None:
        flags["min_agreement"] = float(min_agreement)
    return gate.with_limits(**flags) if flags else gate


def golden_accuracy_delta(golden, output: np.ndarray) -> float | None:
    """Output minus reference accuracy in percentage points, when the golden file has labels:
    per sample, or per utterance for per-frame (speech) outputs by the runtime's own rule."""
    from edgekit.runtime.preprocess import utterance_probs

    reference = np.asarray(golden.reference)
    if reference.ndim == 3 and golden.utterance_y is not None:
        rule = golden.meta.get("preprocessing") or {}
        score = lambda p: np.mean(np.argmax(utterance_probs(p, rule), -1) == golden.utterance_y)  # noqa: E731
    elif reference.ndim == 2 and golden.y is not None and len(golden.y) == len(reference):
        score = lambda p: np.mean(np.argmax(p, -1) == golden.y)  # noqa: E731
    else:
        return None
    return float(100.0 * (score(output) - score(reference)))


def machine() -> dict:
    return {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "numpy": np.__version__}


def golden_command(args) -> int:
    from edgekit.runtime import gates
    from edgekit.runtime.compare import compare
    from edgekit.runtime.golden import read

    golden = read(args.golden)
    with load_bundle(args) as model:
        output = model.predict_tensors(golden.x)
        try:
            result = compare(golden.reference, output)
        except ValueError as exc:
            raise InvalidInputError(f"golden reference does not match the bundle's output: {exc}") from None
        gate = golden_gate(golden.meta, model.bundle.variant, args.atol, args.rtol, args.min_agreement,
                           (model.bundle.manifest or {}).get("recipe"))
        metrics = {**result.to_dict(), **gates.parity_metrics(golden.reference, output)}
        delta = golden_accuracy_delta(golden, output)
        reasons = gates.check(gate, golden.reference, output, delta, metrics=metrics)
        passed = not reasons
        tolerance = {k: v for k, v in gate.to_dict().items() if v not in (None, [])}
        report = {"bundle": str(args.bundle), **metrics, "accuracy_delta": delta, "passed": passed,
                  "reasons": reasons, "tolerance": tolerance, "backend": model.backend, "machine": machine()}
    if args.json:
        out(json.dumps(report))
    else:
        psnr = "inf" if metrics["psnr_db"] is None else f"{metrics['psnr_db']:.1f}"
        out(f"{args.bundle}: {'PASS' if passed else 'FAIL'}  samples {result.samples}  max_abs_error "
             f"{result.max_abs_error:.3g}  PSNR {psnr} dB  agreement {result.agreement:.3f}  "
             f"cosine {result.cosine:.6f}  [{model.backend}]" + "".join(f"\n  {r}" for r in reasons))
    return 0 if passed else 1


# ------------------------------------------------------------------------------------------- bench


def bench_command(args) -> int:
    from edgekit.runtime.timing import peak_rss_mb, summary, time_calls

    with load_bundle(args) as model:
        feed = model.prepare(model.example_tensors(1))
        run = model.runner.run_checked
        ms = time_calls(lambda: run(feed), args.runs, args.warmup)
        report = {"bundle": str(args.bundle), "backend": model.backend, "variant": model.bundle.variant,
                  "threads": model.settings.threads, "latency_ms": summary(ms), "peak_rss_mb": peak_rss_mb(),
                  "machine": machine()}
    if args.json:
        out(json.dumps(report))
    else:
        lat = report["latency_ms"]
        out(f"{args.bundle} [{report['backend']}]: p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  "
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
        p.add_argument("--verbose", action="store_true", help="show the inference backend's own log lines")

    p = sub.add_parser("predict", help="labels with probabilities for texts, images or WAV files")
    common(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--top-k", type=positive_int, default=3)
    p = sub.add_parser("golden", help="compare the bundle with a golden npz from `edgekit verify --save-golden`")
    common(p)
    p.add_argument("golden", metavar="GOLDEN.npz")
    p.add_argument("--atol", type=float, help="elementwise absolute limit; alone, every |diff| <= ATOL "
                   "(default: the golden meta's tolerance, else edgekit's table)")
    p.add_argument("--rtol", type=float, help="elementwise relative limit: with --atol an element fails "
                   "only when |diff| > ATOL and |diff| > RTOL*|ref| (Polygraphy's rule)")
    p.add_argument("--min-agreement", type=float, help="min top-1 agreement (default: golden meta)")
    p = sub.add_parser("bench", help="latency percentiles and peak RSS of the bare model call")
    common(p)
    p.add_argument("--runs", type=positive_int, default=100)
    p.add_argument("--warmup", type=positive_int, default=10)
    from edgekit.runtime.serve import add_serve_arguments  # flags only; the server loads on use

    add_serve_arguments(sub.add_parser("serve", help="HTTP inference server for bundles (TensorFlow Serving "
                                                     "REST API); see docs/serving.md"))
    from edgekit.runtime.listen import add_listen_arguments

    add_listen_arguments(sub.add_parser("listen", help="words with start/end times in a long recording or "
                                                       "a live PCM stream (speech bundles)"))
    return parser


def listen_command(args) -> int:
    from edgekit.runtime.listen import listen_command as run_listen

    return run_listen(args)


def serve_command(args) -> int:
    from edgekit.runtime.serve import serve_command as run_server

    return run_server(args)


COMMANDS = {"predict": predict_command, "golden": golden_command, "bench": bench_command, "serve": serve_command,
            "listen": listen_command}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"edgekit.runtime {args.command}", lambda: COMMANDS[args.command](args), debug=args.debug)
