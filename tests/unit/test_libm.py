"""repro.libm: transcendental functions whose bits do not depend on the CPU, and the data code that must use them."""

import ast
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro import libm

SRC = Path(__file__).resolve().parents[2] / "src" / "repro"
# every module that draws data (images, masks, noised images); their bytes must not depend on the CPU
DATA_MODULES = ["data/synthmed.py", "data/synthmed_draw.py", "data/synthmed_lesions.py", "data/synthmed_marrow.py",
                "rewards/noise.py"]
DISPATCHED = {"exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "arcsin", "arccos",
              "arctan", "arctan2", "sinh", "cosh", "tanh", "power", "float_power", "cbrt", "hypot"}


def test_known_answers():
    assert libm.exp(0.0) == 1.0 and libm.sin(0.0) == 0.0 and libm.cos(0.0) == 1.0
    assert libm.exp(np.array([0.0, 1.0])).tolist() == [1.0, math.e]
    assert libm.sin(np.array([math.pi / 2])).tolist() == [1.0]
    assert libm.pow(np.array([4.0, 9.0]), 0.5).tolist() == [2.0, 3.0]


def test_types_follow_numpy():
    # a numpy scalar back, float32 stays float32: the call sites' promotion (float32 arrays times np.cos(t))
    # must not change when np.cos becomes libm.cos
    assert type(libm.cos(0.3)) is np.float64 and type(np.cos(0.3)) is np.float64
    x32 = np.linspace(0, 1, 7, dtype=np.float32).reshape(7, 1)
    assert libm.sin(x32).dtype == np.float32 and libm.sin(x32).shape == (7, 1)
    assert libm.sin(np.float32(0.5)).dtype == np.float32
    assert (np.zeros(3, np.float32) * libm.cos(0.3)).dtype == (np.zeros(3, np.float32) * np.cos(0.3)).dtype


def test_pow_rounds_the_exponent_like_numpy():
    # numpy's float32 ** 1.15 raises to float32(1.15) = 1.14999997..., not to the double 1.15
    x = np.array([0.37], np.float32)
    want = np.float32(math.pow(float(x[0]), float(np.float32(1.15))))
    assert libm.pow(x, 1.15)[0] == want
    assert libm.pow(np.array([0.37]), 1.15)[0] == math.pow(0.37, 1.15)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-700, 700), min_size=1, max_size=40))
def test_elementwise_and_close_to_numpy(xs):
    a = np.array(xs)
    for f, ref, g in ((libm.sin, math.sin, np.sin), (libm.cos, math.cos, np.cos)):
        out = f(a)
        assert out.tolist() == [ref(v) for v in xs]
        np.testing.assert_allclose(out, g(a), rtol=0, atol=1e-12)
    small = np.clip(a, -700, 700) / 10
    np.testing.assert_allclose(libm.exp(small), np.exp(small), rtol=1e-14)


def _dispatched_calls(path: Path) -> list[str]:
    """np.<transcendental>(...) calls and `** <non-integer constant>` in a source file."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DISPATCHED
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "np"):
            bad.append(f"{path.name}:{node.lineno} np.{node.func.attr}")
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant)
                and isinstance(node.right.value, float) and not node.right.value.is_integer()):
            bad.append(f"{path.name}:{node.lineno} ** {node.right.value}")
    return bad


def test_the_check_finds_dispatched_calls(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import numpy as np\ny = np.sin(x) + x ** 0.8 + x ** 2 + np.sqrt(x) + libm.cos(x)\n")
    assert _dispatched_calls(f) == ["m.py:2 np.sin", "m.py:2 ** 0.8"]


@pytest.mark.parametrize("module", DATA_MODULES)
def test_data_modules_use_libm(module):
    assert _dispatched_calls(SRC / module) == []


_PROBE = """
import hashlib, json, numpy as np
from repro import libm
from repro.data import synthmed, synthmed_draw, synthmed_lesions
from repro.rewards import noise
rng = np.random.default_rng(0)
x32 = rng.uniform(-30, 30, 4096).astype(np.float32)
parts = {
    "libm": [libm.sin(x32), libm.cos(x32), libm.pow(np.abs(x32) / 30, 1.15), libm.exp(x32.astype(np.float64) / 3)],
    "pools": list(synthmed_draw._pools(32).values()),
    "ribs": [synthmed_lesions._ribs(32)],
    "records": [np.frombuffer(bytes.fromhex(synthmed.fingerprint(
        synthmed.generate(0, synthmed.default_counts(1, 1), 32, 0.5))), np.uint8)],
    "noise": [noise.gaussian_kernel(), np.array([noise.diffusion_xi_bar(500)])],
}
print(json.dumps({k: hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in v)).hexdigest()
                  for k, v in parts.items()}))
"""


def _probe(disable: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC.parent), "NPY_DISABLE_CPU_FEATURES": disable}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_same_bytes_with_numpy_dispatch_off():
    """The data's floats with numpy's CPU dispatch as found and with every dispatched target off (baseline SSE
    kernels): equal. On an AVX512 machine this compares the AVX512 kernels with the baseline; here np.sin on float32
    already differs between the two (the old _ribs failed this test), libm does not."""
    from numpy._core import _multiarray_umath as umath

    found = [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]
    if not found:
        pytest.skip("numpy dispatches nothing beyond its baseline on this CPU")
    assert _probe("") == _probe(" ".join(umath.__cpu_dispatch__))
    x = np.random.default_rng(0).uniform(-30, 30, 4096).astype(np.float32)
    assert hashlib.sha256(libm.sin(x).tobytes()).hexdigest() == hashlib.sha256(
        np.array([math.sin(float(v)) for v in x]).astype(np.float32).tobytes()).hexdigest()
