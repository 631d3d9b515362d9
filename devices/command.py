"""`edgekit devices list | show NAME | check NAME BUNDLE... | estimate NAME BUNDLE`."""

from __future__ import annotations

import json

from edgekit.runtime import profiles


def list_table(all_profiles: list[dict]) -> str:
    rows = [("NAME", "ARCH", "CPU", "CORES", "THREADS", "BACKENDS", "PREFERRED", "EMULATED")]
    for p in all_profiles:
        q = p.get("qemu")
        rows.append((p["name"], p["arch"], p["cpu"].split(",")[0], str(p["cores"]), str(p["default_threads"]),
                     ",".join(p["backends"]), f"{p['preferred']['format']}/{p['preferred']['variant']}",
                     f"{q['binary']} -cpu {q['cpu']}" if q else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def show_text(p: dict) -> str:
    q = p.get("qemu")
    lines = [
        f"{p['name']}: {p['title']}",
        f"  arch             {p['arch']}",
        f"  cpu              {p['cpu']}",
        f"  cores            {p['cores']} (default threads {p['default_threads']})",
        f"  os               {p.get('os', '-')}",
        f"  backends         {', '.join(p['backends'])}",
        f"  preferred        {p['preferred']['format']} {p['preferred']['variant']}",
        f"  memory budget    {p['memory_mb']} MB",
    ]
    if q:
        lines += [
            f"  emulation        {q['binary']} -cpu {q['cpu']}, Debian {q['debian_suite']} {q['debian_arch']} "
            f"{q['python']}",
            f"  wheels           {', '.join(q['wheels']) or '-'}"
            + (f" (+ Debian {', '.join(q['debian_packages'])})" if q.get("debian_packages") else ""),
            f"  wheel platforms  {', '.join(q['python_platform_tags'])}",
        ]
    else:
        lines.append("  emulation        none")
    if p.get("notes"):
        lines.append(f"  notes            {p['notes']}")
    model = p.get("cost_model")
    if model:
        rates = ", ".join(f"{k} {v}" for k, v in model["gmacs_per_core"].items())
        lines += [f"  cost model       GMAC/s per core: {rates}; {model['gbytes_per_s_per_core']} GB/s per core; "
                  f"{model['op_overhead_us']} us per op (for ESTIMATES: `edgekit devices estimate`)",
                  f"  cost model basis {model['basis']}"]
    if p["reference_figures"]:
        lines.append("  published reference figures (not measured by edgekit unless stated):")
        for f in p["reference_figures"]:
            extra = ", ".join(str(f[k]) for k in ("threads", "runtime", "os") if f.get(k))
            lines.append(f"    - {f['model']}: {f['latency_ms']} ms ({extra})")
            lines.append(f"      published by {f['published_by']}")
            lines.append(f"      source: {f['source']}")
    else:
        lines.append("  published reference figures: none recorded")
    return "\n".join(lines)


def run(args) -> int:
    action = args.devices_command
    if action == "list":
        print(list_table(profiles.load_all()))
        return 0
    if action == "show":
        profile = profiles.load(args.name)
        print(show_text(profile))
        return 0
    if action == "check":  # a phone runs bundles through MediaPipe Tasks (devices/phone.py), a board under QEMU
        from edgekit.devices import check, phone

        return (phone if phone.is_phone(profiles.load(args.name)) else check).run(args)
    if action == "estimate":
        from edgekit.devices import estimate

        return estimate.run(args)
    raise ValueError(f"unknown devices action {action!r}")  # argparse prevents this


def dumps(profile: dict) -> str:  # pragma: no cover - convenience for scripts
    return json.dumps(profile, indent=2)
