"""How much the suite's briefly trained models vary with the seed and the CPU's code path (issue 24):
the measurements behind the thresholds of tests/test_train_real.py and tests/test_listen.py.

    .venv/bin/python tests/training_spread.py [--tasks speech,text,image] [--seeds 0,1,2] [--work DIR]
        [--default-training]

Each run trains tests/conftest.py's quick model (or edgekit's defaults) in a child process, once with
oneDNN's kernels (the
default) and once with TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's own Eigen kernels: other code paths and
summation orders, as on another CPU). Prints one JSON line per run: the metrics the tests assert.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = {"speech": "fsdd", "text": "sms_spam", "image": "cifar10_small"}

CHILD = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np
from conftest import QUICK_TRAINING
from edgekit.train import train_model

task, data, out, seed = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
settings = dict(quick=True, **QUICK_TRAINING[task]) if sys.argv[6] == "quick" else {}
model_dir = train_model(task, out=out / task, data=str(data), seed=seed, **settings)
meta = json.loads((model_dir / "edgekit.json").read_text())
row = dict(meta["metrics"])
if task == "speech":  # test_quick_speech_model_on_fsdd's take-0 check and test_listen's george recording
    from edgekit.export import export_model
    from edgekit.runtime.kinds import make_preprocessor
    from edgekit.runtime.preprocess import utterance_probs
    from edgekit.train.io import load_model
    from listen_holdout import measure

    model, _ = load_model(model_dir)
    files = sorted(data.glob("*_0.wav"))
    probs = utterance_probs(model.predict(make_preprocessor(meta["preprocessing"])(files), verbose=0),
                            meta["preprocessing"])
    row["take0_accuracy"] = float(np.mean([meta["labels"][i] == f.name.split("_")[0]
                                           for i, f in zip(probs.argmax(1), files)]))
    export_model(model_dir, out / "bundles", formats=("tflite",), variants=("fp32",))
    listened = measure(data, out / "bundles" / "speech-tflite-fp32", "george", out / "recording")
    row.update(george_clip=listened["clip"], george_listen=listened["listen"])
print("RESULT " + json.dumps({k: round(float(v), 3) for k, v in row.items()}))
"""


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="speech,text,image")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--onednn", default="1,0", help="TF_ENABLE_ONEDNN_OPTS values to run")
    parser.add_argument("--work", default="/tmp/training-spread")
    parser.add_argument("--default-training", action="store_true",
                        help="edgekit's default training settings (test_*_settings_reach_target) instead of quick")
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    args = parser.parse_args(argv)
    for task in args.tasks.split(","):
        for onednn in args.onednn.split(","):
            for seed in map(int, args.seeds.split(",")):
                settings = "default" if args.default_training else "quick"
                out = Path(args.work) / f"{task}-{settings}-seed{seed}-onednn{onednn}"
                env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2")
                proc = subprocess.run([sys.executable, "-c", CHILD, str(HERE), task,
                                       str(Path(args.data) / DATA[task]), str(out), str(seed), settings],
                                      capture_output=True, text=True, env=env)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode or not lines:
                    print(json.dumps({"task": task, "seed": seed, "onednn": onednn,
                                      "error": proc.stderr[-800:]}), flush=True)
                    continue
                print(json.dumps({"task": task, "settings": settings, "seed": seed, "onednn": onednn,
                                  **json.loads(lines[-1][7:])}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
