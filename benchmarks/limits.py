"""File-descriptor limit: raise the soft limit to what the run needs, say so if not."""

from __future__ import annotations

import resource


def raise_nofile(wanted: int) -> tuple[int, str | None]:
    """Raise RLIMIT_NOFILE towards `wanted`; returns (limit now, warning or None)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft, None
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        return soft, f"could not raise the open-file limit from {soft} to {wanted}: {exc}"
    if target < wanted:
        return target, (
            f"open-file limit is {target} (hard limit), the run wants {wanted}: "
            "raise it with `ulimit -n` or limits.conf"
        )
    return target, None
