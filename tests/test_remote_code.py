"""Files saved next to a checkpoint load with `trust_remote_code=True` where `bang_nar` is not importable."""

import json
import subprocess
import sys
import textwrap

from transformers import AutoTokenizer

from bang_nar import BangTokenizerFast, load_bang_tokenizer

from .conftest import tiny_config


def _run_without_bang_nar(code: str) -> str:
    """Run `code` in a fresh interpreter where `import bang_nar` raises ImportError; return its stdout."""
    prelude = "import sys\nsys.modules['bang_nar'] = None  # any import of the package fails\n"
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_auto_tokenizer_returns_bang_tokenizer_with_and_without_the_package(tmp_path):
    tokenizer = load_bang_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    tiny_config().save_pretrained(tmp_path)
    text = "Who wrote the book? [SEP] It was written in 1990."
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is BangTokenizerFast and loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    remote = _run_without_bang_nar(f"""
        import json
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        print(json.dumps([type(tokenizer).__name__, tokenizer({text!r})["input_ids"]]))
    """)
    assert json.loads(remote.splitlines()[-1]) == ["BangTokenizerFast", tokenizer(text)["input_ids"]]
