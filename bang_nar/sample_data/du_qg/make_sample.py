"""Rebuild the bundled Du et al. (2017) QG sample from ../shared/data/du2017_qg (run from the repo root).

    python bang_nar/sample_data/du_qg/make_sample.py ../shared/data/du2017_qg

train.jsonl: 2,500 pairs drawn with random.Random(2017) from src/tgt-dev.txt (the Du dev split, 10,570 pairs),
kept in file order. eval.jsonl: the first 250 pairs of src/tgt-test.head2000.txt (the Du test split). Text is
copied unchanged apart from stripping surrounding whitespace.
"""

import json
import random
import sys
from pathlib import Path

NUM_TRAIN, NUM_EVAL, SEED = 2500, 250, 2017


def read(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def write(path: Path, sources: list[str], targets: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for source, target in zip(sources, targets):
            handle.write(json.dumps({"source": source.strip(), "target": target.strip()}, ensure_ascii=False) + "\n")


def main(data_dir: str) -> None:
    folder, out = Path(data_dir), Path(__file__).parent
    src, tgt = read(folder / "src-dev.txt"), read(folder / "tgt-dev.txt")
    rows = sorted(random.Random(SEED).sample(range(len(src)), NUM_TRAIN))
    write(out / "train.jsonl", [src[i] for i in rows], [tgt[i] for i in rows])
    src, tgt = read(folder / "src-test.head2000.txt"), read(folder / "tgt-test.head2000.txt")
    write(out / "eval.jsonl", src[:NUM_EVAL], tgt[:NUM_EVAL])


if __name__ == "__main__":
    main(sys.argv[1])
