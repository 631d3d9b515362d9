"""The CLI contract: every stage is listed, flags parse, and user mistakes end in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgekit.cli import COMMANDS, build_parser, main

STAGES = ["train", "export", "verify", "predict", "listen", "bench", "serve", "devices", "deploy", "fleet", "pipeline"]


def test_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "edgekit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for stage in STAGES:
        assert stage in out.stdout, stage
    assert sorted(COMMANDS) == sorted(STAGES)


def test_help_does_not_import_tensorflow():
    code = ("import sys; from edgekit.cli import build_parser; build_parser();"
            "bad=[m for m in ('tensorflow','keras','onnx','tf2onnx') if m in sys.modules];"
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("argv", [
    ["train", "text", "--data", "x.csv", "--out", "m", "--epochs", "2", "--seed", "3",
     "--text-column", "t", "--label-column", "l", "--backbone", "vgg16"],
    ["export", "m", "--out", "a", "--formats", "tflite,onnx", "--variants", "fp32,fp16,dynamic,int8,int16x8"],
    ["export", "m", "--variants", "int8", "--keep-float-layers", "probs,lstm", "--int8-io", "uint8"],
    ["verify", "m", "a", "--data", "d", "--text-column", "t", "--label-column", "l",
     "--json", "r.json", "--html", "r.html"],
    ["predict", "b", "hello", "world", "--json"],
    ["bench", "b", "--threads", "2", "--runs", "5", "--compare-keras", "m", "--json", "b.json"],
    ["devices", "list"], ["devices", "show", "rpi4"], ["devices", "check", "rpi4", "b"],
    ["pipeline", "--out", "o", "--data-dir", "d", "--quick"],
])
def test_contract_flags_parse(argv):
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]


def test_bad_option_is_one_line_and_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "m", "--variants", "fp32,int3"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "int3" in err and "fp32,fp16,dynamic,int8,int16x8" in err


def test_missing_model_dir_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgekit", "export", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "nope" in out.stderr


@pytest.mark.parametrize("argv", [
    ["edgekit", "export", "m.keras", "--calibration-sample", "5"],       # abbreviation of --calibration-samples
    ["edgekit", "bench", "b", "--compare", "m"],                          # of --compare-keras
    ["edgekit.runtime", "bench", "b", "--run", "5"],                     # of --runs
])
def test_long_options_are_never_abbreviated(argv):
    """Flags are a contract: argparse's default prefix matching read `--calibration x.npz` as
    `--calibration-samples`; every parser of both CLIs refuses abbreviations."""
    out = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)
    assert out.returncode == 2 and "unrecognized arguments" in out.stderr, out.stderr


def test_both_clis_end_an_unexpected_error_the_same_way(tmp_path, monkeypatch, capsys):
    """`python -m edgekit.runtime` printed a traceback where `edgekit` printed one line and exited 3."""
    from edgekit.runtime import cli as runtime_cli

    def crash(args):
        raise KeyError("")  # an empty message too: the line names the exception class

    monkeypatch.setitem(runtime_cli.COMMANDS, "bench", crash)
    assert runtime_cli.main(["bench", str(tmp_path)]) == 3
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "internal error: KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        runtime_cli.main(["--debug", "bench", str(tmp_path)])


def test_a_wrong_keep_float_layer_is_refused_before_any_conversion(tmp_path):
    import keras

    inputs = keras.Input((4,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="probs")(
        keras.layers.Dense(8, name="hidden")(inputs)))
    path = tmp_path / "tiny.keras"
    model.save(path)
    out = subprocess.run([sys.executable, "-m", "edgekit", "export", str(path), "--out", str(tmp_path / "b"),
                          "--variants", "int8", "--keep-float-layers", "probs,hiden"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "no layer named 'hiden'" in out.stderr and "hidden" in out.stderr
    assert not (tmp_path / "b").exists()
