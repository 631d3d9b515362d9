"""`edgekit pipeline`: the README results table, and a quick end-to-end run (slow)."""

from __future__ import annotations

import json

import pytest
from test_verify_report import sample_result

from edgekit.cli import main as edgekit_main
from edgekit.core import UserError
from edgekit.pipeline import _data_source, gate_summary, results_table


def test_results_table_has_keras_and_every_variant():
    table = results_table([sample_result()])
    rows = [line for line in table.splitlines() if line.startswith("| text")]
    assert rows[0].startswith("| text | Keras |") and "97.40%" in rows[0]
    assert len(rows) == 4
    assert any("| int8 | tflite |" in row and "FAIL" in row for row in rows)


def test_gate_summary_names_fixed_bundles_as_fixed_not_failed():
    def artifact(bundle, passed, fixed_from=None):
        return {"bundle": bundle, "passed": passed, **({"fixed_from": fixed_from} if fixed_from else {})}

    speech = {"task": "speech", "artifacts": [artifact("s-int8", False), artifact("s-int8-keepfloat", True, "s-int8"),
                                              artifact("s-fp32", True)]}
    image = {"task": "image", "artifacts": [artifact("i-int8", False), artifact("i-int8-keepfloat", False, "i-int8")]}
    assert gate_summary([speech]) == "; fixed: s-int8 -> s-int8-keepfloat"
    assert gate_summary([speech, image]) == "; failed gates: image/i-int8; fixed: s-int8 -> s-int8-keepfloat"
    assert gate_summary([{"task": "text", "artifacts": [artifact("t-fp32", True)]}]) == ""


def test_data_dir_must_follow_the_shared_layout(tmp_path):
    with pytest.raises(UserError, match="sms_spam"):
        _data_source(str(tmp_path), "text")
    assert _data_source(None, "text") is None


def test_unknown_device_fails_before_any_training(tmp_path, capsys):
    code = edgekit_main(["pipeline", "--out", str(tmp_path / "out"), "--quick", "--tasks", "text",
                         "--device", "rpi4", "--device", "no-such-board"])
    assert code == 2 and not (tmp_path / "out").exists()
    assert "no-such-board" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.cost(80)
def test_quick_pipeline_runs_tasks_in_parallel_and_writes_every_report(tmp_path, capsys):
    out = tmp_path / "demo"
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\nafter\n")
    code = edgekit_main(["pipeline", "--out", str(out), "--quick", "--tasks", "text,speech", "--jobs", "2",
                         "--readme", str(readme)])
    err = capsys.readouterr().err
    for name in ("report.html", "report.md", "report.json", "results.md"):
        assert (out / name).is_file(), name
    results = json.loads((out / "report.json").read_text())["results"]
    # Both tasks in the order asked for, whichever process finished first.
    assert [r["task"] for r in results] == ["text", "speech"]
    # The quick models pass every gate, and the report names the bundle to ship to the default device.
    assert code == 0, [a.get("reasons") for r in results for a in r["artifacts"] if not a["passed"]]
    for result in results:
        rpi4 = result["devices"]["rpi4"]
        assert rpi4["recommended"] in {a["bundle"] for a in result["artifacts"] if a["passed"]}, rpi4["reason"]
    assert "| text | Keras |" in (out / "results.md").read_text()
    assert "in parallel (2 at a time)" in err
    for task in ("text", "speech"):
        log = (out / "logs" / f"{task}.log").read_text()
        assert f"wrote {out}/models/{task}/" in log and "verify: rpi4: ship" in log
        # Each task's lines reach the terminal too, named by their task.
        assert f"[{task}] verify: rpi4: ship {task}-" in err
    # The README block is replaced, the text around it kept.
    text = readme.read_text()
    assert "old" not in text and "| speech | Keras |" in text and text.endswith("after\n")
