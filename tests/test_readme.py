"""The README's example runs as written (skipped when the tests run without the sources)."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


@pytest.mark.skipif(not os.path.exists(README), reason="no README.md next to tests/")
def test_readme_example_runs(capsys):
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert blocks, "README.md has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    assert "isa" in capsys.readouterr().out


def test_readme_commands():
    # Exactly two set-up commands, and .ci/run uses the same test command.
    if not os.path.exists(README):
        pytest.skip("no README.md")
    with open(README) as f:
        text = f.read()
    cmds = re.findall(r"```bash\n(python3 -m venv .*?)\n```", text)
    assert len(cmds) == 2, cmds
    assert cmds[0].endswith("python bench/run.py") and '".[bench]"' in cmds[0]
    test_cmd = cmds[1].split("&& ", 2)[2]
    assert test_cmd == 'pip install ".[test]" && python -m pytest -q'
    ci = os.path.join(os.path.dirname(README), ".ci", "run")
    if os.path.exists(ci):
        with open(ci) as f:
            assert test_cmd in f.read()
