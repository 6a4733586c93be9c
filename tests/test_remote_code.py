"""Files saved next to a checkpoint load with `trust_remote_code=True` where `bang_nar` is not importable."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoTokenizer, pipeline

from bang_nar import (
    BangText2TextGenerationPipeline,
    BangTokenizerFast,
    load_bang_tokenizer,
)
from bang_nar.generation_bang import store_block_size

from .conftest import random_batch, tiny_model


def _run_without_bang_nar(code: str) -> str:
    """Run `code` in a fresh interpreter where `import bang_nar` raises ImportError; return its stdout."""
    prelude = "import sys\nsys.modules['bang_nar'] = None  # any import of the package fails\n"
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_tokenizer_and_text2text_pipeline_with_and_without_the_package(tmp_path):
    """AutoTokenizer returns `BangTokenizerFast`; `pipeline("text2text-generation")` takes `mode=` and returns
    `generated_text`; a saved pipeline carries both as remote code."""
    tokenizer = load_bang_tokenizer()
    model = tiny_model(vocab_size=len(tokenizer))
    generator = pipeline("text2text-generation", model=model, tokenizer=tokenizer)
    assert isinstance(generator, BangText2TextGenerationPipeline)
    generator.save_pretrained(tmp_path)
    text = "Who wrote the book? [SEP] It was written in 1990."
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is BangTokenizerFast and loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    expected = {}
    for mode in ("ar", "nar"):
        out = generator([text, "a shorter one"], mode=mode, max_new_tokens=5)
        ids = model.generate(**tokenizer(text, return_tensors="pt"), mode=mode, max_new_tokens=5)
        assert out[0] == [{"generated_text": tokenizer.decode(ids[0], skip_special_tokens=True)}]
        expected[mode] = out
    assert expected["ar"] != expected["nar"]  # mode= reaches generate()
    remote = _run_without_bang_nar(f"""
        import json
        from transformers import AutoTokenizer, pipeline
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        generator = pipeline("text2text-generation", model={str(tmp_path)!r}, trust_remote_code=True)
        out = {{mode: generator([{text!r}, "a shorter one"], mode=mode, max_new_tokens=5) for mode in ("ar", "nar")}}
        print(json.dumps([type(tokenizer).__name__, tokenizer({text!r})["input_ids"], type(generator).__name__, out]))
    """)
    assert json.loads(remote.splitlines()[-1]) == [
        "BangTokenizerFast", tokenizer(text)["input_ids"], "BangText2TextGenerationPipeline", expected
    ]

MODES = {  # name: generate() keyword arguments
    "ar": {"mode": "ar", "max_new_tokens": 6},
    "nar": {"mode": "nar", "max_new_tokens": 6},
    "candidates": {"mode": "nar", "max_new_tokens": 6, "num_candidates": 3},
    "nar_verify": {"mode": "nar_verify", "max_new_tokens": 6},
    "semi_nar": {"mode": "semi_nar", "max_new_tokens": 6},  # k = 2 from the saved generation config
    "generate": {"max_new_tokens": 6},  # the model's default mode
}


def test_every_mode_decodes_from_remote_code_like_the_package(tmp_path):
    """Models saved with default mode ar, nar and semi_nar, loaded in one process without the package."""
    input_ids, mask, labels = random_batch()
    expected = {}
    for default_mode in ("ar", "nar", "semi_nar"):
        model = tiny_model(generation_mode=default_mode)
        store_block_size(model, 2)  # as semi-NAR fine-tuning does
        model.save_pretrained(tmp_path / default_mode)
        saved = sorted(p.name for p in (tmp_path / default_mode).glob("*.py"))
        assert saved == ["configuration_bang.py", "generation_bang.py", "modeling_bang.py"]
        out = {name: model.generate(input_ids, attention_mask=mask, **kwargs).tolist() for name, kwargs in MODES.items()}
        assert out["generate"] == out[default_mode]  # plain generate() runs the saved default mode
        with torch.no_grad():
            out["semi_nar_loss"] = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="semi_nar").loss.item()
        expected[default_mode] = out
    remote = _run_without_bang_nar(f"""
        import json, torch
        from transformers import AutoModel, AutoModelForSeq2SeqLM
        input_ids, mask, labels = (torch.tensor(x) for x in {json.dumps([input_ids.tolist(), mask.tolist(), labels.tolist()])})
        results = {{}}
        for default_mode in ("ar", "nar", "semi_nar"):
            path = {str(tmp_path)!r} + "/" + default_mode
            model = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True).eval()
            assert type(model).__name__ == "BangForConditionalGeneration", type(model)
            assert type(AutoModel.from_pretrained(path, trust_remote_code=True)).__name__ == "BangModel"
            out = {{name: model.generate(input_ids, attention_mask=mask, **kwargs).tolist()
                   for name, kwargs in {MODES!r}.items()}}
            with torch.no_grad():
                out["semi_nar_loss"] = model(input_ids=input_ids, attention_mask=mask, labels=labels,
                                             mode="semi_nar").loss.item()
            results[default_mode] = out
        print(json.dumps(results))
    """)
    got = json.loads(remote.splitlines()[-1])
    for default_mode, out in expected.items():
        assert got[default_mode].pop("semi_nar_loss") == pytest.approx(out.pop("semi_nar_loss"), rel=1e-6)
    assert got == expected
