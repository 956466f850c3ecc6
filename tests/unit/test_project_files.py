"""The repository stands on its own: no pointer outside it, no word about how it was developed."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# a file of the project citing a document that is not in it, or describing its own development
# rather than what the code does and on what hardware it was measured
# (the words are split so that this file does not match itself)
FORBIDDEN = re.compile("|".join([r"design\.md", r"\.\./shared", r"\bsessions? \d", "development" + r"\s+machine"]),
                       re.IGNORECASE)


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    files = [ROOT / line for line in out.splitlines() if line]
    return [f for f in files if f.is_file() and f.suffix not in {".png", ".jpg", ".parquet", ".db"}]


def test_no_file_points_outside_the_repo_or_at_its_development():
    hits = []
    for path in tracked_text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("doc", ["docs/architecture.md", "docs/scaling.md"])
def test_relative_links_of_the_docs_resolve(doc: str):
    text = (ROOT / doc).read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / doc).parent.joinpath(target).exists() or target.endswith(("data.md", "events.md")), target


def test_test_and_lint_tools_are_not_runtime_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=\[ ]", dep)[0].lower() for dep in project["dependencies"]}
    dev = {re.split(r"[<>=\[ ]", dep)[0].lower() for dep in project["optional-dependencies"]["dev"]}
    assert not runtime & {"pytest", "pytest-timeout", "ruff", "mypy"}
    assert "pytest" in dev
