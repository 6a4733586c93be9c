"""Eager vs SDPA attention on BANG base (random weights): exactness and speed, to choose the default (issue 23).

    python benchmarks/attention.py [--device cpu] [--repeats 5]
    python benchmarks/attention.py --cells 1x64,8x64,1x512,8x512 --repeats 3   # generate per (batch x source)

Both models come from the same seed. Prints max |Δlogits| of a teacher-forced AR and a NAR forward (batch 8, source
64, target 32), whether greedy AR tokens agree, and the median forward / greedy-generate seconds per implementation.
With `--cells`: for each (batch, source length), `generate` in AR greedy (20 forced tokens) and NAR (24 slots) mode,
eager and SDPA interleaved, process CPU time on a CPU, outputs checked equal; one source row is a quarter padding.
"""

import argparse
import statistics
import time

import torch

from bang_nar import BangConfig, BangForConditionalGeneration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cells", default=None, help="Comma list of BATCHxSOURCE cells for the generate part.")
    args = parser.parse_args()
    if args.cells:
        return generate_cells(args)
    config = BangConfig(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    source = torch.randint(1000, 30000, (8, 64), generator=generator).to(args.device)
    labels = torch.randint(1000, 30000, (8, 32), generator=generator).to(args.device)
    results = {}
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = BangForConditionalGeneration(config).to(args.device).eval()
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            for mode in ("ar", "nar"):
                logits = model(input_ids=source, labels=labels, mode=mode).logits
                seconds = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    model(input_ids=source, labels=labels, mode=mode)
                    if args.device != "cpu":
                        torch.cuda.synchronize()
                    seconds.append(time.perf_counter() - start)
                results[implementation, mode] = logits, statistics.median(seconds)
            tokens = model.generate(source[:2], mode="ar", max_new_tokens=16, num_beams=1, do_sample=False)
            start = time.perf_counter()
            model.generate(source[:2], mode="ar", max_new_tokens=16, num_beams=1, do_sample=False)
            results[implementation, "generate"] = tokens, time.perf_counter() - start
    print("| measure | eager | sdpa |\n|---|---|---|")
    for mode in ("ar", "nar"):
        error = (results["eager", mode][0] - results["sdpa", mode][0]).abs().max().item()
        print(
            f"| {mode} forward, median s (max abs logit diff {error:.1e}) | {results['eager', mode][1]:.3f} "
            f"| {results['sdpa', mode][1]:.3f} |"
        )
    same = torch.equal(results["eager", "generate"][0], results["sdpa", "generate"][0])
    print(
        f"| greedy generate, 2 rows x 16 tokens, s (tokens equal: {same}) | {results['eager', 'generate'][1]:.3f} "
        f"| {results['sdpa', 'generate'][1]:.3f} |"
    )


def generate_cells(args: argparse.Namespace) -> None:
    """Eager vs SDPA `generate` per (batch, source length): medians of interleaved repeats after one warm-up."""
    config = BangConfig(max_position_embeddings=512, forced_eos_token_id=None)
    models = {}
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        models[implementation] = BangForConditionalGeneration(config).to(args.device).eval()
        models[implementation].set_attn_implementation(implementation)
    clock = time.process_time if args.device == "cpu" else time.perf_counter
    modes = {"ar": {"min_new_tokens": 20, "max_new_tokens": 20, "num_beams": 1, "do_sample": False},
             "nar": {"max_new_tokens": 24}}  # fmt: skip
    print("| batch x source | mode | eager s | sdpa s | eager / sdpa |\n|---|---|---:|---:|---:|")
    for cell in args.cells.split(","):
        batch, length = (int(v) for v in cell.split("x"))
        generator = torch.Generator().manual_seed(0)
        source = torch.randint(1000, 30000, (batch, length), generator=generator)
        source[:, -1] = config.eos_token_id
        mask = torch.ones_like(source)
        mask[0, : length // 4] = 0
        source, mask = source.to(args.device), mask.to(args.device)
        for mode, options in modes.items():
            seconds: dict[str, list[float]] = {"eager": [], "sdpa": []}
            with torch.no_grad():
                outputs = {
                    name: m.generate(source, attention_mask=mask, mode=mode, **options) for name, m in models.items()
                }
                assert torch.equal(outputs["eager"], outputs["sdpa"]), (cell, mode)
                for _ in range(args.repeats):
                    for name, model in models.items():
                        start = clock()
                        model.generate(source, attention_mask=mask, mode=mode, **options)
                        if args.device != "cpu":
                            torch.cuda.synchronize()
                        seconds[name].append(clock() - start)
            eager, sdpa = statistics.median(seconds["eager"]), statistics.median(seconds["sdpa"])
            print(f"| {batch} x {length} | {mode} | {eager:.3f} | {sdpa:.3f} | {eager / sdpa:.2f} |", flush=True)


if __name__ == "__main__":
    main()
