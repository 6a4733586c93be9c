"""Wall time of `bang-nar --help` and of an argument error (`generate --num-beams 0`), each in a fresh interpreter,
and whether either imported torch (docs/cli.md, "Start-up").

    python benchmarks/cli_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {"--help": ["--help"], "argument error": ["generate", "--model", "m", "--num-beams", "0"]}


def measure(argv: list[str], repeats: int) -> tuple[list[float], bool]:
    """Seconds per run of `python -m bang_nar ARGV`, and whether torch was imported (`-X importtime`)."""
    times, imported_torch = [], False
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "bang_nar", *argv], capture_output=True,
                                text=True, check=False)  # fmt: skip
        times.append(time.perf_counter() - start)
        imported_torch |= any(line.rsplit("|", 1)[-1].strip() == "torch" for line in result.stderr.splitlines())
    return times, imported_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| command | median s | min s | max s | imports torch |\n|---|---:|---:|---:|---|")
    for name, argv in COMMANDS.items():
        times, torch_imported = measure(argv, args.repeats)
        print(f"| `bang-nar {' '.join(argv)}` ({name}) | {statistics.median(times):.2f} | {min(times):.2f} | "
              f"{max(times):.2f} | {'yes' if torch_imported else 'no'} |")


if __name__ == "__main__":
    main()
