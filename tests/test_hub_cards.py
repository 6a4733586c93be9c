"""Model cards (`SPMDSeq2SeqTrainer.create_model_card`, `bang_nar.hub`) and `push_model` against a mocked Hub.

The Hub is never contacted: `push_model` runs the real huggingface_hub client with its HTTP client replaced through
the public `huggingface_hub.set_client_factory` by an `httpx2.MockTransport` that implements the endpoints
`create_repo` and `upload_folder` call, and records what was committed.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import _http

from bang_nar.hub import (
    HubError,
    METRICS_END,
    METRICS_START,
    NO_METRICS,
    eval_results_from_table,
    push_model,
    render_model_card,
    update_model_card_metrics,
)
from bang_nar.trainer import SPMDTrainingArguments
from bang_nar.trainer.sequence_kd import PROVENANCE_NAME
from tests.spmd_toy import single_thread, spmd_trainer  # noqa: F401 (autouse fixture)

METEOR_NOTE = "WordNet data not found by NLTK, so METEOR was not computed."
# Two systems as `bang-nar evaluate` writes them (results.json): METEOR missing, its note on every row.
TABLE = {
    "nar": {"num_samples": 8, "bleu": 12.3456, "rougeL": 30.0, "meteor": None, "meteor_note": METEOR_NOTE,
            "repetition_rate": 4.0, "repetition_rate_on": "raw_predictions", "ms_per_sample": 1.5,
            "samples_per_s": 666.7},
    "ar (beam 4)": {"num_samples": 8, "bleu": 20.0, "rougeL": 40.0, "meteor": None, "meteor_note": METEOR_NOTE,
                    "repetition_rate": 0.0, "repetition_rate_on": "predictions", "ms_per_sample": 15.0,
                    "samples_per_s": 66.7},
}  # fmt: skip
SYSTEMS = {"nar": {"mode": "nar", "num_candidates": 1}, "ar (beam 4)": {"mode": "ar", "num_beams": 4}}


def _metrics(card: ModelCard) -> dict[tuple[str, str, str], float]:
    """{(dataset, system, metric): value} from the card's parsed `model-index`."""
    return {(r.dataset_name, r.metric_config, r.metric_type): r.metric_value for r in card.data.eval_results or []}


# ---- the trainer's card ------------------------------------------------------------------------------------------


@pytest.fixture
def distilled_folder(tmp_path: Path) -> Path:
    """A folder as `bang-nar distill` leaves it: only the provenance matters to the card."""
    folder = tmp_path / "distilled"
    folder.mkdir()
    provenance = {"teacher": str(tmp_path / "secret" / "ar_teacher"), "num_beams": 4, "length_penalty": 1.2,
                  "num_return_sequences": 2, "max_new_tokens": 32, "kd_column": "kd_labels"}  # fmt: skip
    (folder / PROVENANCE_NAME).write_text(json.dumps(provenance))
    return folder


def test_spmd_card_records_run_options_and_results(tmp_path, distilled_folder):
    out = tmp_path / "spmd-run"
    trainer = spmd_trainer(out, spmd_preset="spmd", kd_alpha=0.25, pace_q0=0.3)
    trainer.train()
    trainer.create_model_card(dataset=str(distilled_folder), eval_results=TABLE, eval_dataset_name="test.jsonl",
                              eval_systems=SYSTEMS, eval_device="cpu (1 torch threads)", num_modes=2)
    text = (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md")

    # Metadata: the Hub's results (model-index) come from EvalResults; local paths never become metadata.
    assert card.data.model_name == "spmd-run"
    assert {"bang-nar", "spmd", "non-autoregressive"} <= set(card.data.tags)
    assert card.data.base_model is None and card.data.datasets is None
    metrics = _metrics(card)
    assert metrics[("test.jsonl", "nar", "bleu")] == pytest.approx(12.3456)
    assert metrics[("test.jsonl", "ar (beam 4)", "ms_per_sample")] == 15.0
    assert not any(metric == "meteor" for _, _, metric in metrics)  # not computed → not reported
    nar_bleu = next(r for r in card.data.eval_results if r.metric_config == "nar" and r.metric_type == "bleu")
    assert nar_bleu.metric_args == {"mode": "nar", "num_candidates": 1, "num_samples": 8,
                                    "device": "cpu (1 torch threads)"}  # fmt: skip

    # Body: caveat, recipe from the resolved preset, every SPMD field with its value, setup, metrics, decoding.
    assert "SPMD reconstruction" in text and "**our reconstruction**" in text and "2205.11162" in text
    assert "**nar** mode" in text and "(SPMD preset `spmd`)" in text
    assert "weight α=0.25" in text and "Self-paced sample weights `percentile`" in text and "β=0.5" in text
    for name in inspect.get_annotations(SPMDTrainingArguments):
        value = str(getattr(trainer.args, name)).replace("|", "\\|")
        assert f"| `{name}` | `{value}` |" in text, name
    assert "| `pace_q0` | `0.3` | q0 of Eq. 6 'percentile': kept fraction at step 0 |" in text
    assert "| optimizer steps | `4 (max_steps 4)` |" in text
    assert "| batch per update | `4 (4 per device × 1 accumulation × 1 process(es))` |" in text
    assert "| learning rate | `0.001 (linear, warmup 0 steps)` |" in text and "| seed | `7 (data_seed 7)` |" in text
    assert "| mean training loss |" in text
    assert "teacher `ar_teacher`, AR beam 4, length penalty 1.2, 2 target(s) per source" in text
    assert "secret" not in text  # the teacher's local path is reduced to its name
    assert "- `num_modes`: 2" in text
    assert "| test.jsonl | - | nar | 12.35 | 30.00 | 4.00 | 1.50 | 666.70 |" in text
    assert "- `ar (beam 4)`: mode=ar, num_beams=4, num_samples=8, device=cpu (1 torch threads)" in text
    assert text.count(METEOR_NOTE) == 1
    assert 'model.generate(**batch, mode="nar")' in text and 'pass `mode="nar"`' in text
    assert "{{" not in text and "}}" not in text


def test_ar_card_says_what_was_trained_and_has_no_results_yet(tmp_path):
    trainer = spmd_trainer(tmp_path / "teacher", train_mode="ar", spmd_preset="bang_nar", max_steps=1)
    trainer.train()
    trainer.create_model_card(dataset_name="someone/qg-data", tags="qg", finetuned_from="someone/bang-base")
    card = ModelCard.load(tmp_path / "teacher" / "README.md")
    assert card.data.base_model == "someone/bang-base" and card.data.datasets == ["someone/qg-data"]
    assert "qg" in card.data.tags and not card.data.eval_results
    assert "AR fine-tuning (BANG, docs/architecture.md)" in card.text
    assert "The SPMD options below are recorded but unused" in card.text
    assert "SPMD reconstruction" in card.text
    assert f"{METRICS_START}\n{NO_METRICS}\n{METRICS_END}" in card.text
    assert 'mode="ar", num_beams=4' in card.text and "--mode ar" in card.text


def test_from_scratch_model_is_described_not_called_a_checkpoint(tmp_path):
    trainer = spmd_trainer(tmp_path / "scratch", spmd_preset="bang_nar", max_steps=1)
    trainer.create_model_card(dataset="train.jsonl")
    text = (tmp_path / "scratch" / "README.md").read_text()
    assert "starting from random initialisation (trained from scratch: d_model=32, layers=2+2, vocab=128)" in text
    assert "- No token KL (α=0)." in text and "- No self-paced weighting" in text


@pytest.mark.parametrize("kind", ["spmd_model_card", "converted"])
def test_every_template_states_the_reconstruction(kind):
    text = render_model_card(kind, {}).split("---", 2)[2]
    assert "our reconstruction" in text and "Qi et al. 2022" in text


def test_unknown_template_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"available: \['converted', 'pretrained', 'spmd_model_card'\]"):
        render_model_card("nope", {})


# ---- merging evaluation results into a saved card ---------------------------------------------------------------


def test_update_card_merges_by_dataset_and_system(tmp_path):
    trainer = spmd_trainer(tmp_path / "m", spmd_preset="bang_nar", max_steps=1)
    trainer.create_model_card(dataset="train.jsonl")
    update_model_card_metrics(tmp_path / "m", TABLE, "test.jsonl", systems=SYSTEMS, device="cpu")
    # Re-measure NAR only, on the same data: its numbers are replaced, AR's are kept; other data is added.
    update_model_card_metrics(tmp_path / "m", {"nar": {"bleu": 50.0, "ms_per_sample": 1.0}}, "test.jsonl")
    update_model_card_metrics(tmp_path / "m", {"nar": {"bleu": 7.0}}, "other.jsonl", split="test")
    card = ModelCard.load(tmp_path / "m" / "README.md")
    metrics = _metrics(card)
    assert metrics[("test.jsonl", "nar", "bleu")] == 50.0
    assert ("test.jsonl", "nar", "rougeL") not in metrics  # the whole (data, system) group was re-measured
    assert metrics[("test.jsonl", "ar (beam 4)", "bleu")] == 20.0
    assert metrics[("other.jsonl", "nar", "bleu")] == 7.0
    assert card.text.count(METRICS_START) == 1 and NO_METRICS not in card.text
    assert "| test.jsonl | - | nar | 50.00 |" in card.text and "| other.jsonl | test | nar | 7.00 |" in card.text
    assert "SPMD reconstruction" in card.text  # the rest of the card is untouched


def test_update_card_appends_a_section_to_a_card_without_markers(tmp_path):
    (tmp_path / "README.md").write_text(render_model_card("converted", {"source_checkpoint": "ck.pt"}))
    update_model_card_metrics(tmp_path, TABLE, "test.jsonl")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.model_name == tmp_path.name
    assert _metrics(card)[("test.jsonl", "ar (beam 4)", "bleu")] == 20.0
    assert card.text.rstrip().endswith(METRICS_END) and "## Evaluation" in card.text and "ck.pt" in card.text


def test_update_card_needs_a_local_card(tmp_path):
    with pytest.raises(FileNotFoundError, match="README.md does not exist: --update-card needs a local model folder"):
        update_model_card_metrics(tmp_path, TABLE, "test.jsonl")


def test_eval_results_skip_uncomputed_metrics_and_notes():
    results = eval_results_from_table({"nar": {"bleu": 1.0, "meteor": None, "meteor_note": "x", "num_samples": 3}}, "d")
    assert [(r.metric_type, r.metric_value, r.metric_name, r.metric_args) for r in results] == [
        ("bleu", 1.0, "nar: BLEU-4", {"num_samples": 3})
    ]


# ---- push against a mocked Hub ----------------------------------------------------------------------------------


class FakeHub:
    """Just the Hub endpoints that `create_repo` + `upload_folder` call; every file is answered as a regular
    (inline base64) upload, so no LFS or Xet transfer starts. Records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.created: dict | None = None
        self.committed: dict[str, bytes] = {}
        self.commit_header: dict | None = None

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST" and path == "/api/repos/create":
            self.created = json.loads(request.content)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{self.created['organization']}/"
                                                     f"{self.created['name']}"})  # fmt: skip
        if request.method == "POST" and path == "/api/validate-yaml":  # the README's metadata, checked before upload
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if request.method == "POST" and path.startswith("/api/models/") and "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
            ]})  # fmt: skip
        if request.method == "POST" and path.startswith("/api/models/") and "/commit/" in path:
            assert request.headers["content-type"] == "application/x-ndjson"
            for line in request.content.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "header":
                    self.commit_header = item["value"]
                elif item["key"] == "file":
                    assert item["value"]["encoding"] == "base64"
                    self.committed[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                else:
                    raise AssertionError(f"unexpected commit operation {item['key']}")
            return httpx2.Response(200, json={"commitUrl": "https://huggingface.co/me/bang/commit/abc123",
                                              "commitOid": "abc123", "pullRequestUrl": None})  # fmt: skip
        # Anything else (e.g. huggingface_hub's optional agent-registry lookup) gets a 404, which it tolerates.
        return httpx2.Response(404, json={"error": f"not mocked: {request.method} {path}"})


@contextlib.contextmanager
def mocked_hub(hub: FakeHub) -> Iterator[FakeHub]:
    """Route huggingface_hub's shared HTTP client to `hub`; restore the previous factory afterwards."""
    previous = _http._GLOBAL_CLIENT_FACTORY  # no public getter; set_client_factory is the public setter
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(previous)


@pytest.fixture
def fake_hub():
    with mocked_hub(FakeHub()) as hub:
        yield hub


MODEL_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "README.md", "modeling_bang.py", "configuration_bang.py", "training_args.bin"]  # fmt: skip


def _model_folder(root: Path) -> Path:
    folder = root / "model"
    for name in MODEL_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(f"content of {name}".encode())
    (folder / "README.md").write_text(render_model_card("converted", {"source_checkpoint": "ck.pt"}))
    for leftover in ["checkpoint-3/model.safetensors", "checkpoint-3/trainer_state.json", "runs/events.out", "x.pt"]:
        (folder / leftover).parent.mkdir(parents=True, exist_ok=True)
        (folder / leftover).write_text("trainer leftover")
    return folder


def test_push_commits_model_tokenizer_card_and_code_but_no_checkpoints(tmp_path, fake_hub):
    folder = _model_folder(tmp_path)
    url = push_model(folder, "me/bang", private=True, token="hf_test_token", commit_message="first upload")

    assert url == "https://huggingface.co/me/bang"
    assert fake_hub.created["name"] == "bang" and fake_hub.created["organization"] == "me"
    assert fake_hub.created["visibility"] == "private" and fake_hub.created["type"] == "model"
    assert sorted(fake_hub.committed) == sorted(MODEL_FILES)  # no checkpoint-*/, runs/, *.pt
    assert fake_hub.committed["README.md"] == (folder / "README.md").read_bytes()
    assert fake_hub.committed["model.safetensors"] == b"content of model.safetensors"
    assert fake_hub.commit_header["summary"] == "first upload"
    assert all(r.url.host == "huggingface.co" for r in fake_hub.requests)
    writes = [r for r in fake_hub.requests if r.method == "POST"]
    assert all(r.headers["authorization"] == "Bearer hf_test_token" for r in writes)
    paths = [r.url.path for r in writes]
    assert paths[-2:] == ["/api/models/me/bang/preupload/main", "/api/models/me/bang/commit/main"]


def test_push_subcommand_uploads_through_push_model(tmp_path, fake_hub):
    """The CLI wires `bang-nar push` to the same call: run it through `main` against the fake Hub."""
    from bang_nar.cli import main

    folder = _model_folder(tmp_path)
    assert main(["push", "--model", str(folder), "--repo-id", "me/bang", "--token", "hf_x"]) == 0
    assert "config.json" in fake_hub.committed and fake_hub.created.get("visibility") != "private"


@pytest.mark.parametrize(
    "remove, message",
    [
        (["model.safetensors"], r"lacks weights \(model.safetensors or model.safetensors.index.json\)"),
        (["tokenizer_config.json", "README.md"],
         r"lacks tokenizer \(tokenizer_config.json\), model card \(README.md\)"),
    ],
    ids=["no-weights", "no-tokenizer-no-card"],
)
def test_push_refuses_an_incomplete_folder_before_any_request(tmp_path, fake_hub, remove, message):
    folder = _model_folder(tmp_path)
    for name in remove:
        (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=message):
        push_model(folder, "me/bang", token="hf_x")
    assert fake_hub.requests == []


def test_push_accepts_sharded_weights(tmp_path, fake_hub):
    folder = _model_folder(tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text("{}")
    push_model(folder, "me/bang", token="hf_x")
    assert {"model-00001-of-00001.safetensors", "model.safetensors.index.json"} <= set(fake_hub.committed)


# ---- push against failing Hubs: a token is checked first, and every Hub failure is one line --------------------


class FailingHub(FakeHub):
    """`FakeHub` that answers `status` (or drops the connection, status None) on the first request to `path`."""

    def __init__(self, path_part: str, status: int | None) -> None:
        super().__init__()
        self.path_part, self.status = path_part, status

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if self.path_part in request.url.path:
            self.requests.append(request)
            if self.status is None:
                raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)
            return httpx2.Response(self.status, json={"error": f"status {self.status} from the test Hub"})
        return super().__call__(request)


@pytest.fixture
def failing_hub(request):
    with mocked_hub(FailingHub(*request.param)) as hub:
        yield hub


@pytest.mark.parametrize(
    "failing_hub, message",
    [
        (("/api/repos/create", 401), r"the Hub rejected the token \(401 Unauthorized\).*--token"),
        (("/api/repos/create", 403), r"the token may not write to me/bang \(403 Forbidden\)"),
        (("/preupload/", 404), r"me/bang was not found on the Hub \(404\)"),
        (("/api/repos/create", 500), r"the Hub failed with 500 \(a server error\).*try again later"),
        (("/api/repos/create", None), r"cannot reach the Hub to push me/bang \(ConnectError: .*name resolution\)"),
    ],
    indirect=["failing_hub"],
    ids=["401", "403", "404", "500", "no-network"],
)
def test_push_turns_hub_failures_into_one_line(tmp_path, failing_hub, message, capsys):
    from bang_nar.cli import main

    folder = _model_folder(tmp_path)
    with pytest.raises(HubError, match=message):
        push_model(folder, "me/bang", token="hf_x")
    with pytest.raises(SystemExit) as exit_info:
        main(["push", "--model", str(folder), "--repo-id", "me/bang", "--token", "hf_x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("bang-nar push: error: ") and re.search(message, err)


def test_push_without_a_token_fails_before_any_request(tmp_path, fake_hub, monkeypatch, capsys):
    from huggingface_hub import constants

    from bang_nar.cli import main

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token_file"))
    folder = _model_folder(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["push", "--model", str(folder), "--repo-id", "me/bang"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("bang-nar push: error: no Hugging Face token:") and len(err.strip().splitlines()) == 1
    assert "hf auth login" in err and "--token" in err
    assert fake_hub.requests == []


@pytest.mark.parametrize("kind", ["converted", "spmd_model_card"])
def test_cards_name_the_project_and_link_no_package_registry(kind, monkeypatch):
    from importlib import metadata

    card = render_model_card(kind, {})
    assert "bang-nar" in card and "{{ project }}" not in card and "pypi.org" not in card
    # A project home page declared in the package metadata becomes the link; a registry page never does.
    real = metadata.metadata

    def with_urls(name):
        data = real(name)
        data["Project-URL"] = "Homepage, https://example.org/bang-nar"
        data["Project-URL"] = "Registry, https://" + "pypi.org/project/bang-nar/"  # split: no registry link here
        return data

    monkeypatch.setattr(metadata, "metadata", with_urls)
    linked = render_model_card(kind, {})
    assert "[bang-nar](https://example.org/bang-nar)" in linked and "pypi.org" not in linked


def test_card_data_line_states_k_from_the_data_and_distinct_modes():
    """The distillation settings that shape C_i (issue 21) reach the card: the mass cut and the distinct-modes
    filter, each only when it was used."""
    from bang_nar.trainer.spmd_trainer import _card_mass

    assert _card_mass(None, None) == ""
    assert "holding 95% of their probability" in _card_mass(0.95, None) and "distinct modes" not in _card_mass(0.95)
    both = _card_mass(0.95, 0.5)
    assert "holding 95%" in both and "fewer than 50% of its slots" in both
    assert "k from the data" not in _card_mass(None, 0.5) and "distinct modes" in _card_mass(None, 0.5)
