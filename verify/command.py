"""`edgekit verify MODEL ARTIFACTS_DIR [...]` (MODEL: a model directory or a .keras file) and
`edgekit verify --golden FILE ARTIFACTS_DIR`.

Exit 0 when every bundle passes its gate, 1 when any fails (the summary says which and why).
"""

from __future__ import annotations

from pathlib import Path

from edgekit.core import UserError, atomic_write_json, atomic_write_text, log
from edgekit.verify.gates import parse_overrides
from edgekit.verify.report import html_report, markdown_report, summary_lines


def run(args) -> int:
    overrides = parse_overrides(getattr(args, "gate", None))
    devices = list(getattr(args, "devices", None) or [])
    if devices:  # an unknown device name fails now, not after minutes of verification
        from edgekit.verify.recommend import check_devices

        check_devices(devices)
    paths = list(args.paths)
    if args.golden:
        for flag in ("data", "save_golden", "fix"):
            if getattr(args, flag, None):
                raise UserError(f"--{flag.replace('_', '-')} needs the Keras model; it cannot be "
                                "combined with --golden")
        if len(paths) != 1:
            raise UserError("with --golden, pass only the ARTIFACTS_DIR (or one bundle)")
        from edgekit.verify.core import verify_with_golden

        result = verify_with_golden(args.golden, paths[0], gate_overrides=overrides,
                                    max_samples=args.max_samples)
    else:
        if len(paths) != 2:
            raise UserError("expected MODEL ARTIFACTS_DIR (or --golden FILE ARTIFACTS_DIR)")
        from edgekit.verify.core import verify_with_keras

        result = verify_with_keras(
            paths[0], paths[1], data=args.data, text_column=args.text_column,
            label_column=args.label_column, gate_overrides=overrides, max_samples=args.max_samples,
            fix=args.fix, save_golden_to=args.save_golden, allow_unsafe=args.allow_unsafe)
    if devices:
        from edgekit.verify.recommend import recommend

        photos = args.data if args.data and Path(args.data).is_dir() else None  # the phone check's photos
        recommend(result, devices, data=photos)
    write_outputs([result], json_path=args.json_path, html_path=args.html, markdown_path=args.markdown,
                  title=f"edgekit verify: {result['task']}")
    for line in summary_lines(result):
        log(line)
    if result["written"]:
        log("wrote: " + ", ".join(result["written"]))
    return 0 if result["passed"] else 1


def write_outputs(results: list[dict], *, json_path=None, html_path=None, markdown_path=None,
                  title: str = "edgekit verification") -> list[str]:
    """Atomically write the requested reports; record the paths in every result's `written`."""
    written = []
    if markdown_path:
        written.append(str(markdown_path))
    if html_path:
        written.append(str(html_path))
    if json_path:
        written.append(str(json_path))
    for result in results:
        result["written"] = list(dict.fromkeys(result.get("written", []) + written))
    if markdown_path:
        atomic_write_text(markdown_path, markdown_report(results, title))
    if html_path:
        atomic_write_text(html_path, html_report(results, title))
    if json_path:
        atomic_write_json(json_path, results[0] if len(results) == 1 else {"results": results})
    return written
