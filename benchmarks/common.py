"""Shared plumbing of the benchmark scripts: machine description, paired timing, tables, result files.

Imported by the scripts in this folder only (they run as `python benchmarks/<name>.py`, which puts this folder on
`sys.path`); no test or model file imports it (docs/benchmarks.md#the-scripts).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


# ---- machine ---------------------------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: str) -> dict[str, Any]:
    """Where and with what the numbers were produced; `loadavg` is sampled now (call again at the end)."""
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host_cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "git_commit": _git_commit(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def finish_machine_info(info: dict[str, Any]) -> dict[str, Any]:
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return info


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


# ---- timing ----------------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def paired_timings(
    fns: Mapping[str, Callable[[], Any]], *, warmup: int, repeats: int, device: str, time_budget_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of every function, measured round-robin: repeat r runs each function once, in turn.

    On a shared machine the load drifts; interleaving exposes every method to the same drift, so the per-repeat
    ratios (see `paired_ratio`) are much steadier than ratios of separately measured medians. After the first
    measured round, rounds stop early once `time_budget_s` is spent (at least one round always runs). `clock`:
    wall time by default; `time.process_time` (CPU time of this process) barely moves with other processes' load.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for r in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = clock()
            fn()
            _sync(device)
            times[name].append(clock() - t0)
        if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
            break
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over repeats of numerator[r] / denominator[r] (both timed in the same round)."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# ---- output ----------------------------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], digits: int = 2) -> str:
    """`columns` = [(key, title)]; floats get `digits` decimals, None shows as n/a."""

    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def display_path(path: str | os.PathLike) -> str:
    """A path as results record it: relative to the repository root (`benchmarks/results/x.json`,
    `../shared/data`), so committed results name no folder of the machine they ran on. Relative paths stay as given.
    An absolute path outside the repository's parent folder keeps only its last two parts (`demo_qg/nar_spmd`): a
    relative path climbing up to the machine's root folders would name that machine's folders all the same."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    relative = os.path.relpath(path, REPO_ROOT)
    return relative if not relative.startswith(os.path.join(os.pardir, os.pardir)) else str(Path(*path.parts[-2:]))


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def print_json_line(payload: Any) -> None:
    """The one machine-readable line every benchmark prints last."""
    print(json.dumps(payload, default=str, separators=(",", ":")))


def save_plot(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as a small PNG (the README embeds these; keep each well under 300 KB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path
