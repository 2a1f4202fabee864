"""The CUDA emulator's source rewriting (tools/cuda_emu/rewrite.py): launches and dynamic
shared memory, on every machine (the emulator build itself runs in CI step 3)."""

import importlib.util
import os

import pytest

_path = os.path.join(os.path.dirname(__file__), "..", "tools", "cuda_emu", "rewrite.py")
_spec = importlib.util.spec_from_file_location("cuda_emu_rewrite", _path)
rw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rw)


def test_launch_with_template_arguments_and_multiline_args():
    src = "  foo<T, 4><<<dim3(g.x, g.y), 256, smem, s>>>(a, f(b, c),\n      d);\n"
    out = rw.rewrite(src)
    assert out == ('  ::nnk_emu::launch("foo<T, 4>", __FILE__, __LINE__, ::nnk_emu::Cfg(dim3(g.x, g.y), 256, smem, s), '
                   '[&](auto&... nnk_a) { foo<T, 4>(nnk_a...); }, a, f(b, c),\n      d);\n')
    assert out.count("\n") == src.count("\n")  # line numbers kept


def test_launch_namespaced_nested_templates_and_no_args():
    out = rw.rewrite("if (x) ns::k<A<int>, 2><<<1, 32>>>();")
    assert out == ('if (x) ::nnk_emu::launch("ns::k<A<int>, 2>", __FILE__, __LINE__, ::nnk_emu::Cfg(1, 32), '
                   '[&](auto&... nnk_a) { ns::k<A<int>, 2>(nnk_a...); });')


def test_launch_without_template_arguments():
    out = rw.rewrite("partial_sums<<<unsigned(nb), kSumBlock>>>(n, f, p);")
    assert out.startswith('::nnk_emu::launch("partial_sums", __FILE__, __LINE__, ::nnk_emu::Cfg(unsigned(nb), kSumBlock)')
    assert out.endswith("{ partial_sums(nnk_a...); }, n, f, p);")


def test_dynamic_shared_memory():
    out = rw.rewrite("  extern __shared__ __align__(16) unsigned char smem_raw[];\n")
    assert out == "  unsigned char* smem_raw = reinterpret_cast<unsigned char*>(::nnk_emu::cur.dyn_smem);\n"


def test_unbalanced_source_is_an_error():
    with pytest.raises(ValueError):
        rw.rewrite("k<<<1, 1>>>(a, (b);")


def test_every_cuda_source_rewrites():
    """All of csrc/cuda/*.cu go through (no launch left, no extern __shared__ left)."""
    d = os.path.join(os.path.dirname(__file__), "..", "csrc", "cuda")
    n = 0
    for name in sorted(os.listdir(d)):
        if name.endswith(".cu"):
            with open(os.path.join(d, name)) as f:
                src = f.read()
            out = rw.rewrite(src)
            assert "<<<" not in out and "extern __shared__" not in out
            assert out.count("\n") == src.count("\n")
            n += src.count("<<<")
    assert n > 50
