"""Render verification results: a one-line-per-bundle summary, Markdown (READMEs, pull requests) and a
self-contained HTML page (plots embedded as base64 PNG, no external links: readable offline).

Every function takes a list of results (one per model) as returned by verify.core, so `verify` and
`pipeline` share the same report."""

from __future__ import annotations

import html
import math

from edgekit.core import format_bytes
from edgekit.verify import decoders
from edgekit.verify.plots import MAX_LAYER_ROWS, accuracy_vs_size_png, img_tag, latency_png, layer_error_png

# Formatting -----------------------------------------------------------------------------------------

def fmt_pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def fmt_num(x, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, fmt)


def status_text(entry: dict) -> str:
    if entry["passed"]:
        return "PASS"
    fix = entry.get("fix") or {}
    return "FAIL (fixed)" if fix.get("passed") else "FAIL"


def summary_lines(result: dict) -> list[str]:
    """One line per bundle: PASS/FAIL + reasons, then the overall verdict and warnings."""
    lines = []
    for entry in result["artifacts"]:
        reasons = "; ".join(entry.get("reasons") or [])
        extra = []
        if entry.get("fixed_from"):
            extra.append(f"fix of {entry['fixed_from']}, size {entry['cost']['size_bytes']:+d} B, "
                         f"latency {entry['cost']['latency_ms']:+.3f} ms")
        if entry.get("suggestion"):
            extra.append(entry["suggestion"])
        lines.append(f"{status_text(entry):5} {entry['bundle']}" + (f": {reasons}" if reasons else "")
                     + "".join(f" [{e}]" for e in extra))
    failed = [e["bundle"] for e in result["artifacts"] if not e["passed"] and not e.get("fixed_from")]
    verdict = "PASS" if result["passed"] else "FAIL"
    lines.append(f"{verdict}: {result['task']} model, {len(result['artifacts'])} bundles, "
                 f"{result['samples']} samples" + (f"; failed: {', '.join(failed)}" if failed else ""))
    lines += decoders.summary_lines(result)
    lines += device_lines(result)
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return lines


def device_lines(result: dict) -> list[str]:
    """One line per --device: the bundle to ship there and why (latencies are estimates)."""
    lines = []
    for name, d in (result.get("devices") or {}).items():
        lines.append(f"{name}: ship {d['recommended'] or 'nothing'} (estimate: {d['reason']})")
        lines += _phone_lines(d)
    return lines


def _phone_lines(device: dict) -> list[str]:
    from edgekit.devices.phone import check_lines

    return check_lines(device.get("phone_check") or {})


def device_estimate_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table of host latency (measured) next to device latency (ESTIMATES)."""
    names = list(result.get("devices") or {})
    header = ["bundle", "size", "gate", "host latency (ms, measured)"] + [
        f"{n} latency (ms, ESTIMATE)" for n in names]
    rows = []
    for entry in result["artifacts"]:
        cells = [entry["bundle"], format_bytes(entry.get("size_bytes")), status_text(entry),
                 fmt_num(entry.get("latency_ms"), ".3f")]
        for name in names:
            est = (entry.get("device_estimates") or {}).get(name)
            excluded = next((c.get("excluded") for c in result["devices"][name]["candidates"]
                             if c["bundle"] == entry["bundle"]), None)
            text = (f"~{est['point_ms']:.3g} ({est['low_ms']:.2g}-{est['high_ms']:.2g})" if est else "-")
            if result["devices"][name]["recommended"] == entry["bundle"]:
                text += " ship"
            elif excluded and not est:
                text = "cannot run"
            cells.append(text)
        rows.append(cells)
    return header, rows


# Markdown -------------------------------------------------------------------------------------------

TABLE_HEADER = ("| bundle | size | accuracy | Δ accuracy (pp) | agreement | max abs error | cosine "
                "| latency (ms) | gate |\n|---|---:|---:|---:|---:|---:|---:|---:|---|")


def _table_row(entry: dict) -> str:
    reasons = "; ".join(entry.get("reasons") or [])
    return (f"| {entry['bundle']} | {format_bytes(entry.get('size_bytes'))} | {fmt_pct(entry.get('accuracy'))} "
            f"| {fmt_num(entry.get('accuracy_delta'), '+.2f')} | {fmt_pct(entry.get('agreement'))} "
            f"| {fmt_num(entry.get('max_abs_error'), '.2e')} | {fmt_num(entry.get('cosine'), '.6f')} "
            f"| {fmt_num(entry.get('latency_ms'), '.3f')} | {status_text(entry)}"
            + (f": {reasons}" if reasons else "") + " |")


def _reference_line(result: dict) -> str:
    ref = result["reference"]
    confident = ("confident" if ref.get("confident")
                 else "NOT confident: parity proves little")
    return (f"Reference ({ref['source'].split(':')[0]}): accuracy {fmt_pct(ref.get('accuracy'))} on "
            f"{result['samples']} samples ({result.get('data_source') or '-'}); "
            f"median top-1 margin {fmt_num(ref.get('confidence_margin'), '.3f')} ({confident}).")


def markdown_section(result: dict, level: int = 2) -> str:
    head = "#" * level
    out = [f"{head} {result['task']}: {'PASS' if result['passed'] else 'FAIL'}", "",
           _reference_line(result), "", TABLE_HEADER]
    out += [_table_row(e) for e in result["artifacts"]]
    if any(e.get("utterance_agreement") is not None for e in result["artifacts"]):
        out += ["", "Speech: agreement is per frame; per utterance: " + ", ".join(
            f"{e['bundle']} {fmt_pct(e.get('utterance_agreement'))}" for e in result["artifacts"]
            if e.get("utterance_agreement") is not None) + "."]
    for entry in result["artifacts"]:
        table = entry.get("layers") or {}
        if table.get("tensors"):
            what = ("SNR vs the float model, lowest first" if table.get("metric") == "snr_db"
                    else "RMSE/scale, highest first; ~0.29 is ideal rounding")
            out += ["", f"Worst int8 tensors of {entry['bundle']} ({what}):", "",
                    "| tensor | op | RMSE/scale | SNR (dB) |", "|---|---|---:|---:|"]
            out += [f"| `{r['tensor'][:80]}` | {r['op']} | {fmt_num(r.get('rmse_over_scale'), '.3f')} "
                    f"| {fmt_num(r.get('snr_db'), '.1f')} |" for r in table["tensors"][:5]]
        elif table.get("skipped"):
            out += ["", f"Per-layer error of {entry['bundle']}: skipped ({table['skipped']})."]
        if entry.get("fixed_from"):
            cost = entry["cost"]
            out += ["", f"Fix: {entry['bundle']} keeps {len(entry.get('keep_float', []))} tensors of "
                        f"{entry['fixed_from']} in float: {status_text(entry)}, size {cost['size_bytes']:+d} B "
                        f"(x{cost['size_ratio']:.2f}), latency {cost['latency_ms']:+.3f} ms."]
        elif entry.get("suggestion"):
            out += ["", f"{entry['bundle']}: {entry['suggestion']}."]
    out += decoders.markdown_lines(result)
    if result.get("devices"):
        header, rows = device_estimate_rows(result)
        out += ["", "Device latency: ESTIMATES from a cost model calibrated on published figures "
                    "(`edgekit devices estimate`; docs/estimates.md), next to the latency measured on this host.",
                "", "| " + " | ".join(header) + " |", "|---|---:|---|" + "---:|" * (len(header) - 3)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out += [""] + [f"- **{name}**: ship **{d['recommended'] or 'nothing'}**: {d['reason']}"
                       for name, d in result["devices"].items()]
        out += [f"- {line}" for d in result["devices"].values() for line in _phone_lines(d)]
    if result.get("warnings"):
        out += [""] + [f"> warning: {w}" for w in result["warnings"]]
    return "\n".join(out) + "\n"


def markdown_report(results: list[dict], title: str = "edgekit verification") -> str:
    verdict = "PASS" if all(r["passed"] for r in results) else "FAIL"
    parts = [f"# {title}: {verdict}\n"] + [markdown_section(r) for r in results]
    return "\n".join(parts)


# HTML -----------------------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}td.num{text-align:right}.pass{color:#186a1f;font-weight:bold}
.fail{color:#b00020;font-weight:bold}.warn{background:#fff4d6;padding:6px 10px;border-left:4px solid #e0a000}
code{font-size:12px}img{max-width:100%}"""


def _html_row(entry: dict) -> str:
    cls = "pass" if entry["passed"] else "fail"
    reasons = html.escape("; ".join(entry.get("reasons") or []))
    cells = [html.escape(entry["bundle"]), format_bytes(entry.get("size_bytes")), fmt_pct(entry.get("accuracy")),
             fmt_num(entry.get("accuracy_delta"), "+.2f"), fmt_pct(entry.get("agreement")),
             fmt_num(entry.get("max_abs_error"), ".2e"), fmt_num(entry.get("cosine"), ".6f"),
             fmt_num(entry.get("snr_db"), ".1f"), fmt_num(entry.get("latency_ms"), ".3f")]
    tds = "".join(f'<td class="num">{c}</td>' if i else f"<td>{c}</td>" for i, c in enumerate(cells))
    return f'<tr>{tds}<td class="{cls}">{status_text(entry)}</td><td>{reasons}</td></tr>'


def html_section(result: dict) -> str:
    verdict = "PASS" if result["passed"] else "FAIL"
    parts = [f'<h2>{html.escape(result["task"])}: <span class="{verdict.lower()}">{verdict}</span></h2>',
             f"<p>{html.escape(_reference_line(result))}</p>"]
    parts += [f'<p class="warn">warning: {html.escape(w)}</p>' for w in result.get("warnings", [])]
    parts.append("<table><tr><th>bundle</th><th>size</th><th>accuracy</th><th>Δ accuracy (pp)</th>"
                 "<th>agreement</th><th>max abs error</th><th>cosine</th><th>SNR (dB)</th>"
                 "<th>latency (ms)</th><th>gate</th><th>reasons</th></tr>"
                 + "".join(_html_row(e) for e in result["artifacts"]) + "</table>")
    parts += decoders.html_parts(result)
    if result.get("devices"):
        header, rows = device_estimate_rows(result)
        parts.append("<h3>Device latency (ESTIMATES)</h3><p>Estimated from a cost model calibrated on "
                     "published figures (<code>edgekit devices estimate</code>), next to the latency "
                     "measured on this host. Ranges in parentheses.</p>")
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
            "<tr>" + "".join(f'<td class="num">{html.escape(c)}</td>' if i else f"<td>{html.escape(c)}</td>"
                             for i, c in enumerate(r)) + "</tr>" for r in rows) + "</table>")
        parts.append("<ul>" + "".join(
            f"<li><b>{html.escape(name)}</b>: ship <b>{html.escape(d['recommended'] or 'nothing')}</b>: "
            f"{html.escape(d['reason'])}</li>" for name, d in result["devices"].items())
            + "".join(f"<li>{html.escape(line)}</li>" for d in result["devices"].values()
                      for line in _phone_lines(d)) + "</ul>")
    parts.append(img_tag(accuracy_vs_size_png(result), f"{result['task']} accuracy vs size"))
    parts.append(img_tag(latency_png(result), f"{result['task']} latency per variant"))
    for entry in result["artifacts"]:
        table = entry.get("layers") or {}
        if table.get("tensors"):
            parts.append(f"<h3>Per-layer int8 error: {html.escape(entry['bundle'])}</h3>")
            parts.append(img_tag(layer_error_png(entry), f"{entry['bundle']} per-layer error"))
            parts.append("<table><tr><th>tensor</th><th>op</th><th>RMSE/scale</th><th>SNR (dB)</th>"
                         "<th>max abs error</th></tr>" + "".join(
                             f"<tr><td><code>{html.escape(r['tensor'])}</code></td><td>{html.escape(r['op'])}</td>"
                             f"<td class=num>{fmt_num(r.get('rmse_over_scale'), '.3f')}</td>"
                             f"<td class=num>{fmt_num(r.get('snr_db'), '.1f')}</td>"
                             f"<td class=num>{fmt_num(r.get('max_abs_error'), '.3g')}</td></tr>"
                             for r in table["tensors"][:MAX_LAYER_ROWS]) + "</table>")
        elif table.get("skipped"):
            parts.append(f"<p>Per-layer error of {html.escape(entry['bundle'])}: skipped "
                         f"({html.escape(table['skipped'])}).</p>")
        if entry.get("suggestion"):
            parts.append(f"<p>{html.escape(entry['bundle'])}: {html.escape(entry['suggestion'])}.</p>")
        if entry.get("fixed_from"):
            cost = entry["cost"]
            parts.append(f"<p>Fix: <b>{html.escape(entry['bundle'])}</b> keeps "
                         f"{len(entry.get('keep_float', []))} tensors of {html.escape(entry['fixed_from'])} "
                         f"in float: {status_text(entry)}; size {cost['size_bytes']:+d} B "
                         f"(x{cost['size_ratio']:.2f}), latency {cost['latency_ms']:+.3f} ms.</p>")
    return "\n".join(parts)


def html_report(results: list[dict], title: str = "edgekit verification") -> str:
    verdict = "PASS" if all(r["passed"] for r in results) else "FAIL"
    body = "\n".join(html_section(r) for r in results)
    created = html.escape(results[0].get("created", "")) if results else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}: "
            f'<span class="{verdict.lower()}">{verdict}</span></h1><p>Created {created}. '
            "Accuracy delta is the bundle minus Keras in percentage points; agreement is the share of "
            "rows with Keras' top-1 class; latency is the median per sample on the machine that ran "
            f"the report.</p>\n{body}\n</body></html>\n")
