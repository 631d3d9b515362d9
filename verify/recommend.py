"""The bundle to ship to each device: of the bundles that pass their gates, can run there (the profile
has a backend for their format) and fit its memory budget, the fastest by ESTIMATE (edgekit.devices.
estimate); estimates within TIE of the fastest count as a tie, broken by the smaller file.

`recommend(result, devices)` fills `result["devices"][NAME] = {"recommended": bundle name or None,
"reason": ..., "estimate": True, "candidates": [...]}` and each entry's `device_estimates[NAME]`.
"""

from __future__ import annotations

from edgekit.core import first_line, log
from edgekit.devices import phone
from edgekit.devices.estimate import count_work, estimate
from edgekit.runtime import formats, profiles

# Estimates closer than this (relative) are a tie: the model's held-out error is larger than that.
TIE = 0.05


def check_devices(names: list[str]) -> list[dict]:
    """The profiles for --device names (raises the one-line SettingsError for an unknown name)."""
    return [profiles.load(name) for name in dict.fromkeys(names)]


def _candidate(entry: dict, profile: dict, work_cache: dict) -> dict:
    row = {"bundle": entry["bundle"], "format": entry.get("format"), "variant": entry.get("variant"),
           "size_bytes": entry.get("size_bytes"), "passed": bool(entry.get("passed"))}
    unsupported = profiles.format_unsupported_by(profile, str(entry.get("format")))
    if unsupported:
        row["excluded"] = unsupported
        return row
    try:
        if entry["path"] not in work_cache:
            work_cache[entry["path"]] = count_work(entry["path"])
        est = estimate(profile, entry["path"], work=work_cache[entry["path"]])
    except Exception as exc:  # noqa: BLE001 - one unreadable bundle must not sink the others
        row["excluded"] = f"cannot estimate: {first_line(exc)}"
        return row
    row.update(point_ms=est["point_ms"], low_ms=est["low_ms"], high_ms=est["high_ms"], estimate=True,
               threads=est["threads"], memory_bytes=est["memory"]["total_bytes"])
    entry.setdefault("device_estimates", {})[profile["name"]] = {
        "estimate": True, "point_ms": est["point_ms"], "low_ms": est["low_ms"], "high_ms": est["high_ms"],
        "threads": est["threads"], "memory_bytes": est["memory"]["total_bytes"], "basis": est["basis"]}
    if not entry.get("passed"):
        reasons = "; ".join(entry.get("reasons") or []) or "gate failed"
        row["excluded"] = f"fails its gate ({reasons})"
    elif not est["memory"]["fits"]:
        row["excluded"] = (f"needs ~{est['memory']['total_bytes'] >> 20} MB (estimate), over the "
                           f"{profile['memory_mb']} MB budget")
    return row


def _phone_check(result: dict, profile: dict, candidates: list[dict], data=None) -> dict | None:
    """On a phone, apps run a bundle through MediaPipe Tasks: the image bundles still in the running go
    through it on held-out photos (edgekit.devices.phone; `data`: verify's --data photo folder), and one
    that disagrees with edgekit's runtime on the same pixels is excluded, with the failure named
    (pipeline or int8 kernels). Other kinds are skipped by the check itself, with the reason."""
    paths = [e["path"] for e, c in zip(result["artifacts"], candidates, strict=True)
             if "excluded" not in c and _phone_apps_run(e.get("format"))]
    if not paths:
        return None
    check = phone.check(profile["name"], paths, with_keras=False, data=data)
    verdicts = {r["bundle"]: r for r in check["results"] if r.get("status") != "skipped"}
    for c in candidates:
        r = verdicts.get(c["bundle"])
        if r is not None and not r.get("passed") and "excluded" not in c:
            agreement = (r.get("overall") or {}).get("agreement_edgekit")
            why = r.get("error") or (f"{r.get('failure') or 'disagrees'}: agrees with edgekit's runtime on "
                                     f"{100 * (agreement or 0):.1f}% of photos given the same pixels")
            c["excluded"] = f"fails the MediaPipe Tasks phone check ({why})"
    return check


def _phone_apps_run(fmt) -> bool:
    found = formats.FORMATS.get(str(fmt))
    return bool(found and found.phone_apps)


def choose(candidates: list[dict]) -> tuple[dict | None, str]:
    """The candidate to ship and why (pure: tests call it on hand-built rows)."""
    eligible = [c for c in candidates if "excluded" not in c]
    if not eligible:
        why = "; ".join(f"{c['bundle']}: {c['excluded']}" for c in candidates) or "no bundles"
        return None, f"no bundle passes its gates and runs there ({why})"
    fastest = min(c["point_ms"] for c in eligible)
    tied = [c for c in eligible if c["point_ms"] <= fastest * (1 + TIE)]
    best = min(tied, key=lambda c: (c.get("size_bytes") or 0, c["point_ms"], c["bundle"]))
    others = sorted((c for c in eligible if c is not best), key=lambda c: c["point_ms"])
    reason = (f"passes its gates; fastest by estimate: {best['point_ms']:.3g} ms (estimate, range "
              f"{best['low_ms']:.3g}-{best['high_ms']:.3g} ms, {best['threads']} threads)")
    if len(tied) > 1:
        reason += (f"; within {100 * TIE:.0f}% of {', '.join(c['bundle'] for c in tied if c is not best)}, "
                   f"so the smaller file wins ({best.get('size_bytes')} B)")
    if others:
        nxt = others[0]
        reason += f"; next: {nxt['bundle']} at {nxt['point_ms']:.3g} ms (estimate)"
    excluded = [c for c in candidates if "excluded" in c]
    if excluded:
        reason += "; excluded: " + ", ".join(f"{c['bundle']} ({c['excluded'].split(' (')[0]})" for c in excluded)
    return best, reason


def recommend(result: dict, devices: list[str], data=None) -> dict:
    """Add `devices` to a verification result (see the module docstring); returns that mapping.
    `data`: a folder of photos for the phone check (default: the model's held-out photos)."""
    work_cache: dict = {}
    out = result.setdefault("devices", {})
    for profile in check_devices(devices):
        candidates = [_candidate(e, profile, work_cache) for e in result["artifacts"]]
        phone_check = _phone_check(result, profile, candidates, data) if phone.is_phone(profile) else None
        best, reason = choose(candidates)
        out[profile["name"]] = {"recommended": best["bundle"] if best else None, "reason": reason,
                                "estimate": True, "threads": profile["default_threads"],
                                "candidates": candidates}
        if phone_check is not None:
            out[profile["name"]]["phone_check"] = phone_check
        log(f"verify: {profile['name']}: " + (f"ship {best['bundle']}" if best else "nothing to ship")
            + f" ({reason})")
    return out
