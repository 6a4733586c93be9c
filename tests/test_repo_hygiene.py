"""Committed files name no folder of the machine they were made on, and link no package-registry page.

Results, sample scripts and model-card templates are read by people on other machines: paths there are given as
typed or relative to the repository, and the cards link the project itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# An absolute path into a home, scratch or work folder, starting a word (so `../../x/` and URLs do not count).
# Also one written relatively, climbing two or more levels up into such a folder.
_MACHINE_DIRS = r"(?:work|root|home|Users|tmp|mnt/\w+)/[\w.-]*"
MACHINE_PATH = re.compile(rf"(?:^|[\s\"'`(=:,\[])(/{_MACHINE_DIRS})|(?:\.\./){{2,}}{_MACHINE_DIRS}")
REGISTRY_LINK = re.compile(r"https?://(?:www\.)?(?:test\.)?(?:pypi\.org|pypi\.python\.org|anaconda\.org|npmjs\.com)")


def committed_text_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of committed files")
    files = []
    for name in listed.stdout.decode().split("\0"):
        path = REPO / name
        if name and path.is_file() and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def test_patterns_catch_what_they_are_for():
    work, tmp, registry = "/" + "work/", "/" + "tmp/", "https://" + "pypi.org/"  # split, or this file would match
    assert MACHINE_PATH.search(f"wrote {work}main/benchmarks/results/x.json") and MACHINE_PATH.search(f'"{tmp}run/x"')
    assert not MACHINE_PATH.search(f"wrote benchmarks/results/x.json from ..{tmp}run and ../shared/data")
    assert MACHINE_PATH.search(f'"model": "../..{tmp}demo/nar_spmd"')
    assert REGISTRY_LINK.search(f"[bang-nar]({registry}project/bang-nar/)")


def test_committed_files_carry_no_machine_paths_or_registry_links():
    files = committed_text_files()
    assert any(p.suffix == ".json" for p in files) and any(p.parent.name == "hub_cards" for p in files)
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            for pattern in (MACHINE_PATH, REGISTRY_LINK):
                match = pattern.search(line)
                if match:
                    found.append(f"{path.relative_to(REPO)}:{number}: {match.group(0).strip()}")
    assert not found, "machine paths or registry links in committed files:\n" + "\n".join(found)
