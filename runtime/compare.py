"""Numpy-only comparison of model outputs: the same code compares Keras vs TFLite on the host and a
host golden file vs a Raspberry Pi. Inputs are probability arrays of equal shape, classes last."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Top-k match (Qualcomm AI Hub reports top-1 and top-5): reported, not gated.
TOP_K = 5


@dataclass
class Comparison:
    samples: int
    max_abs_error: float
    mean_abs_error: float
    p99_abs_error: float
    cosine: float          # mean cosine similarity of the per-sample probability vectors
    snr_db: float          # 10*log10(|ref|^2 / |ref - out|^2); inf when identical
    psnr_db: float         # 20*log10(max|ref| / RMSE) (Qualcomm AI Hub); inf when identical
    agreement: float       # fraction of rows (samples, or frames for speech) with the same top-1 class
    top_k: int
    topk_agreement: float

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in asdict(self).items()}


def compare(reference: np.ndarray, output: np.ndarray) -> Comparison:
    """Every metric the gates and the reports use, of output vs reference (classes last)."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs output {out.shape}")
    if ref.size == 0:
        raise ValueError("nothing to compare: empty outputs")
    diff = np.abs(ref - out)
    rows_ref = ref.reshape(-1, ref.shape[-1])
    rows_out = out.reshape(-1, out.shape[-1])
    norms = np.linalg.norm(rows_ref, axis=1) * np.linalg.norm(rows_out, axis=1)
    cos = np.sum(rows_ref * rows_out, axis=1) / np.maximum(norms, 1e-30)
    noise = float(np.sum(diff ** 2))
    signal = float(np.sum(ref ** 2))
    mse = float(np.mean(diff ** 2))
    peak = float(np.max(np.abs(ref)))
    k = min(TOP_K, ref.shape[-1])
    top_k = np.argsort(-rows_out, axis=1)[:, :k]
    truth = np.argmax(rows_ref, axis=1)
    return Comparison(
        samples=int(ref.shape[0]),
        max_abs_error=float(diff.max()),
        mean_abs_error=float(diff.mean()),
        p99_abs_error=float(np.quantile(diff, 0.99)),
        cosine=float(cos.mean()),
        snr_db=float("inf") if noise == 0 else float(10.0 * np.log10(max(signal, 1e-30) / noise)),
        psnr_db=float("inf") if mse == 0 else float(20 * np.log10(max(peak, 1e-30) / np.sqrt(mse))),
        agreement=float(np.mean(truth == np.argmax(rows_out, axis=1))),
        top_k=k,
        topk_agreement=float(np.mean(np.any(top_k == truth[:, None], axis=1))),
    )


def confidence_margin(probs: np.ndarray) -> float:
    """Median gap between the top-1 and top-2 probabilities: near 0 for an untrained model, whose
    near-uniform outputs make any parity check meaningless."""
    rows = np.sort(np.asarray(probs, dtype=np.float64).reshape(-1, np.shape(probs)[-1]), axis=1)
    return float(np.median(rows[:, -1] - rows[:, -2]))
