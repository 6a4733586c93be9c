"""One prepared GPU run (issue 7): the speed grid and a short quality run, within ~8 minutes on one CUDA GPU.

It calls the other benchmark scripts as subprocesses, each under a time cap, so one slow part cannot eat the
budget of the next, and prints their tables plus one summary JSON line:
1. `speed.py --grid full --device cuda` (base and small, batch 1 and 32, source 64 and 256; training steps on the
   base size), target on a GPU: NAR >= 15x faster than AR beam 4 at batch 1;
2. `quality.py` on Du 2017 QG with the BERT vocabulary and a small model trained for a few minutes (still a smoke
   test; `quality.py --full` is the long GPU run).

    python benchmarks/gpu.py                       # on a CUDA machine (about 8 minutes)
    python benchmarks/gpu.py --device cpu --quick  # the same flow on a CPU, as a < 5 min check of the script

Results: `results/speed_<tag>.json|png`, `results/quality_<tag>.json|png` (tag `gpu`, or `gpu_cpu_quick`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, arguments: list[str], timeout_s: float) -> dict:
    """Run `script` with `arguments`; stream its output; return its last JSON line (or why there is none)."""
    command = [sys.executable, str(HERE / script), *arguments]
    print(f"\n$ {' '.join(command[1:])}  (cap {timeout_s:.0f}s)", flush=True)
    started = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"")[-3000:]
        print(tail.decode() if isinstance(tail, bytes) else tail)
        return {"script": script, "error": f"timed out after {timeout_s:.0f}s"}
    print(out.stdout[-20000:])
    if out.returncode != 0:
        print(out.stderr[-5000:], file=sys.stderr)
        return {"script": script, "error": f"exit code {out.returncode}"}
    last = [line for line in out.stdout.splitlines() if line.startswith("{")]
    result = json.loads(last[-1]) if last else {"error": "no JSON line"}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="Smallest settings (to check the flow on a CPU).")
    parser.add_argument("--speed-cap-s", type=float, default=260)
    parser.add_argument("--quality-cap-s", type=float, default=200)
    parser.add_argument("--data-dir", default=None, help="Folder holding du2017_qg/ (default: quality.py's).")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("No CUDA device: run with --device cpu --quick to check the script, or on a GPU machine.")
            return 2
    tag = "gpu" + ("" if args.device.startswith("cuda") else f"_{args.device}") + ("_quick" if args.quick else "")
    if args.quick:
        speed_args = ["--quick", "--device", args.device, "--tag", tag]
        quality_args = ["--quick", "--datasets", "du2017_qg", "--device", args.device, "--tag", tag]
    else:
        speed_args = ["--grid", "full", "--device", args.device, "--repeats", "10", "--warmup", "2",
                      "--cell-budget-s", "25", "--train-size", "base", "--train-batch", "32", "--train-steps", "6",
                      "--tag", tag]  # fmt: skip
        quality_args = ["--datasets", "du2017_qg", "--vocab", "bert", "--size", "small", "--ar-steps", "1500",
                        "--steps", "500", "--batch-size", "64", "--lr", "5e-4", "--eval-batch", "250",
                        "--distil-batch", "512", "--train-limit", "10570", "--eval-limit", "2000",
                        "--device", args.device, "--tag", tag]  # fmt: skip
    if args.data_dir:
        quality_args += ["--data-dir", args.data_dir]
    started = time.perf_counter()
    speed = run("speed.py", speed_args, args.speed_cap_s)
    quality = run("quality.py", quality_args, args.quality_cap_s)
    summary = {"benchmark": "gpu", "device": args.device, "tag": tag, "total_s": round(time.perf_counter() - started, 1),
               "speed": speed, "quality": quality}  # fmt: skip
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if "error" not in speed and "error" not in quality else 1


if __name__ == "__main__":
    raise SystemExit(main())
