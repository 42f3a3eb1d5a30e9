"""The code the README and the tutorial show runs as printed, so it cannot rot.

Each document's ```python blocks run top to bottom in one namespace, in a subprocess of their own (the
schemas they define register in the default catalogue, and ``memory://shop`` is one broker per process),
on ``memory://`` with no broker. A block after a ``<!-- no-run -->`` line (the RabbitMQ variants) is
skipped. The README's quickstart prints exactly the ```text block that follows it, and so does
``examples/quickstart.py``, which the distribution check also runs from the installed wheel.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_NO_RUN = "<!-- no-run -->"


def _blocks(document: Path) -> list[tuple[str, str, bool]]:
    """(language, code, runs) of each fenced block, in order."""
    text = document.read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[:match.start()].rstrip().rsplit("\n", 1)[-1]
        found.append((match.group(1), match.group(2), before.strip() != _NO_RUN))
    return found


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, f"the documented code failed:\n{done.stderr[-3000:]}"
    return done.stdout


def _python(document: Path) -> str:
    return "\n".join(code for language, code, runs in _blocks(document) if language == "python" and runs)


def _expected_quickstart_output() -> str:
    blocks = _blocks(ROOT / "README.md")
    first_python = next(i for i, (language, _, runs) in enumerate(blocks) if language == "python" and runs)
    return next(code for language, code, _ in blocks[first_python:] if language == "text")


def test_the_readme_quickstart_prints_what_the_readme_says() -> None:
    assert _run(_python(ROOT / "README.md")) == _expected_quickstart_output()


def test_examples_quickstart_is_the_readme_quickstart() -> None:
    assert _run((ROOT / "examples" / "quickstart.py").read_text()) == _expected_quickstart_output()


def test_the_tutorial_code_runs_as_printed() -> None:
    """(The testing how-to shows snippets; its worked cascade is tests/test_testing_helpers.py, word for word.)"""
    code = _python(ROOT / "docs" / "tutorial.md")
    assert code.count("\n") > 50, "the tutorial shows runnable python"
    _run(code)


def test_the_readme_is_a_front_door() -> None:
    """Under 200 lines; links into the site are absolute, so the package index renders them."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    relative = [link for link in re.findall(r"\]\(([^)]+)\)", text) if not link.startswith(("https://", "#"))]
    assert not relative, relative
