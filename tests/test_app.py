"""`bang-nar app` (bang_nar/app.py) and `bang-nar push --space`.

- the page's logic without a server: each mode's output equals `model.generate()` for that mode, diff marking, empty
  and over-long input, the file tab's CSV;
- the page served on 127.0.0.1: a burst of concurrent requests through Gradio's HTTP API (all answered, one model
  load, one decode at a time), the `bang-nar app` command itself, and a real headless chromium driven by selenium
  (type, run, read every mode's output from the page; a screenshot is saved);
- `push --space` against the mocked Hub of tests/test_hub_cards.py.

The model is a tiny random BANG with a word-level tokenizer, saved once per module.
"""

from __future__ import annotations

import base64
import concurrent.futures
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx2
import pytest
import torch
import yaml

from bang_nar.app import (
    DIFF_LABEL,
    MODES,
    DecodeOptions,
    ModeComparison,
    diff_tokens,
    write_csv,
)
from bang_nar.multimodality import build_word_tokenizer, make_multimodality_task
from bang_nar.pipeline import build_model, ids_to_text
from bang_nar.postprocess import decode_nar
from tests.test_hub_cards import FakeHub, _model_folder, mocked_hub

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
MAX_POSITIONS = 18  # like the demo's models: over-long inputs are easy to make
SOURCE = "piano drum piano garden poet grape turtle winter"


# ---- a tiny model, its logic --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random tiny BANG (word tokenizer of the multi-modality task) saved with a card naming its data."""
    folder = tmp_path_factory.mktemp("app") / "model"
    task = make_multimodality_task(2, 64, 8, seed=0)
    tokenizer = build_word_tokenizer(task)
    model = build_model(tokenizer=tokenizer, size="tiny", seed=0, max_position_embeddings=MAX_POSITIONS)
    with torch.no_grad():  # larger weights than the init: the modes then disagree, which the diff tests need
        for name, param in model.named_parameters():
            if name.endswith(("proj.weight", "fc1.weight", "fc2.weight")):
                param.normal_(0, param.size(1) ** -0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text("---\ndatasets:\n- multimodality\n---\n\n# tiny\n")
    return folder


@pytest.fixture(scope="module")
def loaded(model_dir):
    from bang_nar.cli._args import load_model_and_tokenizer

    return load_model_and_tokenizer(str(model_dir))


@pytest.fixture(scope="module")
def logic(loaded) -> ModeComparison:
    return ModeComparison(*loaded)


def expected_text(loaded, source: str, **kwargs) -> str:
    """What `model.generate(**kwargs)` gives for `source`, decoded as the rest of the package decodes it."""
    model, tokenizer = loaded
    batch = tokenizer([source], truncation=True, max_length=MAX_POSITIONS, return_tensors="pt")
    out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    if kwargs["mode"] == "nar":
        return decode_nar(tokenizer, out)[0]
    return ids_to_text(tokenizer, out[0].tolist())


# Each page mode and the generate() call it must equal (written out, not taken from the app).
GENERATE_CALLS = {
    "nar": dict(mode="nar"),
    "nar_candidates": dict(mode="nar", num_candidates=3),
    "nar_ngram": dict(mode="nar", no_repeat_ngram_size=2),
    "nar_verify": dict(mode="nar_verify", max_new_tokens=MAX_POSITIONS),
    "ar_greedy": dict(mode="ar", num_beams=1, do_sample=False, max_new_tokens=MAX_POSITIONS),
    "ar_beam": dict(mode="ar", num_beams=3, length_penalty=1.2, max_new_tokens=MAX_POSITIONS),
}
OPTIONS = DecodeOptions(num_candidates=3, no_repeat_ngram_size=2, num_beams=3)


def test_every_mode_equals_generate(loaded, logic):
    assert set(GENERATE_CALLS) == set(MODES)
    comparison = logic.compare(SOURCE, list(MODES), OPTIONS)
    assert comparison.note == "" and list(comparison.results) == list(MODES)
    for mode, kwargs in GENERATE_CALLS.items():
        assert comparison.results[mode].text == expected_text(loaded, SOURCE, **kwargs), mode
        assert comparison.results[mode].ms > 0
    texts = {r.text for r in comparison.results.values()}
    assert len(texts) >= 3, f"the tiny model should make the modes disagree: {texts}"
    # nar_verify is AR greedy, and reports the AR passes generate() counted
    assert comparison.results["nar_verify"].text == comparison.results["ar_greedy"].text
    model, tokenizer = loaded
    batch = tokenizer([SOURCE], return_tensors="pt")
    out = model.generate(**batch, mode="nar_verify", max_new_tokens=MAX_POSITIONS, return_dict_in_generate=True)
    assert comparison.results["nar_verify"].ar_passes == int(out.ar_passes[0]) >= 1
    greedy = model.generate(**batch, **GENERATE_CALLS["ar_greedy"])
    assert comparison.results["nar_verify"].num_tokens == int(greedy[0, 1:].ne(tokenizer.pad_token_id).sum())
    assert comparison.speedup("ar_beam") == pytest.approx(1.0)
    assert comparison.reference() is comparison.results["ar_greedy"]


def test_an_untimed_pass_runs_before_the_timed_modes(loaded, monkeypatch):
    """The first timed mode must not pay for cold caches (plain NAR showed twice its time when it ran first)."""
    model, tokenizer = loaded
    logic = ModeComparison(model, tokenizer)
    calls, timed = [], []
    original = type(model).generate
    monkeypatch.setattr(
        type(model), "generate", lambda self, *a, **k: calls.append(k["mode"]) or original(self, *a, **k)
    )
    original_decode = ModeComparison.decode
    monkeypatch.setattr(ModeComparison, "decode",
                        lambda self, mode, *a, **k: timed.append(len(calls)) or original_decode(self, mode, *a, **k))
    logic.compare(SOURCE, ["nar", "ar_greedy"])
    assert calls == ["nar", "nar", "ar"] and timed == [1, 2]  # one warm-up pass, then one call per timed mode


def test_diff_marks_exactly_the_differing_words():
    assert diff_tokens(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == [
        ("a", None), ("b", DIFF_LABEL), ("c", None), ("d", None)]
    # an inserted word is marked, the aligned rest is not (no cascade after a shift)
    assert diff_tokens(["a", "new", "b", "c"], ["a", "b", "c"]) == [
        ("a", None), ("new", DIFF_LABEL), ("b", None), ("c", None)]
    assert diff_tokens(["a", "b"], ["a", "b"]) == [("a", None), ("b", None)]
    assert diff_tokens(["a", "b"], []) == [("a", DIFF_LABEL), ("b", DIFF_LABEL)]


def test_empty_input_is_a_note_not_an_error(logic):
    for source in ("", "   \n "):
        comparison = logic.compare(source, list(MODES))
        assert comparison.results == {} and "input is empty" in comparison.note


def test_over_long_input_is_truncated_and_says_so(loaded, logic):
    source = " ".join(SOURCE.split() * 5)  # 40 words + [SEP] > 18 positions
    comparison = logic.compare(source, ["nar", "ar_greedy"], OPTIONS)
    assert comparison.note == (f"The source has 41 tokens but the model takes {MAX_POSITIONS}: it was truncated to "
                               f"its first {MAX_POSITIONS} tokens for every mode.")
    assert comparison.results["nar"].text == expected_text(loaded, source, mode="nar")
    assert comparison.results["ar_greedy"].text == expected_text(loaded, source, **GENERATE_CALLS["ar_greedy"])


def test_file_tab_csv_round_trip(tmp_path, loaded, logic, monkeypatch):
    sources = [SOURCE, "plum carriage desert glacier", " ".join(SOURCE.split() * 5)]
    path = tmp_path / "sources.txt"
    path.write_text(f"{sources[0]}\n\n{sources[1]}\r\n{sources[2]}\n", encoding="utf-8")
    rows, header, note = logic.decode_file(path, ["ar_beam", "nar"], OPTIONS)  # MODES order, whatever was ticked
    assert header == ["source", MODES["nar"], MODES["ar_beam"]]
    assert rows == [[s, expected_text(loaded, s, mode="nar"), expected_text(loaded, s, **GENERATE_CALLS["ar_beam"])]
                    for s in sources]
    assert "Decoded 3 source(s)" in note and "Skipped 1 empty line(s)." in note and "1 source(s) were longer" in note
    written = write_csv(rows, header, tmp_path / "out.csv")
    with open(written, encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [header, *rows]

    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt line 2: not UTF-8 \(byte 0xe9\)"):
        logic.decode_file(tmp_path / "latin1.txt", ["nar"])
    monkeypatch.setattr("bang_nar.app.MAX_BATCH_LINES", 2)
    with pytest.raises(ValueError, match=r"sources.txt: 3 sources, the page decodes at most 2; use `bang-nar generate"):
        logic.decode_file(path, ["nar"])
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="blank.txt: no sources"):
        logic.decode_file(tmp_path / "blank.txt", ["nar"])


def test_examples_come_from_the_data_the_card_names(model_dir, tmp_path):
    from bang_nar.app import FALLBACK_EXAMPLES, example_sources

    examples = example_sources(model_dir, count=3)
    assert examples == list(make_multimodality_task(4, 3, 3, seed=0).eval["source"])
    assert example_sources(tmp_path) == FALLBACK_EXAMPLES  # no card


# ---- the served page ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """`build_app(model_dir)` launched on 127.0.0.1, with the number of model loads counted."""
    pytest.importorskip("gradio")
    import bang_nar.cli._args as args_module
    from bang_nar.app import build_app

    loads = []
    real_loader = args_module.load_model_and_tokenizer

    def counting_loader(*a, **k):
        loads.append(a)
        return real_loader(*a, **k)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))  # uploads stay in pytest's tmp
        patch.setattr(args_module, "load_model_and_tokenizer", counting_loader)
        page = build_app(model_dir, concurrency_limit=1)
        _, url, _ = page.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                share=False, ssr_mode=False, quiet=True)
        try:
            yield page, url, loads
        finally:
            page.close()


def call_api(url: str, name: str, data: list) -> list:
    """One request through Gradio's HTTP API (POST, then read the event stream); returns the outputs."""
    request = urllib.request.Request(f"{url}gradio_api/call/{name}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{name}/{event_id}", timeout=120) as response:
        body = response.read().decode()
    events = body.strip().split("\n\n")
    assert events[-1].startswith("event: complete"), body[-2000:]
    return json.loads(events[-1].split("data: ", 1)[1])


def page_texts(outputs: list) -> tuple[str, dict[str, str]]:
    """(note, {mode: output text}) from the `compare` endpoint's outputs (note, then text, stats[, diff] per mode)."""
    note, texts, i = outputs[0], {}, 1
    for mode in MODES:
        texts[mode] = outputs[i]
        i += 3 if mode in ("nar", "nar_candidates", "nar_ngram") else 2
    return note, texts


def test_a_burst_of_concurrent_requests_is_queued_and_answered(logic, server, tmp_path):  # logic first: its load is not the server's
    """8 requests at once (6 sources incl. an empty and an over-long one, 2 files): all answered correctly, the
    model loaded once, and never two decodes at the same time (one queue for both tabs)."""
    page, url, loads = server
    model = page.bang_nar_logic.model
    running, most = [0], [0]
    lock = threading.Lock()
    real_generate = model.generate

    def tracking_generate(*a, **k):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real_generate(*a, **k)
        finally:
            with lock:
                running[0] -= 1

    sources = [SOURCE, "", " ".join(SOURCE.split() * 5)] + [" ".join(SOURCE.split()[i:]) for i in range(1, 4)]
    modes = ["nar", "nar_verify", "ar_beam"]
    (tmp_path / "sources.txt").write_text("\n".join(sources[3:]) + "\n")
    requests = [("compare", [s, modes, 3, 2, 3]) for s in sources]
    for _ in range(2):  # two uploads of the same file: Gradio stores one copy, which both decodes read
        uploaded = httpx2.post(f"{url}gradio_api/upload",
                               files=[("files", ("sources.txt", (tmp_path / "sources.txt").read_bytes()))]).json()[0]
        requests.append(("batch", [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, modes, 3, 2, 3]))
    model.generate = tracking_generate
    try:
        with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(lambda request: call_api(url, *request), requests))
    finally:
        del model.generate
    assert len(answers) == 8 and len(loads) == 1, "the model is loaded once, at start"
    assert most[0] == 1, "the queue runs one decode at a time"
    for source, outputs in zip(sources, answers):
        note, texts = page_texts(outputs)
        expected = logic.compare(source, modes, OPTIONS)
        if not source:
            assert "input is empty" in note and set(texts.values()) == {""}
            continue
        assert {m: texts[m] for m in modes} == {m: r.text for m, r in expected.results.items()}
        assert note == (f"**Note:** {expected.note}" if expected.note else "")
        assert ("truncated to its first 18 tokens" in note) == (source == sources[2])
    rows, _, _ = logic.decode_file(tmp_path / "sources.txt", modes, OPTIONS)
    assert answers[-1][0]["value"]["data"] == answers[-2][0]["value"]["data"] == rows


def test_the_page_and_its_stats(server):
    page, url, _ = server
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200 and "bang-nar decoding modes" in response.read().decode()
    outputs = call_api(url, "compare", [SOURCE, ["nar", "ar_beam"], 3, 2, 3])
    nar_stats = outputs[2]
    assert " ms**" in nar_stats and "x vs AR beam" in nar_stats
    highlighted = outputs[3]["value"]  # an update: the legend (color_map) changes with the comparison
    marked = [(item["token"], item["class_or_confidence"]) for item in highlighted if item["token"] != " "]
    words = [token for token, _ in marked]
    assert words == outputs[1].split()
    reference = page_texts(outputs)[1]["ar_beam"].split()
    assert marked == diff_tokens(words, reference) and any(label for _, label in marked)


def test_file_tab_over_http_gives_the_table_and_a_csv(server, logic, tmp_path):
    """Upload a .txt as the page does, run the file tab, download the CSV it offers."""
    page, url, _ = server
    content = f"{SOURCE}\n\nplum carriage desert glacier\n"
    uploaded = httpx2.post(f"{url}gradio_api/upload", files=[("files", ("sources.txt", content.encode()))]).json()[0]
    table, download, note = call_api(url, "batch", [{"path": uploaded, "meta": {"_type": "gradio.FileData"}},
                                                    ["nar", "ar_beam"], 3, 2, 3])
    (tmp_path / "sources.txt").write_text(content)
    rows, header, expected_note = logic.decode_file(tmp_path / "sources.txt", ["nar", "ar_beam"], OPTIONS)
    assert table["value"]["headers"] == header and table["value"]["data"] == rows
    assert note == expected_note and "Skipped 1 empty line(s)." in note
    assert download["orig_name"] == "bang-nar-outputs.csv"
    downloaded = httpx2.get(download["url"]).text
    assert list(csv.reader(downloaded.splitlines())) == [header, *rows]
    assert call_api(url, "batch", [None, ["nar"], 3, 2, 3])[2].endswith("upload a .txt file first (one source per line).")


def test_bang_nar_app_serves_the_page(model_dir, tmp_path):
    pytest.importorskip("gradio")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "-m", "bang_nar", "app", "--model", str(model_dir), "--port",
                                str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, html = time.monotonic() + 90, None
        while time.monotonic() < deadline and process.poll() is None and html is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    html = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert html is not None and "bang-nar decoding modes" in html, process.stdout.read1().decode()[-2000:]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_app_without_a_model_names_the_demo_command(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gradio")
    from bang_nar.cli import main

    monkeypatch.chdir(tmp_path)  # no ./bang-nar-demo here
    with pytest.raises(SystemExit) as exit_info:
        main(["app"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "`bang-nar demo --quick`" in err and err.startswith("bang-nar app: error:")


def test_app_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    import importlib.util

    from bang_nar.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real_find_spec(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main(["app", "--model", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == 'bang-nar app: error: Gradio is not installed; install the app extra: pip install "bang-nar[app]"'


def test_the_package_and_other_commands_do_not_import_gradio():
    code = ("import sys, bang_nar, bang_nar.hub, bang_nar.app; from bang_nar.cli import build_parser; build_parser(); "
            "print('gradio' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]


# ---- a real browser ------------------------------------------------------------------------------------------------


def require_browser() -> None:
    """Fail (under CI, whose .ci/run installs them) or skip when chromium, its driver or selenium is missing."""
    import importlib.util

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    if missing:
        message = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("ci", ["true", None])
def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(ci, monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="browser test needs .*no-chromium"):
        require_browser()


def test_the_page_in_a_headless_browser(server, loaded, tmp_path):
    """Chromium types a source, runs it, and every mode's output on the page equals generate() for that mode."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    page, url, _ = server
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # No background networking: on a closed network chromium otherwise floods refused connections.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1500", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#source textarea"))
        # every mode ticked (the page starts with four)
        for label in MODES.values():
            checkbox = driver.find_element(By.XPATH, f"//*[@id='modes']//label[contains(., '{label}')]//input")
            if not checkbox.is_selected():
                checkbox.click()
        box.send_keys(SOURCE)
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: " ms" in d.find_element(By.ID, "stats-ar_beam").text)
        defaults = {"nar_candidates": dict(mode="nar", num_candidates=4),
                    "ar_beam": dict(mode="ar", num_beams=4, length_penalty=1.2, max_new_tokens=MAX_POSITIONS)}
        shown = {}
        for mode in MODES:
            shown[mode] = driver.find_element(By.CSS_SELECTOR, f"#out-{mode} textarea").get_attribute("value")
            assert shown[mode] == expected_text(loaded, SOURCE, **defaults.get(mode, GENERATE_CALLS[mode])), mode
            assert " ms" in driver.find_element(By.ID, f"stats-{mode}").text
        verify = page.bang_nar_logic.compare(SOURCE, ["nar_verify"]).results["nar_verify"]
        assert (f"AR passes: {verify.ar_passes} for {verify.num_tokens} tokens"
                in driver.find_element(By.ID, "stats-nar_verify").text)
        shot_dir = Path(os.environ.get("BANG_NAR_SCREENSHOT_DIR", tmp_path))
        shot_dir.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot_dir / "bang_nar_app.png"))
        # empty input: a message on the page, the outputs cleared
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.BACKSPACE)  # as a user does (clear() fires no input event)
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: "input is empty" in d.find_element(By.ID, "note").text)
        assert driver.find_element(By.CSS_SELECTOR, "#out-nar textarea").get_attribute("value") == ""
        assert (shot_dir / "bang_nar_app.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        driver.quit()


# ---- push --space against the mocked Hub ------------------------------------------------------------------------


class SpaceFakeHub(FakeHub):
    """`FakeHub` that also takes the Space endpoints (create, preupload, commit under /api/spaces/)."""

    def __init__(self) -> None:
        super().__init__()
        self.space_created: dict | None = None
        self.space_committed: dict[str, bytes] = {}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method == "POST" and path == "/api/repos/create" and json.loads(request.content).get("type") == "space":
            self.requests.append(request)
            self.space_created = json.loads(request.content)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/spaces/{self.space_created['organization']}/"
                                                     f"{self.space_created['name']}"})  # fmt: skip
        if request.method == "POST" and path.startswith("/api/spaces/") and "/preupload/" in path:
            self.requests.append(request)
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]})
        if request.method == "POST" and path.startswith("/api/spaces/") and "/commit/" in path:
            self.requests.append(request)
            for line in request.content.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.space_committed[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return httpx2.Response(200, json={"commitUrl": "https://huggingface.co/spaces/me/bang-demo/commit/1",
                                              "commitOid": "1", "pullRequestUrl": None})
        return super().__call__(request)


@pytest.fixture
def space_hub():
    with mocked_hub(SpaceFakeHub()) as hub:
        yield hub


def test_push_space_uploads_model_then_a_gradio_space(tmp_path, space_hub, capsys):
    from bang_nar.cli import main

    folder = _model_folder(tmp_path)
    assert main(["push", "--model", str(folder), "--repo-id", "me/bang", "--token", "hf_x", "--space"]) == 0
    assert "config.json" in space_hub.committed  # the model, as plain push
    assert space_hub.space_created["name"] == "bang-demo" and space_hub.space_created["sdk"] == "gradio"
    files = {name: content.decode() for name, content in space_hub.space_committed.items()}
    assert sorted(files) == ["README.md", "app.py", "requirements.txt"]
    front = yaml.safe_load(files["README.md"].split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["models"] == ["me/bang"]
    assert "build_app('me/bang').launch()" in files["app.py"]
    compile(files["app.py"], "app.py", "exec")
    assert files["requirements.txt"].startswith("bang-nar[app]")
    paths = [r.url.path for r in space_hub.requests if r.method == "POST"]
    assert paths.index("/api/models/me/bang/commit/main") < paths.index("/api/spaces/me/bang-demo/commit/main")
    assert "me/bang-demo" in capsys.readouterr().out


def test_push_space_with_an_id_and_requirement(tmp_path, space_hub):
    from bang_nar.cli import main

    folder = _model_folder(tmp_path)
    argv = ["push", "--model", str(folder), "--repo-id", "me/bang", "--token", "hf_x", "--space", "me/try-bang",
            "--space-requirement", "bang-nar[app] @ git+https://example.org/bang-nar.git"]
    assert main(argv) == 0
    assert space_hub.space_created["name"] == "try-bang"
    assert space_hub.space_committed["requirements.txt"] == b"bang-nar[app] @ git+https://example.org/bang-nar.git\n"


def test_the_space_app_runs_the_page_on_the_model(model_dir, tmp_path, monkeypatch):
    """app.py of the Space, executed with `launch` stubbed: it builds the page for the model it names."""
    pytest.importorskip("gradio")
    import gradio

    from bang_nar.hub import space_files

    launched = []
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, *a, **k: launched.append(self))
    exec(compile(space_files(str(model_dir))["app.py"], "app.py", "exec"), {"__name__": "__main__"})
    assert len(launched) == 1 and launched[0].bang_nar_logic.max_source_tokens == MAX_POSITIONS


# ---- issue 24: bounded requests, a legend that says what it shows ----------------------------------------------------


def test_a_huge_source_is_cut_to_max_chars_before_tokenizing(loaded, monkeypatch):
    model, tokenizer = loaded
    bounded = ModeComparison(model, tokenizer, max_chars=50)
    seen = []
    real_call = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, texts, **kw: seen.append(texts) or real_call(self, texts, **kw))
    _, note = bounded.encode("word " * 200_000)  # 1 MB of text
    assert max(len(text) for texts in seen for text in texts) == 50
    assert "1,000,000 characters; the page reads the first 50" in note


def test_an_upload_over_max_upload_mb_is_refused_unread(loaded, tmp_path, monkeypatch):
    model, tokenizer = loaded
    bounded = ModeComparison(model, tokenizer, max_upload_mb=0.001)
    big = tmp_path / "big.txt"
    big.write_text("a source\n" * 200)  # 1.8 KB > 1 KB
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the upload was read"))
    with pytest.raises(ValueError, match=r"big.txt: 0.0 MB, the page takes at most 0.001 MB"):
        bounded.decode_file(big, ["nar"])


def test_the_diff_legend_says_identical_when_no_word_differs():
    from bang_nar.app import SAME_LABEL, Comparison, ModeResult, _highlight

    same = Comparison(results={"nar": ModeResult("nar", "a b c", 1.0), "ar_greedy": ModeResult("ar_greedy", "a b c", 2.0)})
    assert _highlight(same, "nar") == ([("a b c", SAME_LABEL)], {SAME_LABEL: "green"})
    other = Comparison(results={"nar": ModeResult("nar", "a x c", 1.0), "ar_greedy": ModeResult("ar_greedy", "a b c", 2.0)})
    value, color_map = _highlight(other, "nar")
    assert color_map == {DIFF_LABEL: "red"} and ("x", DIFF_LABEL) in value
