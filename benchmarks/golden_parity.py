"""Max-abs error of bang-nar against the original fairseq BANG outputs (../shared/golden), per tensor.

    python benchmarks/golden_parity.py [--golden-dir ../shared/golden/bang_tiny] [--attn eager,sdpa]

Prints a Markdown table (one error column per attention implementation) and one JSON line. The pass/fail checks live in tests/test_golden_parity.py.
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from bang_nar.convert_bang_original_checkpoint import convert_bang_checkpoint

SETS = {"main": ("checkpoint.pt", "cases.safetensors"), "heads12_long": ("checkpoint_heads12_long.pt", "cases_heads12_long.safetensors")}


def stored(logits: torch.Tensor, case: dict, name: str) -> torch.Tensor:
    """Our logits in the stored form: full (main set) or the vocabulary subset (long set)."""
    return logits if name in case else logits[..., case["logit_vocab_ids"]]


def key(case: dict, name: str) -> str:
    return name if name in case else f"{name}_subset"


@torch.no_grad()
def measure(golden_dir: Path, attn_implementation: str = "eager") -> list[dict]:
    rows = []
    for set_name, (checkpoint, cases) in SETS.items():
        model = convert_bang_checkpoint(golden_dir / checkpoint)
        model.set_attn_implementation(attn_implementation)
        case = load_file(golden_dir / cases)
        src = case["src_tokens_right_padded"]
        mask = src.ne(0).long()
        prev, target = case["prev_output_tokens"], case["target"]
        real = target.ne(0)

        def add(name, ours, expected, where):
            rows.append({"set": set_name, "tensor": name, "max_abs_error": (ours - expected)[where].abs().max().item()})

        enc = model.get_encoder()(input_ids=src, attention_mask=mask).last_hidden_state
        add("encoder_out", enc, case["encoder_out_right_aligned"], mask.bool())
        ar = model(input_ids=src, attention_mask=mask, decoder_input_ids=prev, use_cache=False, output_hidden_states=True)
        add("ar_logits", stored(ar.logits, case, "ar_logits"), case[key(case, "ar_logits")], real)
        add("ar_main_stream_hidden", ar.main_stream_hidden_state, case["ar_main_stream_hidden"], real)
        encoder_outputs = model.get_encoder()(input_ids=src, attention_mask=mask)
        cache, steps = None, []
        for t in range(prev.size(1)):
            out = model(attention_mask=mask, encoder_outputs=encoder_outputs, decoder_input_ids=prev[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
        add("ar_incremental_logits", stored(torch.cat(steps, 1), case, "ar_incremental_logits"), case[key(case, "ar_incremental_logits")], real)
        nar = model(input_ids=src, attention_mask=mask, decoder_input_ids=prev, mode="nar")
        add("nar_logits", stored(nar.logits, case, "nar_logits"), case[key(case, "nar_logits")], prev.ne(0))
        long_input = case["nar_long_decoder_input"]
        nar_long = model(input_ids=src, attention_mask=mask, decoder_input_ids=long_input, mode="nar")
        add(f"nar_long_logits (T={long_input.size(1)})", stored(nar_long.logits, case, "nar_long_logits"), case[key(case, "nar_long_logits")], long_input.bool())
        ntokens = float(case["ntokens"].reshape(-1)[0])
        for mode in ("ar", "nar"):
            # BANG's criterion (ε = 0.1); forward's default is plain cross-entropy.
            loss = model(input_ids=src, attention_mask=mask, labels=target, mode=mode, smoothing_eps=0.1).loss * ntokens
            expected = case[f"loss_{mode}"].reshape(-1)[0]
            rows.append({"set": set_name, "tensor": f"loss_{mode} (sum)", "max_abs_error": abs(loss.item() - expected.item()),
                         "relative_error": abs(loss.item() - expected.item()) / expected.item()})
        gen = model.generate(src, attention_mask=mask, mode="nar", return_dict_in_generate=True)
        rows.append({"set": set_name, "tensor": "nar_generate_tokens (mismatches)", "max_abs_error": int(gen.raw_sequences.ne(case["nar_generate_tokens"]).sum())})
        add("nar_generate_positional_scores", gen.positional_scores, case["nar_generate_positional_scores"], torch.ones_like(gen.positional_scores, dtype=torch.bool))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--golden-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "golden" / "bang_tiny")
    parser.add_argument("--attn", default="eager,sdpa", help="Attention implementations, one column each.")
    args = parser.parse_args()
    kernels = args.attn.split(",")
    results = {kernel: measure(args.golden_dir, kernel) for kernel in kernels}
    print(f"| set | tensor | {' | '.join(f'max abs error ({k})' for k in kernels)} |\n|---|---|{'---|' * len(kernels)}")
    for index, row in enumerate(results[kernels[0]]):
        cells = []
        for kernel in kernels:
            other = results[kernel][index]
            value = other["max_abs_error"]
            shown = f"{value:.2e}" if isinstance(value, float) else str(value)
            if "relative_error" in other:
                shown += f" (rel {other['relative_error']:.1e})"
            cells.append(shown)
        print(f"| {row['set']} | {row['tensor']} | {' | '.join(cells)} |")
    print(json.dumps({"golden_parity": results}))

if __name__ == "__main__":
    main()
