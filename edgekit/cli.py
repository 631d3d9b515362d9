"""The `edgekit` command: a thin argument parser that dispatches to each stage's `run(args) -> int`.

Stage modules are imported only when their command runs, so `edgekit --help` and `edgekit predict`
start without TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edgekit import __version__
from edgekit.export.formats import NAMES as FORMATS  # the registries: formats, recipes, kinds
from edgekit.export.recipes import IO_TYPES, variants
from edgekit.runtime.commandline import BACKEND_CHOICES, ArgumentParser, positive_int, run_command
from edgekit.runtime.kinds import KINDS
from edgekit.train import TASKS  # the registered training kinds (train/__init__.py KINDS)

BACKBONES = ("mobilenet_v2", "vgg16", "resnet50", "inception_v3")
OUTSIDE_TASKS = tuple(name for name, kind in KINDS.items() if kind.outside_models)


def _csv_choice(valid: tuple[str, ...]):
    """argparse type for a comma-separated subset of `valid` (error lists the valid names)."""

    def parse(text: str) -> list[str]:
        items = [t.strip().lower() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in valid]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad) or 'empty list'}; choose from {','.join(valid)}")
        return list(dict.fromkeys(items))

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="edgekit",
        description="Train, quantize, convert, verify and run Keras models on edge CPUs.",
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="STAGE", required=True)
    # one function per stage, in the order `edgekit --help` lists them
    for add in (_add_train, _add_export, _add_verify, _add_predict, _add_listen, _add_bench, _add_serve,
                _add_devices, _add_deploy, _add_fleet, _add_pipeline):
        add(sub)
    return parser


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a text, image or speech model (embedded data or --data)")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--data", help="CSV/TSV file (text), folder of class folders (image), "
                                  "folder of WAV files (speech); default: embedded data")
    p.add_argument("--out", help="model directory to write (default: models/TASK)")
    p.add_argument("--epochs", type=positive_int, help="training epochs (default per task)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, init and shuffling")
    p.add_argument("--text-column", help="text column name (text task)")
    p.add_argument("--label-column", help="label column name (text task)")
    p.add_argument("--backbone", choices=BACKBONES, default="mobilenet_v2",
                   help="keras.applications backbone (image task)")
    p.add_argument("--weights", default="auto", metavar="auto|imagenet|none|FILE",
                   help="image backbone weights: imagenet when available (auto), imagenet, random init "
                        "(none), or a local backbone weights file (no download)")
    p.add_argument("--input-size", type=positive_int, help="image input side in pixels")
    p.add_argument("--fine-tune-epochs", type=int, default=None,
                   help="epochs of fine-tuning the unfrozen backbone after the head (image task)")
    p.add_argument("--features", choices=("log_mel", "mfcc"), help="speech features")
    p.add_argument("--arch", choices=("lstm", "gru", "bilstm", "transformer"),
                   help="text: lstm (default), gru, bilstm, transformer; speech: lstm (default), gru, bilstm")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--max-samples", type=positive_int,
                   help="use at most this many training samples (quick runs)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="quantize and convert a Keras model (a .keras file or a model "
                                      "directory) to TFLite/ONNX bundles")
    p.add_argument("model_dir", metavar="MODEL", help="a .keras file, or a model directory from `edgekit train`")
    p.add_argument("--out", help="folder for the bundles (default: MODEL/../artifacts)")
    p.add_argument("--calibration", metavar="FILE.npz",
                   help="representative inputs for int8/int16x8: array `x` (one-input model) or one array "
                        "per input name (default: the model directory's calibration.npz)")
    p.add_argument("--name", help="bundle name (default: the .keras file's stem, or the model's name)")
    p.add_argument("--task", choices=OUTSIDE_TASKS,
                   help="pre/post-processing for an outside model (default: tensor, inputs as arrays)")
    p.add_argument("--preprocess", metavar="PRESET",
                   help="--task image: mobilenet_v2, resnet50, efficientnet or scale:A/B (e.g. scale:1/255)")
    p.add_argument("--labels", metavar="labels.txt", help="class names, one per line")
    p.add_argument("--vocab", metavar="vocab.txt", help="--task text: TextVectorization vocabulary, one token a line")
    p.add_argument("--max-len", type=positive_int, help="--task text: token sequence length")
    p.add_argument("--formats", type=_csv_choice(FORMATS), default=list(FORMATS),
                   help="comma-separated: " + ",".join(FORMATS))
    p.add_argument("--variants", type=_csv_choice(variants()), default=list(variants()),
                   help="comma-separated: " + ",".join(variants()))
    p.add_argument("--calibration-samples", type=positive_int, default=200,
                   help="representative samples for full-integer calibration (default 200)")
    p.add_argument("--int8-io", choices=IO_TYPES, default="float32",
                   help="input/output type of the full int8 TFLite variant")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--device", help="also check ops against this device profile's backends")
    p.add_argument("--keep-float-layers", type=lambda t: [n.strip() for n in t.split(",") if n.strip()],
                   metavar="LAYER,...", help="int8: keep these Keras layers in float (selective "
                                             "quantization, e.g. the worst layers `verify` names)")
    p.add_argument("--allow-unsafe", action="store_true",
                   help="allow loading a legacy .h5 model (such files can execute code)")


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="parity and accuracy-after-quantization gates and report")
    p.add_argument("paths", nargs="+", metavar="MODEL ARTIFACTS_DIR",
                   help="model directory or .keras file, and bundle folder (with --golden: only the bundles)")
    p.add_argument("--data", help="labelled data to evaluate on (default: the model's held-out split), or "
                                  "an .npz of model inputs (`x` or one array per input name, optional labels `y`)")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write results as JSON")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown summary")
    p.add_argument("--save-golden", metavar="FILE", help="store inputs and Keras outputs (npz)")
    p.add_argument("--golden", metavar="FILE", help="compare bundles against a golden file (no Keras)")
    p.add_argument("--gate", action="append", default=[], metavar="VARIANT.KEY=VALUE",
                   help="override a gate, e.g. int8.max_accuracy_drop=2.0 (repeatable)")
    p.add_argument("--fix", action="store_true",
                   help="search the fewest layers to keep in float (or a better calibration) so that "
                        "failing int8 variants pass")
    p.add_argument("--max-samples", type=positive_int, help="evaluate at most this many samples")
    p.add_argument("--device", action="append", default=[], dest="devices", metavar="NAME",
                   help="name the bundle to ship to this device profile (latency ESTIMATE; repeatable)")
    p.add_argument("--allow-unsafe", action="store_true",
                   help="allow loading a legacy .h5 model (such files can execute code)")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="run a bundle on texts, images (.jpg/.png/.npy) or WAV files")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--device", help="device profile supplying runtime defaults")
    p.add_argument("--top-k", type=positive_int, default=3)
    p.add_argument("--verbose", action="store_true", help="show the inference backend's own log lines")


def _add_listen(sub) -> None:
    from edgekit.runtime.listen import add_listen_arguments

    add_listen_arguments(sub.add_parser("listen", help="words with start/end times in a long recording or a "
                                                       "live PCM stream (speech bundles)"))


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="latency and memory of a bundle, side by side with Keras")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--runs", type=positive_int, default=100)
    p.add_argument("--warmup", type=positive_int, default=10)
    p.add_argument("--compare-keras", metavar="MODEL",
                   help="also time the Keras model (a model directory or .keras file)")
    p.add_argument("--baseline", metavar="BUNDLE",
                   help="also time another bundle in the same loop (e.g. fp32 next to int8)")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write results as JSON")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    p.add_argument("--allow-unsafe", action="store_true")
    p.add_argument("--serve", type=positive_int, nargs="?", const=0, metavar="CLIENTS",
                   help="also time the bundle through `edgekit serve` over loopback with CLIENTS client "
                        "threads (default: CPU cores, at most 4), by TensorFlow Serving's API (v1) and the Open "
                        "Inference Protocol (v2), next to the runtime in-process")


def _add_serve(sub) -> None:
    from edgekit.runtime.serve import add_serve_arguments

    add_serve_arguments(sub.add_parser("serve", help="HTTP inference server for bundles (TensorFlow Serving "
                                                     "REST API and the Open Inference Protocol, KServe v2); see "
                                                     "docs/serving.md"))


def _add_devices(sub) -> None:
    p = sub.add_parser("devices", help="device profiles, and bundle checks under CPU emulation")
    dsub = p.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    dsub.add_parser("list", help="list device profiles")
    d = dsub.add_parser("show", help="show one device profile")
    d.add_argument("name", metavar="NAME")
    d = dsub.add_parser("check", help="run bundles on an emulated device CPU (a phone: through MediaPipe "
                                      "Tasks) and compare with the host")
    d.add_argument("name", metavar="NAME")
    d.add_argument("bundles", nargs="+", metavar="BUNDLE")
    d.add_argument("--golden", metavar="FILE", help="golden npz (default: computed on the host)")
    d.add_argument("--samples", type=positive_int, default=8, help="inputs to compare (default 8; a phone: "
                                                                   "photos per class)")
    d.add_argument("--data", metavar="FOLDER", help="a phone: held-out photos (class folders named after the "
                                                    "labels, or any photos; default: test/ inside or beside "
                                                    "the model's training folder)")
    d.add_argument("--json", dest="json_path", metavar="FILE")
    d = dsub.add_parser("estimate", help="ESTIMATE a bundle's latency and memory on a device (cost model)")
    d.add_argument("name", metavar="NAME")
    d.add_argument("bundle", metavar="BUNDLE", help="bundle folder, .tflite or .onnx file")
    d.add_argument("--threads", type=positive_int, help="inference threads (default: the profile's)")
    d.add_argument("--json", action="store_true", help="print the estimate as JSON")


def _add_deploy(sub) -> None:
    p = sub.add_parser("deploy", help="copy runtime + bundle to a real device over ssh and check it")
    p.add_argument("name", metavar="NAME", help="device profile")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--ssh", required=True, metavar="USER@HOST")
    p.add_argument("--port", type=positive_int, default=22)
    p.add_argument("--identity", metavar="KEY", help="ssh private key")
    p.add_argument("--python", default="python3", help="Python on the device (default python3)")
    p.add_argument("--remote-dir", default="~/edgekit-deploy")
    p.add_argument("--golden", metavar="FILE", help="golden npz (default: computed on the host)")
    p.add_argument("--runs", type=positive_int, default=50, help="bench runs on the device")
    p.add_argument("--json", dest="json_path", metavar="FILE")


def _add_fleet(sub) -> None:
    p = sub.add_parser("fleet", help="deploy, verify and roll back bundles on many devices through Ansible "
                                     "(docs/fleet.md)")
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    f = fsub.add_parser("deploy", help="a new release of each bundle on every host; `current` switches only "
                                       "where the golden check passes there")
    f.add_argument("inventory", metavar="INVENTORY", help="an Ansible inventory (file, folder or host list)")
    f.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle folders; each is deployed under its "
                                                               "folder's name")
    f.add_argument("--limit", metavar="PATTERN", help="only the hosts matching this Ansible pattern")
    f.add_argument("--serial", metavar="N|N%", help="hosts per batch (rolling update; default: all at once)")
    f.add_argument("--max-fail-percent", type=float, metavar="P",
                   help="stop before the next batch when more than P%% of a batch failed (default: never)")
    f.add_argument("--golden", action="append", default=[], metavar="[NAME=]FILE",
                   help="golden npz with Keras outputs (`verify --save-golden`) for every bundle, or NAME=FILE "
                        "for one (default: the same bundle run here)")
    f.add_argument("--json", dest="json_path", metavar="FILE", help="write the fleet report as JSON")
    f = fsub.add_parser("rollback", help="return hosts to their previous release of bundle NAME")
    f.add_argument("inventory", metavar="INVENTORY")
    f.add_argument("name", metavar="NAME", help="the bundle's name (its folder's name)")
    f.add_argument("--limit", metavar="PATTERN")
    f.add_argument("--json", dest="json_path", metavar="FILE")
    f = fsub.add_parser("status", help="per host: architecture, release per bundle, golden result, latency")
    f.add_argument("inventory", metavar="INVENTORY")
    f.add_argument("--limit", metavar="PATTERN")
    f.add_argument("--json", dest="json_path", metavar="FILE")


def _add_pipeline(sub) -> None:
    p = sub.add_parser("pipeline", help="train -> export -> verify all three models, one report")
    p.add_argument("--out", default="edgekit-output", help="output folder (default edgekit-output)")
    p.add_argument("--data-dir", help="folder laid out like shared/data (sms_spam/, cifar10_small/, fsdd/)")
    p.add_argument("--quick", action="store_true", help="small settings: finishes within 3 minutes")
    p.add_argument("--tasks", type=_csv_choice(TASKS), default=list(TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=positive_int, metavar="N",
                   help="tasks run at once, each in its own process (default: the number of CPU cores)")
    p.add_argument("--readme", metavar="FILE",
                   help="also replace the results table between the <!-- results:start/end --> "
                        "markers of this README")
    p.add_argument("--device", action="append", default=[], dest="devices", metavar="NAME",
                   help="name the bundle to ship to this device profile (latency ESTIMATE; repeatable; "
                        "default rpi4)")


# command -> "module:function"; each function takes the parsed args and returns an exit code.
COMMANDS = {
    "train": "edgekit.train.command:run",
    "export": "edgekit.export.command:run",
    "verify": "edgekit.verify.command:run",
    "predict": "edgekit.runtime.cli:predict_command",
    "bench": "edgekit.bench:run",
    "serve": "edgekit.runtime.cli:serve_command",
    "listen": "edgekit.runtime.cli:listen_command",
    "devices": "edgekit.devices.command:run",
    "deploy": "edgekit.devices.deploy:run",
    "fleet": "edgekit.devices.fleet.command:run",
    "pipeline": "edgekit.pipeline:run",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = COMMANDS[args.command].split(":")

    def command():
        return getattr(importlib.import_module(module_name), func_name)(args)

    return run_command(f"edgekit {args.command}", command, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
