"""Byte counts for people: one formatter, binary units named as such (KiB, MiB, GiB), the units the
device profiles' memory budgets (`memory_mb`, MiB) and `peak_rss_mb` (MiB, from the kernel's KiB) use."""

from __future__ import annotations


def format_bytes(n: int | float | None) -> str:
    """1536 -> '1.5 KiB'; None -> '-'."""
    if n is None:
        return "-"
    n = float(n)
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {unit}" if abs(n) < 10 * factor else f"{n / factor:.1f} {unit}"
    return f"{int(n)} B"
