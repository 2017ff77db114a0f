"""csrc.ops.onehot_surrogate (thesis eq. 16): the C++ op (CPU, and CUDA where there is a GPU), the
pure-PyTorch fallback and the thesis' vmap reference (csrc/reference.py) agree; both
implementations treat bad arguments, infinities, NaN and a double backward alike; the CUDA source
compiles with a minimal CUDA toolkit."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils import cpp_extension

from csrc import ops
from csrc.reference import onehot_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_EXT = ops.ONEHOT_IMPL != "torch"
needs_ext = pytest.mark.skipif(
    not HAVE_EXT, reason="C++ extension not loaded (pure-PyTorch fallback)"
)
needs_cuda = pytest.mark.skipif(
    not (HAVE_EXT and ops.ONEHOT_CUDA and torch.cuda.is_available()),
    reason="no GPU, or the CUDA kernels were not built",
)

K = 20.0
INF = float("inf")
NAN = float("nan")
DTYPES = [torch.float32, torch.float64]
SUBPROCESS_TIMEOUT_S = 120
NVCC_TIMEOUT_S = 600


def ext(z, k=K, dim=-1):
    onehot, _index = torch.ops.ldf_ip.onehot_surrogate(z, float(k), dim)
    return onehot


IMPLS = {"ext": ext, "torch": ops.onehot_surrogate_torch, "reference": onehot_reference}
FAST = ["ext", "torch"] if HAVE_EXT else ["torch"]


def forward_backward(f, z, g, k=K, dim=-1):
    z = z.detach().clone().requires_grad_()
    out = f(z, k, dim)
    out.backward(g)
    return out.detach(), z.grad


def onehot_of_argmax(z, dim):
    return F.one_hot(z.argmax(dim), z.shape[dim]).to(z.dtype).movedim(-1, dim % z.dim())


# relative tolerance between implementations (exp vs sigmoid, sums in another order)
AGREE_RTOL = {torch.float32: 1e-5, torch.float64: 1e-6}


def assert_agree(z, g, impls, k=K, dim=-1):
    """Same forward (exactly) and the same gradient (to AGREE_RTOL) from every implementation."""
    results = {name: forward_backward(IMPLS[name], z, g, k, dim) for name in impls}
    expected = onehot_of_argmax(z, dim)
    first = results[impls[0]][1]
    assert torch.isfinite(first).all()
    for name, (out, grad) in results.items():
        assert torch.equal(out, expected), name
        torch.testing.assert_close(
            grad,
            first,
            rtol=AGREE_RTOL[z.dtype],
            atol=1e-12 * first.abs().max().item(),
            msg=lambda m, name=name: f"{name} vs {impls[0]}: {m}",
        )
    return results


def randn(*shape, dtype=torch.float64, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=dtype, generator=gen) * scale


def error_of(call):
    """(type, message) of the error that call() raises."""
    try:
        call()
    except (RuntimeError, IndexError) as err:
        return type(err), str(err)
    raise AssertionError("no error raised")


# ------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,dim",
    [((7, 5), -1), ((4, 6, 3), 1), ((4, 6, 3), 0), ((9, 1), -1), ((3, 0, 4), -1)],
)
def test_forward_is_onehot_of_argmax(impl, dtype, shape, dim):
    z = randn(*shape, dtype=dtype)
    z.view(-1)[::3] = 0.5  # ties
    out = IMPLS[impl](z, K, dim)
    assert out.dtype == dtype and torch.equal(out, onehot_of_argmax(z, dim))


@pytest.mark.parametrize("impl", FAST)
def test_forward_nan_and_inf_follow_argmax(impl):
    rows = [[1.0, NAN, 3.0, NAN], [-INF, 2.0, INF, 0.0], [-0.0, 0.0, -1.0, -0.0]]
    z = torch.tensor(rows * 7)  # 21 rows of 4, and rows of 16+ below
    wide = randn(3, 40).float()
    wide[0, 17] = NAN
    wide[0, 30] = NAN
    wide[1, 5] = INF
    for x in (z, wide):
        expected = F.one_hot(x.argmax(-1), x.shape[-1]).float()
        assert torch.equal(IMPLS[impl](x, K, -1), expected)


# ------------------------------------------------------------------------------------ gradient
def smooth_twin(z0, k, dim):
    """A smooth f whose Jacobian at z0 is eq. 16's surrogate Jacobian: with m = argmax(z0) and
    z_max, z_pen frozen at z0, f_j = sigmoid(k (z_j - z_m)) for j != m and
    f_m = sigmoid(k (z_m - z_pen)) - sum_{j != m} sigmoid(k (z_j - z_max))."""
    m = z0.argmax(dim, keepdim=True)
    z_max = z0.gather(dim, m)
    z_pen = z0.scatter(dim, m, -INF).amax(dim, keepdim=True)
    not_m = torch.ones_like(z0).scatter_(dim, m, 0.0)

    def f(z):
        others = torch.sigmoid(k * (z - z.gather(dim, m))) * not_m
        frozen = (torch.sigmoid(k * (z - z_max)) * not_m).sum(dim, keepdim=True)
        at_max = torch.sigmoid(k * (z.gather(dim, m) - z_pen)) - frozen
        return others.scatter(dim, m, at_max)

    return f


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("shape,dim", [((3, 6), -1), ((2, 5, 3), 1), ((4, 2), -1), ((3, 1), -1)])
def test_gradcheck(impl, shape, dim):
    """gradcheck of op(z) + twin(z).detach(): autograd sees only the op's backward, finite
    differences see only the twin (the one-hot is piecewise constant), so they agree iff the op's
    backward is the surrogate Jacobian."""
    k = 3.0  # gentle slopes, so that finite differences are accurate
    z0 = randn(*shape, scale=0.5).requires_grad_()
    twin = smooth_twin(z0.detach(), k, dim)

    def op_plus_twin(z):
        return IMPLS[impl](z, k, dim) + twin(z).detach()

    assert torch.autograd.gradcheck(op_plus_twin, (z0,))


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_agree_random(dim):
    z = randn(6, 7, 5, scale=0.3)
    assert_agree(z, randn(6, 7, 5, seed=1), FAST + ["reference"], dim=dim)


def test_agree_on_softmax_probabilities():
    """As the thesis fed it: the probabilities of a softmax, gaps below 1."""
    z = torch.softmax(randn(4, 10, 12, scale=2.0), -1)
    assert_agree(z, randn(4, 10, 12, seed=1), FAST + ["reference"])


def test_agree_on_ties():
    gen = torch.Generator().manual_seed(0)
    z = torch.randint(0, 3, (5, 8, 6), generator=gen).double() * 0.1
    results = assert_agree(z, randn(5, 8, 6, seed=1), FAST + ["reference"])
    assert (results["torch"][0].sum(-1) == 1).all()


@pytest.mark.parametrize("k", [20.0, 1.0, 0.05])
def test_agree_for_any_k(k):
    assert_agree(randn(3, 4, 9, scale=0.2), randn(3, 4, 9, seed=1), FAST + ["reference"], k=k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_gaps_stay_finite(dtype):
    """Gaps of hundreds: the thesis' sigma_f is NaN there (exp overflows), ours is finite."""
    z = randn(4, 6, 50, scale=300.0).to(dtype)
    g = randn(4, 6, 50, seed=1).to(dtype)
    _, ref = forward_backward(onehot_reference, z, g)
    assert torch.isnan(ref).any()
    results = assert_agree(z, g, FAST)
    assert all(torch.isfinite(grad).all() for _, grad in results.values())


@pytest.mark.parametrize(
    "shape,rows", [((2, 50, 160), None), ((2, 2, 2880, 3), None), ((1, 20, 2881), 1)]
)
def test_agree_on_csp_shapes(shape, rows):
    """The three CSP heads. The reference's Python loop over 2881 classes takes ~0.3 s for one row
    and ~30 s for two (vmap batches its in-place writes badly), so it sees one row of the 20."""
    z, g = randn(*shape, scale=0.5), randn(*shape, seed=1)
    assert_agree(z, g, FAST)
    if rows is not None:
        z, g = z[:, :rows], g[:, :rows]
    assert_agree(z, g, FAST + ["reference"])


def test_float32_agrees_with_float64():
    z, g = randn(3, 7, 160, scale=0.2), randn(3, 7, 160, seed=1)
    for impl in FAST:
        _, g64 = forward_backward(IMPLS[impl], z, g)
        _, g32 = forward_backward(IMPLS[impl], z.float(), g.float())
        torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", ["transpose", "slice", "expanded_grad"])
def test_non_contiguous(make):
    base, g = randn(6, 5, 8), randn(6, 5, 8, seed=1)
    if make == "transpose":
        z, g, dim = base.transpose(0, 2), g.transpose(0, 2), 1
    elif make == "slice":
        z, g, dim = base[:, ::2, 1:], g[:, ::2, 1:], -1
    else:
        z, g, dim = base, torch.ones(1, 1, 8, dtype=torch.float64).expand(6, 5, 8), 0
    assert not z.is_contiguous() or not g.is_contiguous()
    assert_agree(z, g, FAST + ["reference"], dim=dim)


# ------------------------------------------------------------------------------------ infinities
# Row lengths that reach every CPU kernel: C = 1 and 5..15 (scalar short rows), 2..4 (SIMD rows as
# lanes), 16..64 (SIMD long rows), > 64 (scalar long rows when strided, else SIMD).
KERNEL_ROW_LENGTHS = [1, 2, 3, 4, 5, 16, 20, 70]
SPECIAL_ROWS = 20  # > 2 vectors of rows for the SIMD kernels of short rows, and a remainder


def special_rows(n_classes, dtype):
    """SPECIAL_ROWS random rows of n_classes, the first eight holding infinities."""
    z = randn(SPECIAL_ROWS, n_classes, dtype=dtype)
    last = n_classes - 1
    z[0, 0] = INF  # tied +inf maxima
    z[0, last] = INF
    z[1] = -INF  # all -inf
    z[2, n_classes // 2] = INF  # a +inf max, finite others
    z[3, ::2] = -INF  # -inf entries, a finite max
    z[4, 0] = INF  # a +inf max, a -inf entry
    z[4, last] = -INF
    z[5] = INF  # all +inf
    z[6] = -INF  # a finite max among -inf: the runner-up is -inf
    z[6, last] = 1.0
    z[7, ::2] = -INF  # tied +inf maxima among -inf
    z[7, 1::2] = INF
    return z


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", KERNEL_ROW_LENGTHS)
@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_infinities_give_finite_gradients_alike(dtype, n_classes, layout):
    """Ties of +inf, rows of -inf, +inf or -inf among finite entries: a finite gradient, the same
    from the C++ kernels (every row kernel; contiguous or strided rows) and from PyTorch."""
    z = special_rows(n_classes, dtype)
    g = randn(*z.shape, dtype=dtype, seed=1)
    dim = -1
    if layout == "columns":
        z, g, dim = z.T, g.T, 0
    assert_agree(z, g, FAST, dim=dim)


EXPLICIT_K = 4.0  # the slope of a tie, k / 4, is then 1
EXPLICIT_GRAD = [1.0, 2.0, 3.0]
EXPLICIT_ROWS = 9  # > 8: the SIMD kernels of short rows take whole vectors of rows


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "row,expected",
    [
        # equal infinities are a tie: slope k/4; an infinite gap: slope 0
        ([INF, INF, 0.0], [-1.0, 1.0, 0.0]),
        ([-INF, -INF, -INF], [-4.0, 1.0, 2.0]),
        ([1.0, INF, -3.0], [0.0, 0.0, 0.0]),
        ([-INF, 2.0, 2.0], [0.0, -1.0, 1.0]),
        ([-INF], [0.0]),  # a single class: no runner-up, gradient 0
        ([INF], [0.0]),
    ],
)
def test_infinite_rows_gradient_values(impl, dtype, row, expected):
    """Eq. 16 with sigma_f(a, b) = k/4 where a == b (infinite or not), 0 for an infinite gap."""
    n_classes = len(row)
    z = torch.tensor([row] * EXPLICIT_ROWS, dtype=dtype)
    g = torch.tensor([EXPLICIT_GRAD[:n_classes]] * EXPLICIT_ROWS, dtype=dtype)
    _, grad = forward_backward(IMPLS[impl], z, g, k=EXPLICIT_K)
    want = torch.tensor([expected] * EXPLICIT_ROWS, dtype=dtype)
    torch.testing.assert_close(grad, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", KERNEL_ROW_LENGTHS)
def test_nan_rows_get_nan_gradients(dtype, n_classes):
    """A NaN is its row's argmax (torch.argmax): the row's gradient is NaN throughout, unless the
    row has a single class (then it is 0: the one-hot does not depend on z); other rows are not
    touched. The same from every implementation."""
    z = randn(SPECIAL_ROWS, n_classes, dtype=dtype)
    g = randn(SPECIAL_ROWS, n_classes, dtype=dtype, seed=1)
    nan_rows = [2, 5, 7]
    z[2, n_classes // 2] = NAN
    z[5, 0] = NAN
    z[5, -1] = NAN
    z[7, 0] = INF
    z[7, -1] = NAN
    has_nan = torch.zeros(SPECIAL_ROWS, dtype=torch.bool)
    has_nan[nan_rows] = True
    grads = {}
    for impl in FAST:
        out, grad = forward_backward(IMPLS[impl], z, g)
        assert torch.equal(out, onehot_of_argmax(z, -1)), impl
        if n_classes == 1:
            assert torch.equal(grad, torch.zeros_like(grad)), impl
        else:
            assert grad[has_nan].isnan().all(), impl
            assert grad[~has_nan].isfinite().all(), impl
        grads[impl] = grad
    for impl, grad in grads.items():
        torch.testing.assert_close(grad, grads[FAST[0]], equal_nan=True, msg=impl)


# ---------------------------------------------------------------------------- double backward
@pytest.mark.parametrize("impl", FAST)
def test_double_backward_is_refused_alike(impl):
    """The first-order gradient under create_graph=True is the usual one (no warning); then
    differentiating it raises the same error in both implementations."""
    z = randn(3, 5).requires_grad_()
    weights = randn(3, 5, seed=1)
    _, expected = forward_backward(IMPLS[impl], z, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = (IMPLS[impl](z, K, -1) * weights).sum()
        (grad,) = torch.autograd.grad(loss, z, create_graph=True)
        torch.testing.assert_close(grad.detach(), expected)
        assert grad.requires_grad
        with pytest.raises(RuntimeError, match=re.escape(ops.DOUBLE_BACKWARD_ERROR)):
            grad.pow(2).sum().backward()


# ------------------------------------------------------------------------------------ registration
@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((4, 7), -1), ((3, 5, 2), 1), ((6, 1), 1)])
def test_opcheck(dtype, shape, dim):
    z = randn(*shape).to(dtype).requires_grad_()
    torch.library.opcheck(torch.ops.ldf_ip.onehot_surrogate.default, (z, K, dim))
    _, index = torch.ops.ldf_ip.onehot_surrogate(z.detach(), K, dim)
    backward_args = (torch.randn_like(z.detach()), z.detach(), index, K, dim)
    torch.library.opcheck(torch.ops.ldf_ip.onehot_surrogate_backward.default, backward_args)


@needs_ext
def test_compile_without_graph_break():
    def loss(z):
        return (ops.onehot_surrogate(z * 2.0, K, -1) * torch.arange(5.0)).sum()

    z = randn(3, 5).float().requires_grad_()
    eager = torch.autograd.grad(loss(z), z)[0]
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(torch.autograd.grad(compiled(z), z)[0], eager)


def test_public_function_uses_the_loaded_implementation():
    assert ops.ONEHOT_IMPL in ("prebuilt", "jit", "torch")
    assert isinstance(ops.ONEHOT_CUDA, bool)
    z, g = randn(3, 9), randn(3, 9, seed=1)
    _, expected = forward_backward(IMPLS[FAST[0]], z, g)
    _, grad = forward_backward(ops.onehot_surrogate, z, g)
    assert torch.equal(grad, expected)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize(
    "z,message",
    [
        (torch.zeros(3, 4, dtype=torch.int64), "must be float32 or float64, got torch.int64"),
        (torch.zeros(3, 4, dtype=torch.float16), "must be float32 or float64, got torch.float16"),
        (torch.zeros(3, 0), "class dimension"),
        (torch.tensor(1.0), "at least one dimension"),
    ],
)
def test_bad_input(impl, z, message):
    with pytest.raises(RuntimeError, match=message):
        IMPLS[impl](z, K, -1)


@pytest.mark.parametrize("k", [-1.0, 0.0, -0.0, -20.0, 1e-300 * -1, INF, -INF, NAN])
def test_k_must_be_positive_and_finite(k):
    """Both implementations refuse k <= 0 (which flipped the gradient) and non-finite k, with the
    same message."""
    z = randn(3, 4)
    expected = (RuntimeError, f"onehot_surrogate: k must be positive and finite, got {k:g}")
    for impl in FAST:
        assert error_of(lambda impl=impl: IMPLS[impl](z, k, -1)) == expected, impl


@pytest.mark.parametrize("shape,dim", [((3, 4), 2), ((3, 4), -3), ((3, 4), 100), ((5,), 1)])
def test_dim_out_of_range(shape, dim):
    """The same IndexError, with the same message, from both implementations."""
    z = randn(*shape)
    n_dims = len(shape)
    message = (
        f"onehot_surrogate: dim {dim} is out of range for z of {n_dims} dimensions "
        f"(expected {-n_dims} to {n_dims - 1})"
    )
    for impl in FAST:
        assert error_of(lambda impl=impl: IMPLS[impl](z, K, dim)) == (IndexError, message), impl


@needs_ext
def test_bad_backward_arguments():
    z = randn(3, 4)
    _, index = torch.ops.ldf_ip.onehot_surrogate(z, K, -1)
    bwd = torch.ops.ldf_ip.onehot_surrogate_backward
    with pytest.raises(RuntimeError, match="grad is torch.float32 but z is torch.float64"):
        bwd(z.float(), z, index, K, -1)
    with pytest.raises(RuntimeError, match="index must be int64"):
        bwd(z, z, index.int(), K, -1)
    with pytest.raises(RuntimeError, match="index out of range"):
        bwd(z, z, index + 4, K, -1)
    with pytest.raises(RuntimeError, match="k must be positive and finite"):
        bwd(z, z, index, INF, -1)
    with pytest.raises(RuntimeError, match="k must be positive and finite"):
        bwd(z, z, index, -K, -1)
    with pytest.raises(IndexError, match="dim 2 is out of range"):
        bwd(z, z, index, K, 2)
    with pytest.raises(RuntimeError, match="one device"):
        bwd(z, z, index.to("meta"), K, -1)


# ------------------------------------------------------------------------------------ loading
def run_python(code, **env_changes):
    env = dict(os.environ, **env_changes)
    env.pop("LDF_IP_ONEHOT", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def test_fallback_warns_once_when_the_build_fails(tmp_path):
    """No compiler: the loader warns and runs the pure-PyTorch version. Importing csrc.ops builds
    nothing; the first use does."""
    if ops.ONEHOT_IMPL == "prebuilt":
        pytest.skip("a prebuilt extension is importable, the JIT path is not taken")
    code = (
        "import warnings, torch; warnings.simplefilter('always'); import csrc.ops as ops; "
        "print(len(ops._backend_state)); print(ops.ONEHOT_IMPL); "
        "z = torch.randn(3, 4, requires_grad=True); "
        "ops.onehot_surrogate(z).sum().backward(); print(z.grad.shape)"
    )
    run = run_python(code, CXX="false", LDF_IP_BUILD_DIR=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0", "torch", "torch.Size([3,", "4])"]
    fallback_warning = "UserWarning: ldf-ip: onehot_surrogate falls back to pure PyTorch"
    assert run.stderr.count(fallback_warning) == 1


# ------------------------------------------------------------------------------ CPU capabilities
AVX2_OBJECT = "onehot_vec_avx2.o"
STATIC_INITIALIZER_PREFIX = "_GLOBAL__sub_I_"
NM_FUNCTION_TYPES = "TtWwi"  # text symbols, global, local and weak, and indirect functions
DEFAULT_CAPABILITY_CODE = """
import sys, torch
from csrc import ops
assert ops.ONEHOT_IMPL != "torch", "no C++ op"
assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
results = []
for z, g in torch.load(sys.argv[1]):
    z.requires_grad_()
    out = ops.onehot_surrogate(z, {k})
    out.backward(g)
    results.append((out.detach(), z.grad))
torch.save(results, sys.argv[2])
"""


@needs_ext
def test_default_capability_kernels_agree(tmp_path):
    """The DEFAULT build of the SIMD kernels (onehot_vec_default.cpp: NEON on aarch64; on x86 the
    generic Vectorized, chosen under ATEN_CPU_CAPABILITY=default) gives the forward of this
    CPU's kernels exactly and its gradient to AGREE_RTOL, on rows that reach every kernel."""
    cases = []
    for dtype in DTYPES:
        for n_classes in KERNEL_ROW_LENGTHS:
            z = special_rows(n_classes, dtype)
            z[SPECIAL_ROWS - 1, n_classes // 2] = NAN
            cases.append((z, randn(*z.shape, dtype=dtype, seed=1)))
    inputs, outputs = tmp_path / "inputs.pt", tmp_path / "outputs.pt"
    torch.save(cases, inputs)
    run = subprocess.run(
        [sys.executable, "-c", DEFAULT_CAPABILITY_CODE.format(k=K), str(inputs), str(outputs)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "ATEN_CPU_CAPABILITY": "default"},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr
    for (z, g), (out_default, grad_default) in zip(cases, torch.load(outputs), strict=True):
        out, grad = forward_backward(ext, z, g)
        assert torch.equal(out_default, out)
        torch.testing.assert_close(
            grad_default, grad, rtol=AGREE_RTOL[z.dtype], atol=1e-12, equal_nan=True
        )


def test_avx2_object_defines_only_avx2_functions():
    """onehot_vec_avx2.cpp is compiled for AVX2 (by pragma). A function of the baseline (the
    standard library's, c10's) compiled there would be a second copy under the same name, which
    the linker may pick for the whole library: an illegal instruction on a CPU without AVX2.
    So every function that its object defines is named after AVX2 (ldf_ip::AVX2, at::vec::AVX2,
    or a template of them), unique to it."""
    if ops.ONEHOT_IMPL != "jit":
        pytest.skip("checks the object files of the JIT build")
    name = ops.JIT_NAME_CUDA if ops.ONEHOT_CUDA else ops.JIT_NAME_CPU
    obj = os.path.join(ops.jit_build_dir(name), AVX2_OBJECT)
    if not os.path.exists(obj) or shutil.which("nm") is None:
        pytest.skip(f"no {AVX2_OBJECT} (not x86-64 GCC) or no nm")
    listing = subprocess.run(
        ["nm", "-C", "--defined-only", obj], check=True, capture_output=True, text=True
    ).stdout
    functions = [
        line.split(" ", 2)[2]
        for line in listing.splitlines()
        if line.split(" ")[1] in NM_FUNCTION_TYPES
    ]
    assert any("ldf_ip::AVX2::" in f for f in functions)
    stray = [
        f for f in functions if "AVX2::" not in f and not f.startswith(STATIC_INITIALIZER_PREFIX)
    ]
    assert not stray


AARCH64_CXX = "aarch64-linux-gnu-g++"  # a cross compiler (Debian: g++-aarch64-linux-gnu)


@pytest.mark.slow
@pytest.mark.parametrize("source", [*ops.CPU_SOURCES])
def test_sources_compile_for_aarch64(tmp_path, source):
    """Every C++ source of the library compiles for aarch64 (the op's SIMD kernels as NEON
    Vectorized), with torch's headers and the library's flags; without a cross compiler, skipped."""
    cxx = shutil.which(AARCH64_CXX)
    if cxx is None:
        pytest.skip(f"no {AARCH64_CXX}")
    command = [cxx, "-std=c++20", "-fPIC", *ops.CXX_FLAGS, "-c"]
    command += [os.path.join(ops.CSRC_DIR, source), "-o", str(tmp_path / "out.o")]
    command += [f"-I{folder}" for folder in cpp_extension.include_paths()]
    command += [f"-I{sysconfig.get_paths()['include']}"]
    run = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=NVCC_TIMEOUT_S
    )
    assert run.returncode == 0, run.stderr[-2000:]


# ------------------------------------------------------------------------------------ CUDA
# A CPU build of torch ships c10/cuda headers but not this generated one, without which they do
# not compile.
TORCH_CUDA_CONFIG_HEADER = os.path.join("c10", "cuda", "impl", "cuda_cmake_macros.h")


def find_nvcc():
    nvcc = shutil.which("nvcc")
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if nvcc is None and cuda_home and os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        nvcc = os.path.join(cuda_home, "bin", "nvcc")
    return nvcc


def nvcc_compile_command(nvcc, output, extra_include_dirs=()):
    """`nvcc -c csrc/onehot_cuda.cu` with the flags of torch.utils.cpp_extension's CUDA builds."""
    include_dirs = [*extra_include_dirs, *cpp_extension.include_paths()]
    command = [nvcc, "-c", os.path.join(ops.CSRC_DIR, ops.CUDA_SOURCE), "-o", output]
    command += [f"-I{folder}" for folder in include_dirs]
    command += cpp_extension.COMMON_NVCC_FLAGS
    command += ["-std=c++20", "--compiler-options", "-fPIC", *ops.CUDA_FLAGS]
    if os.environ.get("CC"):
        command = [command[0], "-ccbin", os.environ["CC"], *command[1:]]
    return command


def test_cuda_source_compiles(tmp_path):
    """onehot_cuda.cu needs only the CUDA runtime headers and torch's (no cuBLAS, cuSPARSE or
    cuSOLVER headers, which ATen/cuda/CUDAContext.h pulls in and a minimal toolkit lacks)."""
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc on PATH or in $CUDA_HOME/bin")
    torch_include = cpp_extension.include_paths()[0]
    if not os.path.exists(os.path.join(torch_include, TORCH_CUDA_CONFIG_HEADER)):
        pytest.skip(
            f"torch {torch.__version__} is a build without CUDA: its headers lack "
            f"{TORCH_CUDA_CONFIG_HEADER}"
        )
    command = nvcc_compile_command(nvcc, str(tmp_path / "onehot_cuda.o"))
    run = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=NVCC_TIMEOUT_S
    )
    assert run.returncode == 0, run.stderr[-4000:]


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,dim",
    [
        ((4, 50, 160), -1),
        ((2, 20, 2881), -1),
        ((4, 2, 2880, 3), -1),
        ((5, 7, 3), 1),
        ((6, 1), -1),
        ((3, 33), -1),
        ((3, 40), 0),
    ],
)
def test_cuda_matches_cpu(dtype, shape, dim):
    z, g = randn(*shape, scale=0.5).to(dtype), randn(*shape, seed=1).to(dtype)
    z.view(-1)[::7] = 0.25  # ties
    out_cpu, grad_cpu = forward_backward(ext, z, g, dim=dim)
    out_gpu, grad_gpu = forward_backward(ext, z.cuda(), g.cuda(), dim=dim)
    assert torch.equal(out_gpu.cpu(), out_cpu)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(grad_gpu.cpu(), grad_cpu, rtol=tol, atol=tol)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [1, 3, 20, 40])  # thread kernel up to 32, warp kernel above
@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_cuda_infinities_and_nan_match_cpu(dtype, n_classes, layout):
    z = special_rows(n_classes, dtype)
    z[9, n_classes // 2] = NAN
    g = randn(*z.shape, dtype=dtype, seed=1)
    dim = -1
    if layout == "columns":
        z, g, dim = z.T, g.T, 0
    out_cpu, grad_cpu = forward_backward(ext, z, g, dim=dim)
    out_gpu, grad_gpu = forward_backward(ext, z.cuda(), g.cuda(), dim=dim)
    assert torch.equal(out_gpu.cpu(), out_cpu)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(grad_gpu.cpu(), grad_cpu, rtol=tol, atol=tol, equal_nan=True)


@needs_cuda
def test_cuda_opcheck_and_huge_gaps():
    z = randn(4, 6, 50, scale=300.0).float().cuda().requires_grad_()
    torch.library.opcheck(torch.ops.ldf_ip.onehot_surrogate.default, (z, K, -1))
    _, grad = forward_backward(ext, z, torch.randn_like(z))
    assert torch.isfinite(grad).all()
