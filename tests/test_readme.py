"""Every Python example in the README runs as written (a README example that fails is a bug)."""

from __future__ import annotations

import re
import runpy
import shlex

import pytest

from conftest import REPO


def _python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_examples():
    assert _python_blocks(), "README.md should show the Python API"


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    from safetynet.models.pretrained import available_pretrained

    if "cifar10-resnet20" not in available_pretrained():
        pytest.fail("the shipped cifar10-resnet20 checkpoint is missing from src/safetynet/weights")
    script = tmp_path / f"readme_{index}.py"
    script.write_text(_python_blocks()[index])
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")


def _cli_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("safetynet "):
                lines.append(line)
    return lines


def test_readme_has_cli_examples():
    assert len(_cli_lines()) >= 5


@pytest.mark.parametrize("line", _cli_lines())
def test_readme_cli_example_parses(line):
    """Every ``safetynet ...`` line in the README's shell blocks names real sub-commands and flags."""
    from safetynet.cli import build_parser

    try:
        build_parser().parse_args(shlex.split(line)[1:])
    except SystemExit as e:
        pytest.fail(f"README command does not parse (exit {e.code}): {line}")
