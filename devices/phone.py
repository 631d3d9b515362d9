"""The phone check: `edgekit devices check android-arm64 BUNDLE...` runs image bundles through MediaPipe
Tasks' ImageClassifier (what an Android/iOS app calls, reading the TFLite Model Metadata that export
wrote) on held-out photos, on the host, in the cached MediaPipe environment (export/mediapipe_env.py),
and compares it with edgekit's own runtime (the same bundle) and with Keras (the source model).

Photos: `data` (a folder of class folders named after the labels, or of any photos; its test/ folder
when it has one), else the model's held-out photos: the test/ folder inside the image folder it was
trained on, or beside it (a model trained on photos/train is checked on photos/test). `per_class` of
each class, each at its own size (CIFAR: 32x32) and upscaled to 640x480 and 1200x900 (Pillow
bicubic), so the phone's resize meets other sizes and aspect ratios.

Two figures per bundle:
- same pixels: MediaPipe gets the pixels edgekit's runtime decoded (Pillow), so the agreement measures
  the phone pipeline: metadata, resize, normalisation and MediaPipe's own LiteRT kernels. This is the
  verdict: at least MIN_AGREEMENT of the photos, else the failure is named: "pipeline" (a float bundle,
  or an integer one whose host kernels agree), or "int8 kernels" (an integer bundle on which even
  ai-edge-litert's own XNNPACK and builtin kernels disagree on the same inputs);
- file decoded: MediaPipe decodes the original files itself (`mp.Image.create_from_file`, stb_image
  inside MediaPipe's bindings), so the decoder is included. Reported beside, with the decoders' pixel
  difference in levels; below MIN_AGREEMENT it marks the bundle decoder-sensitive (a warning, not a
  failure: Android 7+ decodes JPEG with libjpeg-turbo's default IDCT and upsampling, as Pillow does,
  see docs/phones.md; other apps and iOS decode differently).

It runs MediaPipe's CPU path on x86; a phone's arm64 kernels and a GPU delegate are not exercised (a GPU
delegate also resizes differently).

API for other commands (verify --device android-arm64):
    from edgekit.devices import phone
    phone.is_phone(profile)                      # the profiles this check applies to
    summary = phone.check("android-arm64", [bundle_dir], per_class=8)
    r = summary["results"][0]
    r["passed"], r["failure"], r["overall"]["agreement_edgekit"], r["file_decoded"]["agreement_edgekit"]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.core import UserError, atomic_write_json, log, sha256_file
from edgekit.export import mediapipe_env
from edgekit.export import metadata as tflite_metadata
from edgekit.runtime import formats, profiles

MIN_AGREEMENT = 0.98       # MediaPipe's label = edgekit runtime's label on at least this share of photos
DEFAULT_PER_CLASS = 8
SIZES = {"original": None, "640x480": (640, 480), "1200x900": (1200, 900)}   # name -> (width, height)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_phone(profile: dict) -> bool:
    """Profiles of phones: apps there run bundles through MediaPipe Tasks / LiteRT, not Python."""
    return profile["name"].startswith(("android", "ios")) or \
        str(profile.get("os", "")).lower().startswith(("android", "ios"))


# --- photos ---------------------------------------------------------------------------------------

def heldout_folder(source: str | None, data: str | Path | None = None) -> Path:
    """The folder of held-out photos: `data` (its test/ folder when it has one), else the test/ folder
    inside the training folder `source`, or beside it when that is named train/ (photos/train ->
    photos/test). UserError with one line when there is none."""
    if data is not None:
        folder = Path(data)
        if not folder.is_dir():
            raise UserError(f"photo folder not found: {folder} (--data: a folder of class folders, or of "
                            "any photos)")
        return folder / "test" if (folder / "test").is_dir() else folder
    if not source or source == "embedded":
        raise UserError("the model was not trained on an image folder: pass --data FOLDER (a folder of "
                        "class folders of held-out photos, or of any photos)")
    source = Path(source)
    candidates = [source / "test"] + ([source.parent / "test"] if source.name == "train" else [])
    for folder in candidates:
        if folder.is_dir():
            return folder
    where = (f"neither {candidates[0]} nor {candidates[1]} exists" if len(candidates) == 2
             else f"{candidates[0]} is missing")
    raise UserError(f"no held-out photos: {where} (no test/ split inside or beside the training folder); "
                    "pass --data FOLDER (a folder of class folders, or of any photos)")


def list_photos(folder: Path, labels: list[str], per_class: int) -> tuple[list[Path], list[int]]:
    """(paths, label indices) of `per_class` photos per class folder named after a label, spread over
    each folder; a folder without such class folders gives `per_class * len(labels)` of all its photos
    (any depth), unlabelled (index -1)."""
    def photos(directory: Path, recursive: bool = False) -> list[Path]:
        found = directory.rglob("*") if recursive else directory.glob("*")
        return sorted(p for p in found if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())

    def spread(files: list[Path], n: int) -> list[Path]:
        return files[::max(1, len(files) // n)][:n]

    paths, ys = [], []
    for index, label in enumerate(labels):
        if (folder / label).is_dir():
            chosen = spread(photos(folder / label), per_class)
            paths += chosen
            ys += [index] * len(chosen)
    if not paths:  # any photos: no labels, so agreement without accuracy
        paths = spread(photos(folder, recursive=True), per_class * max(1, len(labels)))
        ys = [-1] * len(paths)
    if not paths:
        raise UserError(f"{folder} has no photos ({', '.join(PHOTO_SUFFIXES)}), in class folders named after "
                        f"the labels ({', '.join(labels[:4])}...) or loose")
    return paths, ys


def heldout_photos(manifest: dict, per_class: int, data: str | Path | None = None) -> tuple[list, list, str]:
    """(paths, label indices or -1, folder) of held-out photos for a bundle (see heldout_folder)."""
    source = (((manifest.get("source") or {}).get("metadata") or {}).get("data") or {}).get("source")
    folder = heldout_folder(source, data)
    paths, ys = list_photos(folder, list(manifest.get("labels") or []), per_class)
    return paths, ys, str(folder)


def photo_sets(paths: list[Path]) -> dict[str, list[np.ndarray]]:
    """size name -> decoded uint8 HxWx3 photos (decoded with the runtime's own reader)."""
    from PIL import Image

    from edgekit.runtime.preprocess.image import read_image_file

    originals = [read_image_file(p) for p in paths]
    sets = {}
    for name, size in SIZES.items():
        if size is None:
            sets[name] = originals
        else:
            sets[name] = [np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC))
                          for img in originals]
    return sets


# --- the three pipelines --------------------------------------------------------------------------

def mediapipe_scores(model_file: Path, images: list[np.ndarray], num_classes: int, work: Path) -> np.ndarray:
    npz = work / "images.npz"
    np.savez(npz, **{f"img{i}": img for i, img in enumerate(images)})
    try:
        answer = mediapipe_env.run("classify_images", {"model": str(model_file), "images": str(npz),
                                                       "num_classes": num_classes})
    finally:
        npz.unlink(missing_ok=True)
    return np.asarray(answer["scores"], dtype=np.float32)


def mediapipe_file_scores(model_file: Path, paths: list[Path], num_classes: int,
                          work: Path) -> tuple[np.ndarray, list, list]:
    """MediaPipe's ImageClassifier on the files, decoded by MediaPipe itself: (scores, NaN rows where a
    file failed; the decoded RGB arrays; the per-file errors or None)."""
    npz = work / "decoded.npz"
    try:
        answer = mediapipe_env.run("classify_files", {"model": str(model_file), "files": [str(p) for p in paths],
                                                      "num_classes": num_classes, "pixels": str(npz)})
        with np.load(npz, allow_pickle=False) as decoded:
            pixels = [decoded[f"img{i}"] for i in range(len(paths))]
    finally:
        npz.unlink(missing_ok=True)
    scores = np.array([row if row is not None else [np.nan] * num_classes for row in answer["scores"]],
                      dtype=np.float32)
    return scores, pixels, answer["errors"]


def edgekit_probs(bundle: Path, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, preprocessed inputs) from edgekit's runtime on the raw photos."""
    from edgekit import runtime

    with runtime.load(bundle) as model:
        x = model.preprocess(images)
        return model.predict_tensors(x), x


def other_kernels_probs(bundle: Path, x: np.ndarray) -> np.ndarray:
    """The same bundle and inputs through LiteRT's builtin kernels instead of XNNPACK: how far two
    correct integer kernel sets disagree on this model (MediaPipe's LiteRT build is a third). Measured on
    the briefly trained CIFAR model (40% accurate, 1000 photos, 2026-12): int8 XNNPACK vs builtin 93.4%,
    MediaPipe vs either 91.1-91.2%; fp32, fp16 and int16x8 100%."""
    from edgekit import runtime

    with runtime.load(bundle, xnnpack=False) as model:
        return model.predict_tensors(x)


def find_model_dir(bundle: Path, manifest: dict) -> Path | None:
    """The Keras model directory the bundle came from (same model sha256), beside the bundle's folder."""
    want = (manifest.get("source") or {}).get("model_sha256")
    for parent in (bundle.parent, bundle.parent.parent):
        if not parent.is_dir():
            continue
        for candidate in [parent, *sorted(p for p in parent.iterdir() if p.is_dir())]:
            model = candidate / "model.keras"
            if (candidate / "edgekit.json").is_file() and model.is_file() and sha256_file(model) == want:
                return candidate
    return None


def keras_model(model_dir: Path):
    from edgekit.train.io import load_model

    return load_model(model_dir)[0]


def keras_probs(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=64, verbose=0), dtype=np.float32)


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float | None:
    """Accuracy on the labelled photos (label -1: a photo from a folder without class folders)."""
    known = y >= 0
    return float(np.mean(probs[known].argmax(1) == y[known])) if known.any() else None


def _compare(mp: np.ndarray, ek: np.ndarray, keras: np.ndarray | None, y: np.ndarray,
             other_kernels: np.ndarray | None = None) -> dict:
    out = {"images": int(len(y)),
           "agreement_other_kernels": (None if other_kernels is None else
                                       float(np.mean(other_kernels.argmax(1) == ek.argmax(1)))),
           "mediapipe_accuracy": _accuracy(mp, y),
           "edgekit_accuracy": _accuracy(ek, y),
           "agreement_edgekit": float(np.mean(mp.argmax(1) == ek.argmax(1))),
           "max_abs_error_edgekit": float(np.max(np.abs(mp - ek))),
           "keras_accuracy": None, "agreement_keras": None}
    if keras is not None:
        out.update(keras_accuracy=_accuracy(keras, y),
                   agreement_keras=float(np.mean(mp.argmax(1) == keras.argmax(1))))
    return out


def pixel_difference(decoded: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """How far two decoders' pixels are apart, in levels of 0..255, over the photos decoded to the same
    shape (EXIF orientation and the runtime's reduced decoding of large photos change the shape)."""
    same = [(a, b) for a, b in zip(decoded, reference) if a.shape == b.shape and a.size]
    if not same:
        return {"photos_compared": 0, "photos_other_shape": len(decoded), "max_levels": None,
                "mean_levels": None, "share_differing": None}
    diff = np.concatenate([np.abs(a.astype(np.int16) - b.astype(np.int16)).ravel() for a, b in same])
    return {"photos_compared": len(same), "photos_other_shape": len(decoded) - len(same),
            "max_levels": int(diff.max()), "mean_levels": float(diff.mean()),
            "share_differing": float(np.mean(diff > 0))}


def _file_decoded(mp: np.ndarray, pixels: list, errors: list, originals: list, ek: np.ndarray,
                  y: np.ndarray) -> dict:
    """MediaPipe on the files it decoded itself vs edgekit's runtime on the files Pillow decoded."""
    ok = ~np.isnan(mp).any(axis=1)
    failed = [e for e in errors if e]
    return {"decoder": "MediaPipe's own (mp.Image.create_from_file: stb_image)", "photos": int(ok.sum()),
            "failed": len(failed), "first_error": failed[0] if failed else None,
            "agreement_edgekit": float(np.mean(mp[ok].argmax(1) == ek[ok].argmax(1))) if ok.any() else None,
            "mediapipe_accuracy": _accuracy(mp[ok], y[ok]) if ok.any() else None,
            "edgekit_accuracy": _accuracy(ek, y),
            "pixel_difference": pixel_difference([p for p, good in zip(pixels, ok) if good],
                                                 [o for o, good in zip(originals, ok) if good])}


# --- the check ------------------------------------------------------------------------------------

def check_bundle(bundle: Path, manifest: dict, per_class: int, data=None, with_keras: bool = True,
                 model_dir: str | Path | None = None) -> dict:
    result = {"bundle": bundle.name, "path": str(bundle)}
    fmt = formats.FORMATS.get(manifest["format"])
    if fmt is None or not fmt.phone_apps:
        apps = ", ".join(f.name for f in formats.FORMATS.values() if f.phone_apps)
        return {**result, "status": "skipped", "passed": None,
                "reason": f"MediaPipe Tasks run {apps} models only (use that bundle on phones)"}
    input_spec = manifest["inputs"][0]
    why = tflite_metadata.why_not({**manifest, "preprocessing": manifest.get("preprocessing")}, input_spec)
    if why:
        return {**result, "status": "skipped", "passed": None, "reason": f"not a MediaPipe Tasks model: {why}"}
    record = (manifest.get("export") or {}).get("tflite_metadata") or {}
    if not record.get("written"):
        return {**result, "status": "fail", "passed": False,
                "error": "model.tflite has no TFLite metadata, so MediaPipe Tasks cannot load it: "
                         f"{record.get('reason') or 'exported by an edgekit without metadata'}; re-export it"}
    paths, ys, where = heldout_photos(manifest, per_class, data)
    y = np.asarray(ys)
    if with_keras:
        model_dir = Path(model_dir) if model_dir else find_model_dir(bundle, manifest)
    else:
        model_dir = None
    result.update(photos=len(paths), photo_source=where, resize=(manifest.get("preprocessing") or {}).get("resize"),
                  keras_model=str(model_dir) if model_dir else None, sizes={})
    keras = keras_model(model_dir) if model_dir else None
    integer = manifest.get("variant") in ("int8", "int16x8")  # kernel rounding matters for these
    model_file = bundle / manifest["model_file"]
    num_classes = len(manifest["labels"])
    all_mp, all_ek, all_keras, all_other, all_y = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="edgekit-phone-") as tmp:
        sets = photo_sets(paths)
        for name, images in sets.items():
            mp = mediapipe_scores(model_file, images, num_classes, Path(tmp))
            ek, x = edgekit_probs(bundle, images)
            reference = keras_probs(keras, x) if keras is not None else None
            other = other_kernels_probs(bundle, x) if integer else None
            result["sizes"][name] = _compare(mp, ek, reference, y, other)
            if name == "original":
                ek_original = ek
            all_mp.append(mp)
            all_ek.append(ek)
            all_y.append(y)
            if reference is not None:
                all_keras.append(reference)
            if other is not None:
                all_other.append(other)
        files, pixels, errors = mediapipe_file_scores(model_file, paths, num_classes, Path(tmp))
    result["overall"] = _compare(np.concatenate(all_mp), np.concatenate(all_ek),
                                 np.concatenate(all_keras) if all_keras else None, np.concatenate(all_y),
                                 np.concatenate(all_other) if all_other else None)
    result["file_decoded"] = _file_decoded(files, pixels, errors, sets["original"], ek_original, y)
    result["min_agreement"] = MIN_AGREEMENT
    result.update(agreement_same_pixels=result["overall"]["agreement_edgekit"],
                  agreement_file_decoded=result["file_decoded"]["agreement_edgekit"])
    result.update(_verdict(result["overall"], result["file_decoded"]))
    result["status"] = "pass" if result["passed"] else "fail"
    return result


def _verdict(overall: dict, file_decoded: dict) -> dict:
    """passed, failure ("pipeline" / "int8 kernels" / None), reason, decoder_sensitive, decoder_note."""
    same, kernels = overall["agreement_edgekit"], overall["agreement_other_kernels"]
    files = file_decoded["agreement_edgekit"]
    out = {"passed": same >= MIN_AGREEMENT, "failure": None, "decoder_sensitive": False}
    if same < MIN_AGREEMENT:
        if kernels is not None and kernels < MIN_AGREEMENT:
            # Not the phone's pipeline: this integer model's labels move with any change of kernels.
            out.update(failure="int8 kernels", reason=(
                f"int8 kernels, not the phone pipeline: on the same pixels MediaPipe's LiteRT build agrees "
                f"with edgekit on {_pct(same)}, and edgekit's own XNNPACK and builtin kernels on only "
                f"{_pct(kernels)}; ship a float bundle to phones, or train a more decisive model"))
        else:
            out.update(failure="pipeline", reason=(
                f"the phone pipeline (metadata, resize, normalisation, MediaPipe's kernels) gives other labels "
                f"on the same pixels: {_pct(same)} agreement"
                + (f", while edgekit's own two kernel sets agree on {_pct(kernels)}" if kernels is not None else "")))
    if files is not None and files < MIN_AGREEMENT:
        difference = file_decoded["pixel_difference"]
        out.update(decoder_sensitive=True, decoder_note=(
            f"decoder-sensitive: with MediaPipe decoding the files itself (pixels up to "
            f"{difference['max_levels']} levels from Pillow's) {_pct(1 - files)} of the labels change"))
    return out


def check(name: str, bundles: list[str], per_class: int = DEFAULT_PER_CLASS, data=None,
          with_keras: bool = True, model_dir: str | Path | None = None) -> dict:
    """Run each bundle through MediaPipe Tasks on the host; the summary has the shape of
    devices.check.check's (device, results, passed, checked, skipped). model_dir: the Keras model
    directory (default: searched beside the bundles, matched by the manifest's model sha256)."""
    from edgekit.devices.check import read_bundle

    profile = profiles.load(name)
    items = [read_bundle(b) for b in bundles]
    results = []
    if data is not None and not Path(data).is_dir():  # one line before any MediaPipe work
        heldout_folder(None, data)
    for bundle, manifest in items:
        t0 = time.perf_counter()
        log(f"  running {bundle.name} through MediaPipe {mediapipe_env.MEDIAPIPE_VERSION} ImageClassifier")
        try:
            result = check_bundle(bundle, manifest, per_class, data, with_keras, model_dir)
        except UserError as exc:
            result = {"bundle": bundle.name, "path": str(bundle), "status": "error", "passed": False,
                      "error": str(exc)}
        result["check_seconds"] = round(time.perf_counter() - t0, 2)
        results.append(result)
        log("  " + format_result(result))
    checked = [r for r in results if r["status"] != "skipped"]
    return {"device": profile["name"], "title": profile["title"],
            "pipeline": f"MediaPipe Tasks {mediapipe_env.MEDIAPIPE_VERSION} (CPU, on this host)",
            "mediapipe_python": str(mediapipe_env.find() or "") or None, "emulation": None,
            "results": results, "passed": bool(checked) and all(r["passed"] for r in checked),
            "checked": len(checked), "skipped": len(results) - len(checked)}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_result(r: dict) -> str:
    if r["status"] == "skipped":
        return f"SKIP  {r['bundle']}: {r['reason']}"
    if "overall" not in r:
        return f"{'ERROR' if r['status'] == 'error' else 'FAIL'} {r['bundle']}: {r['error']}"
    o, f = r["overall"], r["file_decoded"]
    lines = [f"{r['status'].upper():5} {r['bundle']}: same pixels: MediaPipe agrees with edgekit on "
             f"{_pct(o['agreement_edgekit'])} of {o['images']} photos (need {_pct(r['min_agreement'])}), "
             f"with Keras on {_pct(o['agreement_keras'])}; resize {r['resize']}",
             f"        MediaPipe decoding the files: {_pct(f['agreement_edgekit'])} of {f['photos']} photos "
             f"(its decoder vs Pillow: max {f['pixel_difference']['max_levels']} levels, mean "
             f"{_levels(f['pixel_difference']['mean_levels'])})" + (f"; {f['failed']} files failed: "
                                                                   f"{f['first_error']}" if f["failed"] else "")]
    if o.get("agreement_other_kernels") is not None:
        lines.append(f"        LiteRT XNNPACK vs builtin kernels on the same inputs: "
                     f"{_pct(o['agreement_other_kernels'])} (integer kernel rounding alone)")
    if r.get("reason"):
        lines.append(f"        why ({r['failure']}): {r['reason']}")
    if r.get("decoder_sensitive"):
        lines.append(f"        warning: {r['decoder_note']}")
    for size, s in r["sizes"].items():
        lines.append(f"        {size:>9}: accuracy MediaPipe {_pct(s['mediapipe_accuracy'])}, edgekit "
                     f"{_pct(s['edgekit_accuracy'])}, Keras {_pct(s['keras_accuracy'])}; agreement edgekit "
                     f"{_pct(s['agreement_edgekit'])}, Keras {_pct(s['agreement_keras'])}")
    return "\n".join(lines)


def check_lines(summary: dict) -> list[str]:
    """One short line per checked bundle, for verify's report: the verdict and both figures."""
    lines = []
    for r in summary.get("results") or []:
        if r.get("status") == "skipped" or "overall" not in r:
            continue
        verdict = "PASS" if r["passed"] else f"FAIL ({r.get('failure')})"
        note = "; decoder-sensitive" if r.get("decoder_sensitive") else ""
        lines.append(f"{summary['device']} phone check {r['bundle']}: {verdict}: MediaPipe = edgekit on the same "
                     f"pixels {_pct(r['agreement_same_pixels'])}, MediaPipe decoding the files "
                     f"{_pct(r['agreement_file_decoded'])}{note}")
    return lines


def _levels(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def run(args) -> int:
    """`edgekit devices check PHONE BUNDLE...` (--samples = photos per class)."""
    summary = check(args.name, args.bundles, per_class=args.samples, data=getattr(args, "data", None))
    print(f"devices check {summary['device']} ({summary['title']}): {summary['pipeline']}")
    for r in summary["results"]:
        print("  " + format_result(r))
    verdict = "PASS" if summary["passed"] else "FAIL"
    print(f"{verdict}: {sum(1 for r in summary['results'] if r['passed'])}/{summary['checked']} bundles "
          f"agree with edgekit on a phone's pipeline (same pixels)" +
          (f", {summary['skipped']} skipped" if summary["skipped"] else ""))
    if getattr(args, "json_path", None):
        atomic_write_json(args.json_path, summary)
    return 0 if summary["passed"] else 1
