"""The phone check: `edgekit devices check android-arm64 BUNDLE...` runs image bundles through MediaPipe
Tasks' ImageClassifier (what an Android/iOS app calls, reading the TFLite Model Metadata that export
wrote) on held-out photos, on the host, in the cached MediaPipe environment (export/mediapipe_env.py),
and compares it with edgekit's own runtime (the same bundle) and with Keras (the source model).

Photos: the model's held-out test photos (the `test/` folder of the image folder it was trained on,
named in the manifest), `per_class` of each class, each at its own size (CIFAR: 32x32) and upscaled
to 640x480 and 1200x900 (Pillow bicubic), so the phone's resize meets other sizes and aspect ratios.
Both pipelines get the same decoded pixels: the check measures preprocessing and inference, not JPEG
decoders (an app decodes with the OS's own).

It proves: the file loads in MediaPipe Tasks with no extra code (metadata: normalization, labels),
and MediaPipe gives the label edgekit's runtime (what `verify` measured) gives on at least
MIN_AGREEMENT of the photos. It runs MediaPipe's CPU path on x86; a phone's arm64 kernels and a GPU
delegate are not exercised (a GPU delegate also resizes differently).

API for other commands (verify --device android-arm64):
    from edgekit.devices import phone
    phone.is_phone(profile)                      # the profiles this check applies to
    summary = phone.check("android-arm64", [bundle_dir], per_class=8)
    summary["passed"], summary["results"][0]["overall"]["agreement_edgekit"]
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

def heldout_photos(manifest: dict, per_class: int, data: str | Path | None = None) -> tuple[list, list, str]:
    """(paths, label indices, description) of held-out photos: `data` (a folder of class folders), or
    the test/ folder of the image folder the model was trained on."""
    labels = manifest.get("labels") or []
    if data is None:
        source = (((manifest.get("source") or {}).get("metadata") or {}).get("data") or {}).get("source")
        if not source or source == "embedded":
            raise UserError("the bundle's model was not trained on an image folder: pass data= (a folder "
                            "of class folders of held-out photos)")
        folder = Path(source) / "test"
        if not folder.is_dir():
            raise UserError(f"no held-out photos: {folder} is missing (the training folder has no test/ "
                            "split); pass data= a folder of class folders")
    else:
        folder = Path(data)
        if not folder.is_dir():
            raise UserError(f"photo folder not found: {folder}")
    paths, ys = [], []
    for index, label in enumerate(labels):
        files = sorted(p for p in (folder / label).glob("*") if p.suffix.lower() in PHOTO_SUFFIXES) \
            if (folder / label).is_dir() else []
        step = max(1, len(files) // per_class)
        chosen = files[::step][:per_class]
        paths += chosen
        ys += [index] * len(chosen)
    if not paths:
        raise UserError(f"{folder} has no photos in folders named after the labels ({', '.join(labels[:4])}...)")
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


def edgekit_probs(bundle: Path, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, preprocessed inputs) from edgekit's runtime on the raw photos."""
    from edgekit import runtime

    with runtime.load(bundle) as model:
        x = model.preprocess(images)
        return model.predict_tensors(x), x


def other_kernels_probs(bundle: Path, x: np.ndarray) -> np.ndarray:
    """The same bundle and inputs through LiteRT's builtin kernels instead of XNNPACK: the disagreement
    between two correct int8 implementations, against which MediaPipe's is judged. Measured on the
    briefly trained CIFAR model (40% accurate): LiteRT XNNPACK vs builtin kernels agreed on 90.5% of
    photos, builtin vs reference kernels on 85.5%, MediaPipe vs edgekit on 90.5%; fp32 on 100%."""
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


def _compare(mp: np.ndarray, ek: np.ndarray, keras: np.ndarray | None, y: np.ndarray,
             other_kernels: np.ndarray | None = None) -> dict:
    out = {"images": int(len(y)),
           "agreement_other_kernels": (None if other_kernels is None else
                                       float(np.mean(other_kernels.argmax(1) == ek.argmax(1)))),
           "mediapipe_accuracy": float(np.mean(mp.argmax(1) == y)),
           "edgekit_accuracy": float(np.mean(ek.argmax(1) == y)),
           "agreement_edgekit": float(np.mean(mp.argmax(1) == ek.argmax(1))),
           "max_abs_error_edgekit": float(np.max(np.abs(mp - ek))),
           "keras_accuracy": None, "agreement_keras": None}
    if keras is not None:
        out.update(keras_accuracy=float(np.mean(keras.argmax(1) == y)),
                   agreement_keras=float(np.mean(mp.argmax(1) == keras.argmax(1))))
    return out


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
    all_mp, all_ek, all_keras, all_other, all_y = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="edgekit-phone-") as tmp:
        for name, images in photo_sets(paths).items():
            mp = mediapipe_scores(bundle / manifest["model_file"], images, len(manifest["labels"]), Path(tmp))
            ek, x = edgekit_probs(bundle, images)
            reference = keras_probs(keras, x) if keras is not None else None
            other = other_kernels_probs(bundle, x) if integer else None
            result["sizes"][name] = _compare(mp, ek, reference, y, other)
            all_mp.append(mp)
            all_ek.append(ek)
            all_y.append(y)
            if reference is not None:
                all_keras.append(reference)
            if other is not None:
                all_other.append(other)
    result["overall"] = _compare(np.concatenate(all_mp), np.concatenate(all_ek),
                                 np.concatenate(all_keras) if all_keras else None, np.concatenate(all_y),
                                 np.concatenate(all_other) if all_other else None)
    result["min_agreement"] = MIN_AGREEMENT
    result["passed"] = result["overall"]["agreement_edgekit"] >= MIN_AGREEMENT
    result["status"] = "pass" if result["passed"] else "fail"
    floor = result["overall"]["agreement_other_kernels"]
    if not result["passed"] and floor is not None and floor < MIN_AGREEMENT:
        # Not the phone's pipeline: this integer model's decisions move with any change of kernels.
        result["reason"] = (f"int8 rounding, not preprocessing: edgekit's own two LiteRT kernel sets agree "
                            f"on only {_pct(floor)} of these photos; ship a float bundle to phones, or "
                            "train a more decisive model")
    return result


def check(name: str, bundles: list[str], per_class: int = DEFAULT_PER_CLASS, data=None,
          with_keras: bool = True, model_dir: str | Path | None = None) -> dict:
    """Run each bundle through MediaPipe Tasks on the host; the summary has the shape of
    devices.check.check's (device, results, passed, checked, skipped). model_dir: the Keras model
    directory (default: searched beside the bundles, matched by the manifest's model sha256)."""
    from edgekit.devices.check import read_bundle

    profile = profiles.load(name)
    items = [read_bundle(b) for b in bundles]
    results = []
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
    o = r["overall"]
    lines = [f"{r['status'].upper():5} {r['bundle']}: MediaPipe agrees with edgekit on "
             f"{_pct(o['agreement_edgekit'])} of {o['images']} photos (need {_pct(r['min_agreement'])}), "
             f"with Keras on {_pct(o['agreement_keras'])}; resize {r['resize']}"]
    if o.get("agreement_other_kernels") is not None:
        lines.append(f"        LiteRT XNNPACK vs builtin kernels on the same inputs: "
                     f"{_pct(o['agreement_other_kernels'])} (int8 rounding alone)")
    if r.get("reason"):
        lines.append(f"        why: {r['reason']}")
    for size, s in r["sizes"].items():
        lines.append(f"        {size:>9}: accuracy MediaPipe {_pct(s['mediapipe_accuracy'])}, edgekit "
                     f"{_pct(s['edgekit_accuracy'])}, Keras {_pct(s['keras_accuracy'])}; agreement edgekit "
                     f"{_pct(s['agreement_edgekit'])}, Keras {_pct(s['agreement_keras'])}")
    return "\n".join(lines)


def run(args) -> int:
    """`edgekit devices check PHONE BUNDLE...` (--samples = photos per class)."""
    summary = check(args.name, args.bundles, per_class=args.samples)
    print(f"devices check {summary['device']} ({summary['title']}): {summary['pipeline']}")
    for r in summary["results"]:
        print("  " + format_result(r))
    verdict = "PASS" if summary["passed"] else "FAIL"
    print(f"{verdict}: {sum(1 for r in summary['results'] if r['passed'])}/{summary['checked']} bundles "
          f"agree with edgekit on a phone's pipeline" +
          (f", {summary['skipped']} skipped" if summary["skipped"] else ""))
    if getattr(args, "json_path", None):
        atomic_write_json(args.json_path, summary)
    return 0 if summary["passed"] else 1
