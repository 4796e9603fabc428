"""Every "design.md decision N" cited in the repository's code and docs names a section of
docs/design.md (the README and code once cited a DESIGN.md that was not in the repository)."""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DESIGN = REPO / "docs" / "design.md"


def _tracked_texts():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.endswith((".py", ".md", ".mjs", ".cpp", ".h", ".def", ".ts")):
            yield name, (REPO / name).read_text(errors="replace")


def test_decision_references_resolve():
    sections = {int(n) for n in re.findall(r"^### Decision (\d+):", DESIGN.read_text(), re.MULTILINE)}
    cited = {}
    for name, text in _tracked_texts():
        for m in re.finditer(r"design\.md decisions? (\d+)(?:-(\d+))?", text):
            first, last = int(m.group(1)), int(m.group(2) or m.group(1))
            for n in range(first, last + 1):
                cited.setdefault(n, []).append(name)
    assert cited, "no references found: the pattern no longer matches how the code cites decisions"
    assert not {n: f for n, f in cited.items() if n not in sections}, f"cited decisions missing from docs/design.md: {cited}"

