"""The fleet report: per host its status and one-line reason, per bundle the release it runs, that
release's golden result and latency on the device; as JSON entries and as a terminal table."""

from __future__ import annotations


def host_entries(action: str, hosts: list[str], data: dict, max_fail_percent: float | None = None) -> list[dict]:
    """One entry per inventory host, from the callback's report (`data`)."""
    seen = data.get("hosts") or {}
    entries = []
    for name in hosts:
        h = seen.get(name)
        if not h or not (h.get("stats") or h.get("unreachable") or h.get("failures")):
            why = "the play stopped before this host"
            if max_fail_percent is not None:
                why += f" (more than {max_fail_percent:g}% of a batch failed)"
            entries.append({"host": name, "status": "not run", "reason": why, "bundles": []})
            continue
        stats = h.get("stats") or {}
        facts = h.get("facts") or {}
        failures = h.get("failures") or []
        if h.get("unreachable"):
            status, reason = "unreachable", h["unreachable"]
        elif failures or stats.get("failures"):
            status = "failed"
            reason = failures[0]["reason"] if failures else "a task failed (see the output above)"
        else:
            status, reason = ("changed" if stats.get("changed") else "ok"), None
        entries.append({
            "host": name, "status": status, "reason": reason,
            "architecture": facts.get("architecture") or facts.get("machine"),
            "python": _python_version(facts.get("python")),
            "libc": " ".join(str(v) for v in (facts.get("libc"), facts.get("libc_version")) if v) or None,
            "systemd": facts.get("systemd"),
            "runtime": (h.get("runtime") or {}).get("runtime") or facts.get("runtime"),
            "changed": stats.get("changed", 0), "stats": stats, "task_seconds": h.get("task_seconds") or {},
            "bundles": [bundle_entry(n, b) for n, b in sorted((h.get("bundles") or {}).items())],
        })
    return entries


def _python_version(python) -> str | None:
    return python.get("version") if isinstance(python, dict) else None


def bundle_entry(name: str, b: dict) -> dict:
    state = b.get("state") or {}
    result = b.get("result") or {}
    if "releases" in result:  # the module's view after its deploy or rollback
        state = result
    record = state.get("record") or {}
    golden = record.get("golden") or {}
    latency = record.get("latency_ms") or {}
    entry = {"bundle": name, "release": state.get("current"), "previous": state.get("previous"),
             "changed": bool(result.get("changed")), "replaced": result.get("replaced"),
             "golden": None if not record else ("pass" if record.get("passed") else "fail"),
             "max_abs_error": golden.get("max_abs_error"), "agreement": golden.get("agreement"),
             "latency_ms": latency or None, "backend": record.get("backend"), "checked": record.get("checked"),
             "error": b.get("error") or result.get("error")}
    if entry["error"] and result.get("release"):
        attempt = result.get("record") or {}
        entry["attempted"] = {"release": result["release"],
                              "golden": None if not attempt else ("pass" if attempt.get("passed") else "fail"),
                              "reasons": (attempt.get("golden") or {}).get("reasons")}
    return entry


def summarize(rows: list[dict]) -> dict:
    count = lambda *states: sum(1 for r in rows if r["status"] in states)  # noqa: E731
    return {"hosts": len(rows), "ok": count("ok", "changed"), "changed": count("changed"),
            "failed": count("failed"), "unreachable": count("unreachable"),
            "not_run": count("not run"), "changed_tasks": sum(r.get("changed", 0) for r in rows)}


def _result_text(host: dict, bundle: dict | None, action: str) -> str:
    if bundle and bundle.get("error"):
        kept = f" (kept {bundle['release']})" if bundle.get("release") else " (nothing deployed)"
        return f"FAILED: {bundle['error']}{kept if action == 'deploy' else ''}"
    if host["status"] in ("failed", "unreachable", "not run"):
        return f"{host['status'].upper()}: {host['reason']}"
    if bundle and bundle.get("changed"):
        was = bundle.get("replaced")
        return {"deploy": "switched" + (f" from {was}" if was else " (first release)"),
                "rollback": f"rolled back from {was}"}.get(action, "changed")
    return "no change" if action != "status" else "ok"


def table(result: dict) -> str:
    action = result["action"]
    rows = [("HOST", "ARCH", "BUNDLE", "RELEASE", "GOLDEN", "P50 MS", "BACKEND", "RESULT")]
    for host in result["hosts"]:
        for bundle in host["bundles"] or [None]:
            b = bundle or {}
            p50 = (b.get("latency_ms") or {}).get("p50")
            rows.append((host["host"], host.get("architecture") or "-", b.get("bundle") or "-",
                         b.get("release") or "-", (b.get("golden") or "-").upper(),
                         f"{p50:.3f}" if isinstance(p50, (int, float)) else "-", b.get("backend") or "-",
                         _result_text(host, bundle, action)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def summary_line(result: dict) -> str:
    s = result["summary"]
    parts = [f"{s['ok']} ok ({s['changed']} changed)", f"{s['failed']} failed"]
    if s["unreachable"]:
        parts.append(f"{s['unreachable']} unreachable")
    if s["not_run"]:
        parts.append(f"{s['not_run']} not run")
    return (f"fleet {result['action']}: {s['hosts']} host{'s' if s['hosts'] != 1 else ''}: {', '.join(parts)}; "
            f"Ansible changed={s['changed_tasks']}; {result['seconds']:.1f} s ({result['seconds_per_host']:.1f} s "
            f"per host)")
