"""JPEG decoder sensitivity of image bundles: the labels each bundle gives on held-out photos decoded by
the runtime's decoder (Pillow) and by a second decoder setting, so a user sees before shipping how many
labels a bundle changes when a phone or an app decodes the same files a few levels differently.

The second decoder is libjpeg-turbo with its fast integer IDCT (JDCT_IFAST, through simplejpeg's
`fastdct`), chroma upsampling unchanged (fancy, as Pillow). Why this one (measured on the 1000
cifar10_small test photos, 32x32 4:2:0 JPEGs, 2026-12):
- Pillow, OpenCV and simplejpeg with default settings are one decoder (libjpeg-turbo, ISLOW IDCT, fancy
  upsampling; Android 7+ decodes so too): 0 levels apart, so none of them measures anything;
- MediaPipe's own file decoder (stb_image) is up to 3 levels from Pillow (mean 0.09, 7% of values), but
  it lives only in MediaPipe's environment (the phone check uses it: devices/phone.py);
- the IFAST IDCT is up to 5 levels away (mean 0.99, 65% of values), the same kind and size of difference,
  on full-size and DCT-reduced decodes alike, and installs from a wheel on x86-64, aarch64, macOS and
  Windows; fast (replicated) chroma upsampling is up to 66 levels away on small photos, a coarser change
  than today's phone decoders make, and does nothing on reduced decodes.
On the briefly trained CIFAR model the IFAST figure is the larger of the two: fp32 changes 6.2% of
labels (stb: 3.0%), int8 9.2% (stb: 7.7%). It is a sensitivity figure, not a gate.

Photos: `--data FOLDER` (its test/ folder when it has one), else the test/ folder inside or beside the
folder the model was trained on (edgekit.json `data.source`); JPEG files only (PNG decodes exactly the
same everywhere). Without photo files the figure is skipped with the reason.

    add_decoder_sensitivity(result, entries, metadata, data, reference, preprocessing)  # verify.core's hook
    result["decoder_sensitivity"], entry["decoder_sensitivity"]             # JSON (see below)
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.core import UserError, first_line, log
from edgekit.devices.phone import heldout_folder, list_photos
from edgekit.runtime.preprocess.image import decode_reduction, read_image_file
from edgekit.verify.plots import img_tag, pyplot, to_png

MAX_PHOTOS = 200          # spread over the classes; 1 label = 0.5 percentage points
JPEG_SUFFIXES = (".jpg", ".jpeg")


def runtime_decoder() -> str:
    import PIL
    from PIL import features

    return (f"Pillow {PIL.__version__} (libjpeg-turbo {features.version('libjpeg_turbo') or '?'}: "
            "ISLOW IDCT, fancy upsampling)")


def other_decoder() -> str:
    import simplejpeg

    return f"simplejpeg {simplejpeg.__version__} (libjpeg-turbo: IFAST IDCT, fancy upsampling)"


def decode_other(path: str | Path) -> np.ndarray:
    """A JPEG file -> uint8 [H, W, 3] through the second decoder, with the runtime reader's geometry:
    the same DCT reduction of large photos (read_image_file) and the same EXIF orientation."""
    import simplejpeg
    from PIL import Image, ImageOps

    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as header:
        width, height = header.size
        exif = header.info.get("exif")
    factor = decode_reduction(width, height)
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, min_factor=factor,
                                    min_height=-(-height // factor), min_width=-(-width // factor))
    if not exif:
        return pixels
    image = Image.fromarray(pixels)
    image.info["exif"] = exif
    return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def photo_files(metadata: dict, data, labels: list[str]) -> tuple[list[Path], np.ndarray, Path]:
    """(JPEG paths, label indices or -1, folder), or UserError with the reason there are none."""
    if data is not None and not Path(data).is_dir():
        raise UserError(f"--data {data} is not a folder of photos")
    folder = heldout_folder(((metadata or {}).get("data") or {}).get("source"), data)
    paths, ys = list_photos(folder, labels, max(1, MAX_PHOTOS // max(1, len(labels))))
    jpegs = [(p, y) for p, y in zip(paths, ys) if p.suffix.lower() in JPEG_SUFFIXES]
    if not jpegs:
        raise UserError(f"{folder} has no JPEG photos (other formats decode the same everywhere)")
    return [p for p, _ in jpegs], np.asarray([y for _, y in jpegs]), folder


def skip(result: dict, reason: str) -> None:
    result["decoder_sensitivity"] = {"skipped": reason}
    log(f"verify: decoder sensitivity skipped: {reason}")


def add_decoder_sensitivity(result: dict, entries: list[dict], metadata: dict | None, data,
                            reference: Callable | None = None, preprocessing: dict | None = None,
                            load: Callable | None = None) -> None:
    """Fill result["decoder_sensitivity"] (photos, decoders, pixel difference, the reference's flips)
    and each runnable entry's ["decoder_sensitivity"] (labels changed by the second decoder).
    reference: model inputs -> reference outputs (Keras), with the model's `preprocessing`."""
    start = time.perf_counter()
    try:
        import simplejpeg  # noqa: F401 - the full extra pins it
    except ImportError:
        return skip(result, "needs simplejpeg (pip install 'keras-edgekit[full]')")
    try:
        paths, y, folder = photo_files(metadata or {}, data, list(result.get("labels") or []))
    except UserError as exc:
        return skip(result, str(exc))
    pillow, other, kept, failed = [], [], [], []
    for i, path in enumerate(paths):
        try:
            a, b = read_image_file(path), decode_other(path)
        except Exception as exc:  # noqa: BLE001 - an undecodable photo is left out, and counted
            failed.append(f"{path.name}: {first_line(exc)}")
            continue
        if a.shape != b.shape:
            failed.append(f"{path.name}: decoded to {b.shape}, the runtime to {a.shape}")
            continue
        pillow.append(a)
        other.append(b)
        kept.append(i)
    if not kept:
        return skip(result, f"no photo of {folder} decoded with both decoders ({failed[0]})")
    y = y[kept]
    log(f"verify: decoder sensitivity on {len(kept)} JPEG photos from {folder}")
    diff = np.concatenate([np.abs(a.astype(np.int16) - b.astype(np.int16)).ravel() for a, b in zip(pillow, other)])
    summary = {"runtime_decoder": runtime_decoder(), "other_decoder": other_decoder(),
               "photo_source": str(folder), "photos": len(kept), "photos_left_out": len(failed),
               "first_left_out": failed[0] if failed else None, "labelled": bool((y >= 0).any()),
               "pixel_difference": {"max_levels": int(diff.max()), "mean_levels": float(diff.mean()),
                                    "share_differing": float(np.mean(diff > 0))},
               "reference": None}
    inputs = _Inputs(pillow, other)
    if reference is not None and preprocessing:
        summary["reference"] = flips(*(reference(x) for x in inputs(preprocessing)), y)
    load = load or _runtime_load()
    for entry in entries:
        if "error" in entry:
            continue
        try:
            with load(Path(entry["path"])) as model:
                params = getattr(getattr(model, "bundle", None), "preprocessing", None)
                pair = inputs(params) if params else (model.preprocess(pillow), model.preprocess(other))
                entry["decoder_sensitivity"] = flips(*(model.predict_tensors(x) for x in pair), y)
        except Exception as exc:  # noqa: BLE001 - a figure must not sink the verification
            entry["decoder_sensitivity"] = {"error": first_line(exc)}
    summary["seconds"] = time.perf_counter() - start
    result["decoder_sensitivity"] = summary


class _Inputs:
    """Model inputs of both decodes, preprocessed once per distinct preprocessing (bundles share it)."""

    def __init__(self, pillow: list[np.ndarray], other: list[np.ndarray]):
        self.photos, self.cache = (pillow, other), {}

    def __call__(self, params: dict) -> tuple[np.ndarray, np.ndarray]:
        import json

        from edgekit.runtime.kinds import make_preprocessor

        key = json.dumps(params, sort_keys=True, default=str)
        if key not in self.cache:
            prepare = make_preprocessor(dict(params))
            self.cache[key] = tuple(prepare(photos) for photos in self.photos)
        return self.cache[key]


def _runtime_load() -> Callable:
    from edgekit import runtime

    return runtime.load


def flips(runtime_probs: np.ndarray, other_probs: np.ndarray, y: np.ndarray) -> dict:
    """How many labels the second decoder changes, and both accuracies (labelled photos only)."""
    a, b = np.asarray(runtime_probs).argmax(-1), np.asarray(other_probs).argmax(-1)
    known = y >= 0
    return {"photos": int(len(a)), "changed": int(np.sum(a != b)), "agreement": float(np.mean(a == b)),
            "accuracy_runtime_decoder": float(np.mean(a[known] == y[known])) if known.any() else None,
            "accuracy_other_decoder": float(np.mean(b[known] == y[known])) if known.any() else None}


# Report pieces (verify/report.py places them) ---------------------------------------------------

def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _changed(figure: dict | None) -> str:
    if not figure:
        return "-"
    if "error" in figure:
        return f"error: {figure['error']}"
    return f"{_pct(1 - figure['agreement'])} ({figure['changed']}/{figure['photos']})"


def _intro(d: dict) -> str:
    px = d["pixel_difference"]
    return (f"{d['photos']} JPEG photos from {d['photo_source']} decoded by {d['runtime_decoder']} (the runtime) "
            f"and by {d['other_decoder']}: pixels up to {px['max_levels']} levels apart (mean "
            f"{px['mean_levels']:.2f}, {100 * px['share_differing']:.0f}% of values differ).")


def summary_lines(result: dict) -> list[str]:
    d = result.get("decoder_sensitivity")
    if not d:
        return []
    if d.get("skipped"):
        return [f"decoder sensitivity: skipped ({d['skipped']})"]
    parts = [f"{e['bundle']} {_changed(e.get('decoder_sensitivity'))}" for e in result["artifacts"]
             if e.get("decoder_sensitivity")]
    if d.get("reference"):
        parts.append(f"Keras {_changed(d['reference'])}")
    return [f"decoder sensitivity: labels changed by another JPEG decoder (IFAST IDCT, up to "
            f"{d['pixel_difference']['max_levels']} levels): " + ", ".join(parts)]


def _rows(result: dict) -> list[list[str]]:
    d = result["decoder_sensitivity"]
    rows = []
    if d.get("reference"):
        r = d["reference"]
        rows.append(["Keras (reference)", _changed(r), _pct(r["accuracy_runtime_decoder"]),
                     _pct(r["accuracy_other_decoder"])])
    for e in result["artifacts"]:
        f = e.get("decoder_sensitivity")
        if f:
            rows.append([e["bundle"], _changed(f), _pct(f.get("accuracy_runtime_decoder")),
                         _pct(f.get("accuracy_other_decoder"))])
    return rows


HEADER = ["bundle", "labels changed by the other decoder", "accuracy (runtime decoder)",
          "accuracy (other decoder)"]


def markdown_lines(result: dict) -> list[str]:
    d = result.get("decoder_sensitivity")
    if not d:
        return []
    if d.get("skipped"):
        return ["", f"JPEG decoder sensitivity: skipped ({d['skipped']})."]
    out = ["", f"JPEG decoder sensitivity (not a gate): {_intro(d)}", "",
           "| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|"]
    return out + ["| " + " | ".join(r) + " |" for r in _rows(result)]


def changed_png(result: dict) -> str | None:
    """Bars: the share of labels each bundle (and Keras) changes with the other decoder."""
    rows = [(r[0], 1 - f["agreement"]) for r, f in zip(_rows(result), _figures(result)) if "agreement" in f]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(rows) + 1.2))
    ax.barh([n for n, _ in rows], [100 * v for _, v in rows], color="tab:orange")
    ax.invert_yaxis()
    ax.set_xlabel("labels changed by another JPEG decoder (%)")
    ax.set_title(f"{result['task']}: decoder sensitivity (IFAST IDCT vs Pillow)", fontsize=10)
    return to_png(fig)


def _figures(result: dict) -> list[dict]:
    """The figures in _rows' order."""
    d = result["decoder_sensitivity"]
    return ([d["reference"]] if d.get("reference") else []) + [
        e["decoder_sensitivity"] for e in result["artifacts"] if e.get("decoder_sensitivity")]


def html_parts(result: dict) -> list[str]:
    import html

    d = result.get("decoder_sensitivity")
    if not d:
        return []
    if d.get("skipped"):
        return [f"<p>JPEG decoder sensitivity: skipped ({html.escape(d['skipped'])}).</p>"]
    table = ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in HEADER) + "</tr>" + "".join(
        "<tr>" + "".join(f'<td class="num">{html.escape(c)}</td>' if i else f"<td>{html.escape(c)}</td>"
                         for i, c in enumerate(r)) + "</tr>" for r in _rows(result)) + "</table>")
    return ["<h3>JPEG decoder sensitivity (not a gate)</h3>", f"<p>{html.escape(_intro(d))} A bundle that "
            "changes many labels will disagree with these labels on a phone or app that decodes photos "
            "differently.</p>", table, img_tag(changed_png(result), "decoder sensitivity per bundle")]
