"""Smoke tests: each example runs a few steps in a subprocess and writes its PNG."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnkernels

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

pytest.importorskip("sklearn", reason="the examples need scikit-learn (pip install .[examples])")
pytest.importorskip("matplotlib", reason="the examples need matplotlib (pip install .[examples])")

CASES = [
    ("mlp.py", ["--epochs", "1"], "mlp.png"),
    ("cnn.py", ["--epochs", "1"], "cnn.png"),
    ("rnn.py", ["--epochs", "1"], "rnn.png"),
    ("rnn.py", ["--epochs", "1", "--cell", "gru"], "rnn.png"),
    ("transformer.py", ["--epochs", "1"], "transformer.png"),
    ("gan.py", ["--steps", "20", "--digit-steps", "5"], "gan.png"),
]


@pytest.mark.parametrize("script,args,png", CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_example_runs(script, args, png, tmp_path):
    if not (EXAMPLES / script).exists():
        pytest.skip(f"{script} not written yet")
    env = dict(os.environ)
    pkg_root = str(Path(nnkernels.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    r = subprocess.run([sys.executable, str(EXAMPLES / script), *args, "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert (tmp_path / png).stat().st_size > 1000
    assert "final" in r.stdout
