"""Eager vs SDPA attention on BANG base (random weights): exactness and speed, to choose the default (issue 23).

    python benchmarks/attention.py [--device cpu] [--repeats 5]

Both models come from the same seed. Prints max |Δlogits| of a teacher-forced AR and a NAR forward (batch 8, source
64, target 32), whether greedy AR tokens agree, and the median forward / greedy-generate seconds per implementation.
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
    args = parser.parse_args()
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
        print(f"| {mode} forward, median s (max abs logit diff {error:.1e}) | {results['eager', mode][1]:.3f} "
              f"| {results['sdpa', mode][1]:.3f} |")
    same = torch.equal(results["eager", "generate"][0], results["sdpa", "generate"][0])
    print(f"| greedy generate, 2 rows x 16 tokens, s (tokens equal: {same}) | {results['eager', 'generate'][1]:.3f} "
          f"| {results['sdpa', 'generate'][1]:.3f} |")


if __name__ == "__main__":
    main()
