"""The documentation site's pages, and the citations of them in code, stay consistent (no MkDocs needed).

`mkdocs build --strict` (in `.ci/run`) checks links between pages; this checks what it cannot: that every page is
in the navigation, that code comments cite pages and sections that exist, and never files outside the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = {"index.md", "architecture.md", "decoding.md", "spmd.md", "pretraining.md", "converter.md", "cli.md",
         "training-on-gpus.md", "benchmarks.md", "api.md", "development.md"}
CITATION = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
# Design notes that live outside the repository: code must cite the site's pages instead.
OUTSIDE = re.compile(r"bang_spec|bang_pretraining\.md|shared/docs|golden README|\b[Ss]pec §|house style §")


def _anchors(page: Path) -> set[str]:
    """Section ids of a page: explicit `{#id}` attributes, else the heading slug MkDocs' toc would make."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE):
        explicit = re.search(r"\{#([\w-]+)\}\s*$", heading)
        if explicit:
            anchors.add(explicit.group(1))
        else:
            anchors.add(re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower()))
    return anchors


def _committed(*suffixes: str) -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of committed files")
    names = [n for n in listed.stdout.decode().split("\0") if n.endswith(suffixes) and not n.startswith("docs/_incoming/")]
    return [REPO / n for n in names if (REPO / n).is_file()]


def test_every_page_exists_and_is_in_the_navigation():
    nav = set(re.findall(r"^\s+- [^:]+: ([\w-]+\.md)$", (REPO / "mkdocs.yml").read_text(), re.MULTILINE))
    on_disk = {p.name for p in DOCS.glob("*.md")}
    assert PAGES <= on_disk, PAGES - on_disk
    assert nav == on_disk, (nav ^ on_disk)


def test_code_cites_existing_pages_and_sections_and_nothing_outside_the_repository():
    anchors = {page: _anchors(DOCS / page) for page in PAGES}
    bad, outside = [], []
    for path in _committed(".py", ".md", ".yaml", ".toml"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            where = f"{path.relative_to(REPO)}:{number}"
            for page, anchor in CITATION.findall(line):
                if page not in anchors or (anchor and anchor not in anchors[page]):
                    bad.append(f"{where}: docs/{page}{'#' + anchor if anchor else ''}")
            if OUTSIDE.search(line) and path.name != Path(__file__).name:
                outside.append(f"{where}: {OUTSIDE.search(line).group(0)}")
    assert not bad, "citations of missing pages or sections:\n" + "\n".join(bad)
    assert not outside, "citations of files outside the repository:\n" + "\n".join(outside)


def test_readme_is_a_front_page_with_the_two_commands_first():
    readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(readme) <= 300
    first_screen = "\n".join(readme[:45])
    install = re.search(r"^pip install .*-e \"\.\[(\w+)\]\" && bang-nar demo$", first_screen, re.MULTILINE)
    assert install and install.group(1) == "all", "the install + demo command must be on the first screen"
    ci = (REPO / ".ci/run").read_text()
    tests = re.findall(r"^python -m pytest.*$", ci, re.MULTILINE)
    assert tests and f"```bash\n{tests[-1]}\n```" in first_screen, "the README's test command is the one CI runs"
    assert "![" in "\n".join(readme) and "| system |" in "\n".join(readme)  # one picture, one results table
