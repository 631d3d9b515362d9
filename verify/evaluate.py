"""Run bundles on the same inputs as the reference and score them: parity metrics, task accuracy,
size and latency. numpy + runtime only (the Keras side lives in verify/reference.py), so comparing
against a golden file never imports TensorFlow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.core import UserError, first_line
from edgekit.runtime import samples
from edgekit.runtime.bundle import MANIFEST
from edgekit.runtime.bundle import read_manifest as bundle_manifest
from edgekit.runtime.compare import compare, confidence_margin
from edgekit.runtime.errors import EdgekitError, ModelFileError
from edgekit.runtime.gates import CONFIDENCE_MARGIN_FLOOR, Gate, check, parity_metrics
from edgekit.runtime.kinds import kind_of
from edgekit.runtime.samples import Samples, batch_size, take


class EvalData(Samples):
    """Model inputs with their labels (runtime/samples.py): `y` per sample (per frame for speech),
    `utterance_y` for speech."""

    def __init__(self, x, y=None, utterance_y=None, source: str = "", labels: dict | None = None) -> None:
        found = dict(labels or {})
        for key, value in (("y", y), ("utterance_y", utterance_y)):
            if value is not None:
                found[key] = value
        super().__init__(x, found, source)

    @classmethod
    def of(cls, found: Samples) -> EvalData:
        return cls(found.x, source=found.source, labels=found.labels)

    def head(self, n: int | None) -> EvalData:
        return EvalData.of(super().head(n))


@dataclass
class Task:
    """What accuracy means for a model: its kind, class names, and preprocessing (speech: the utterance rule)."""
    name: str
    labels: list[str]
    preprocessing: dict = field(default_factory=dict)

    @property
    def per_frame(self) -> bool:
        return self._kind_says("per_frame")

    @property
    def photos(self) -> bool:
        return self._kind_says("photos")

    def _kind_says(self, attribute: str) -> bool:
        try:
            return bool(getattr(kind_of(self.name), attribute))
        except EdgekitError:
            return False


# Inputs ------------------------------------------------------------------------------------------

def load_heldout(model_dir: str | Path) -> EvalData:
    path = Path(model_dir) / "heldout.npz"
    if not path.is_file():
        raise UserError(f"no held-out split {path}: pass --data, or retrain with `edgekit train`")
    return EvalData.of(samples.read(path, what="held-out split"))


# Bundles -----------------------------------------------------------------------------------------

def find_bundles(path: str | Path) -> list[Path]:
    """ARTIFACTS_DIR's bundle folders (subfolders with manifest.json), or [path] for one bundle."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"artifacts folder not found: {path} (create bundles with `edgekit export`)")
    if not path.is_dir():
        raise UserError(f"{path} is not a folder: pass a bundle folder or a folder of bundles")
    if (path / MANIFEST).is_file():
        return [path]
    bundles = sorted(p for p in path.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())
    if not bundles:
        raise UserError(f"no bundles in {path}: expected subfolders with {MANIFEST} "
                        "(create them with `edgekit export`)")
    return bundles


def read_manifest(bundle: Path) -> dict:
    """The manifest (the runtime's reader), or {} when it is unreadable: verify then reports the bundle
    as a failed entry (with the reader's own reason, `manifest_problem`) instead of stopping."""
    try:
        return bundle_manifest(bundle)
    except ModelFileError:
        return {}


def manifest_problem(bundle: Path) -> str | None:
    """Why the runtime's manifest reader refuses a bundle's manifest (None: it reads)."""
    try:
        bundle_manifest(bundle)
    except ModelFileError as exc:
        return str(exc)
    return None


def default_loader() -> Callable:
    from edgekit import runtime

    return runtime.load


def run_bundle(bundle: Path, x: np.ndarray, load: Callable | None = None) -> tuple[np.ndarray, float]:
    """Probabilities for every row of x, one sample per call as on a device, and the median
    latency per sample in milliseconds (after one warm-up call)."""
    load = load or default_loader()
    outputs, seconds = [], []
    with load(bundle) as model:
        model.predict_tensors(take(x, 0, 1))
        for i in range(batch_size(x)):
            start = time.perf_counter()
            out = model.predict_tensors(take(x, i, i + 1))
            seconds.append(time.perf_counter() - start)
            outputs.append(np.asarray(out, dtype=np.float32))
    return np.concatenate(outputs), 1000.0 * float(np.median(seconds))


# Scores ------------------------------------------------------------------------------------------

def utterance_probabilities(frame_probs: np.ndarray, task: Task) -> np.ndarray:
    """[N, T, C] per-frame probabilities -> [N, C] per utterance, by the runtime's rule (the one a
    device applies), so Keras and every bundle are judged the same way."""
    from edgekit.runtime.preprocess import utterance_probs

    return utterance_probs(frame_probs, task.preprocessing)


def accuracy(probs: np.ndarray, data: EvalData, task: Task) -> float | None:
    """Task accuracy: per sample, or per utterance for speech (per frame when only frame labels exist)."""
    if task.per_frame and data.utterance_y is not None:
        predicted = np.argmax(utterance_probabilities(probs, task), axis=-1)
        return float(np.mean(predicted == data.utterance_y))
    if data.y is None:
        return None
    return float(np.mean(np.argmax(probs, axis=-1) == np.asarray(data.y)))


def reference_summary(reference: np.ndarray, data: EvalData, task: Task) -> dict:
    """Accuracy and confidence of the reference outputs: parity on near-uniform outputs proves little."""
    margin = confidence_margin(reference)
    summary = {"accuracy": accuracy(reference, data, task), "confidence_margin": margin,
               "confident": bool(margin >= CONFIDENCE_MARGIN_FLOOR),
               "confidence_floor": CONFIDENCE_MARGIN_FLOOR}
    if task.per_frame and reference.ndim == 3:
        summary["frame_accuracy"] = None if data.y is None else float(
            np.mean(np.argmax(reference, axis=-1) == np.asarray(data.y)))
    return summary


def score(reference: np.ndarray, output: np.ndarray, data: EvalData, task: Task,
          reference_accuracy: float | None) -> dict:
    """Parity and accuracy metrics of one bundle's outputs vs the reference (JSON-ready)."""
    parity = compare(reference, output).to_dict()
    extra = parity_metrics(reference, output)
    metrics = {
        "accuracy": accuracy(output, data, task),
        "agreement": parity["agreement"],
        "max_abs_error": parity["max_abs_error"],
        "mean_abs_error": parity["mean_abs_error"],
        "p99_abs_error": extra["p99_abs_error"],
        "cosine": parity["cosine"],
        "snr_db": parity["snr_db"],           # None when identical (infinite SNR)
        "psnr_db": extra["psnr_db"],         # None when identical
        "topk_agreement": extra["topk_agreement"],
        "top_k": extra["top_k"],
    }
    metrics["accuracy_delta"] = (
        None if metrics["accuracy"] is None or reference_accuracy is None
        else 100.0 * (metrics["accuracy"] - reference_accuracy))
    if task.per_frame and np.ndim(output) == 3:
        metrics["utterance_agreement"] = float(np.mean(
            np.argmax(utterance_probabilities(reference, task), axis=-1)
            == np.argmax(utterance_probabilities(output, task), axis=-1)))
        if data.y is not None:
            metrics["frame_accuracy"] = float(np.mean(np.argmax(output, axis=-1) == np.asarray(data.y)))
    return metrics


def entry_for(bundle: Path, manifest: dict) -> dict:
    """The identifying part of a result entry (filled in before anything can fail)."""
    model_file = bundle / str(manifest.get("model_file", ""))
    size = manifest.get("size_bytes")
    if size is None and model_file.is_file():
        size = model_file.stat().st_size
    return {"bundle": bundle.name, "path": str(bundle), "format": manifest.get("format"),
            "variant": manifest.get("variant"), "recipe": manifest.get("recipe"), "size_bytes": size}


def evaluate_bundle(bundle: Path, data: EvalData, reference: np.ndarray, task: Task,
                    reference_accuracy: float | None, gate: Gate | None,
                    load: Callable | None = None) -> dict:
    """One result entry. A bundle that cannot be read or run is a failed entry with the reason."""
    manifest = read_manifest(bundle)
    entry = entry_for(bundle, manifest)
    start = time.perf_counter()
    try:
        if not manifest:
            raise ValueError(manifest_problem(bundle) or f"{bundle / MANIFEST} cannot be read")
        if manifest.get("task") not in (None, task.name):
            raise ValueError(f"bundle is for task {manifest.get('task')!r}, the reference is {task.name!r}")
        output, latency_ms = run_bundle(bundle, data.x, load)
        if output.shape != reference.shape:
            raise ValueError(f"outputs have shape {output.shape}, the reference {reference.shape}")
        if not np.all(np.isfinite(output)):
            raise ValueError("outputs contain NaN or inf")
    except Exception as exc:  # noqa: BLE001 - any failure of one bundle is that bundle's result
        message = first_line(exc)
        entry.update(passed=False, reasons=[f"cannot run: {message}"], error=message,
                     seconds=time.perf_counter() - start)
        return entry
    entry.update(score(reference, output, data, task, reference_accuracy))
    entry["latency_ms"] = latency_ms
    if gate is None:
        entry.update(passed=False, reasons=[f"no gate for variant {entry['variant']!r}"])
    else:
        entry["gate"] = gate.to_dict()
        reasons = check(gate, reference, output, entry["accuracy_delta"], metrics=entry)
        entry.update(passed=not reasons, reasons=reasons)
    entry["seconds"] = time.perf_counter() - start
    return entry
