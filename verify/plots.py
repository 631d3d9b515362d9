"""The report's plots, as base64 PNG for the self-contained HTML page (matplotlib, Agg backend):
accuracy vs file size per bundle, latency per bundle, per-layer int8 error."""

from __future__ import annotations

import base64
import io

MAX_LAYER_ROWS = 12


def to_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_vs_size_png(result: dict) -> str | None:
    rows = [e for e in result["artifacts"] if e.get("accuracy") is not None and e.get("size_bytes")]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 3.6))
    # Points of near-equal size and accuracy sit on top of each other, so text beside them would
    # overlap: each bundle gets its own marker, named in a legend outside the axes.
    markers = "osD^vP*Xh<>p"
    for i, e in enumerate(rows):
        ax.scatter(e["size_bytes"] / 1024, 100 * e["accuracy"], marker=markers[i % len(markers)],
                   s=30 + 14 * (i % 4), facecolors="none", linewidths=1.4,   # hollow: stacked points stay visible
                   edgecolors="tab:green" if e["passed"] else "tab:red",
                   label=f"{e['bundle'].split('-', 1)[-1]} ({'pass' if e['passed'] else 'FAIL'})")
    ref = result["reference"].get("accuracy")
    if ref is not None:
        ax.axhline(100 * ref, color="gray", linestyle="--", linewidth=1, label="Keras")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    ax.set_xscale("log")
    ax.set_xlabel("file size (KiB, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{result['task']}: accuracy vs size (green pass, red fail)", fontsize=10)
    return to_png(fig)


def latency_png(result: dict) -> str | None:
    rows = [e for e in result["artifacts"] if e.get("latency_ms") is not None]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(rows) + 1.2))
    names = [e["bundle"] for e in rows]
    ax.barh(names, [e["latency_ms"] for e in rows],
            color=["tab:green" if e["passed"] else "tab:red" for e in rows])
    ax.invert_yaxis()
    ax.set_xlabel("median latency per sample (ms, this host)")
    ax.set_title(f"{result['task']}: latency per variant", fontsize=10)
    return to_png(fig)


def layer_error_png(entry: dict) -> str | None:
    """Bars per tensor, worst first: RMSE/scale (TFLite debugger) or SNR in dB (ONNX qdq_loss_debug)."""
    layers = entry.get("layers") or {}
    metric = layers.get("metric", "rmse_over_scale")
    rows = [r for r in layers.get("tensors") or [] if r.get(metric) is not None][:MAX_LAYER_ROWS]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(rows) + 1.2))
    labels = [f"{r['op']} {_short(r['tensor'])}".strip() for r in rows]
    ax.barh(labels, [r[metric] for r in rows],
            color=["tab:red" if r.get("suspicious") else "tab:blue" for r in rows])
    if metric == "rmse_over_scale":
        ax.axvline(layers.get("ideal_rmse_over_scale", 0.289), color="gray", linestyle="--",
                   linewidth=1, label="ideal rounding")
        ax.legend(fontsize=8)
        ax.set_xlabel("RMSE / scale (float vs int8, per tensor; higher is worse)")
    else:
        ax.set_xlabel("SNR vs float model (dB, per tensor; lower is worse)")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{entry['bundle']}: per-layer int8 error (worst first)", fontsize=10)
    return to_png(fig)


def _short(name: str, width: int = 40) -> str:
    name = name.split(";")[0]
    return name if len(name) <= width else "..." + name[-(width - 3):]


def img_tag(png: str | None, alt: str) -> str:
    """An <img> with the PNG inline (the page stays one self-contained file), or nothing."""
    import html

    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">' if png else ""
