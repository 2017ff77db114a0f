"""common.onehot_surrogate (thesis eq. 16): the C++ op (CPU, and CUDA where there is a GPU), the
pure-PyTorch fallback and the thesis' vmap reference (tests/onehot_reference.py) agree."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from onehot_reference import onehot_reference  # noqa: E402

HAVE_EXT = common.ONEHOT_IMPL != "torch"
needs_ext = pytest.mark.skipif(not HAVE_EXT, reason="C++ extension not loaded (pure-PyTorch fallback)")
needs_cuda = pytest.mark.skipif(not (HAVE_EXT and common._ONEHOT_CUDA and torch.cuda.is_available()),
                                reason="no GPU, or the CUDA kernels were not built")


def ext(z, k=20.0, dim=-1):
    return torch.ops.ldf_ip.onehot_surrogate(z, float(k), dim)[0]


IMPLS = {"ext": ext, "torch": common.onehot_surrogate_torch, "reference": onehot_reference}
FAST = ["ext", "torch"] if HAVE_EXT else ["torch"]


def forward_backward(f, z, g, k=20.0, dim=-1):
    z = z.detach().clone().requires_grad_()
    out = f(z, k, dim)
    out.backward(g)
    return out.detach(), z.grad


def assert_agree(z, g, impls, k=20.0, dim=-1):
    """Same forward (exactly) and the same gradient (<= 1e-6 relative) from every implementation."""
    results = {name: forward_backward(IMPLS[name], z, g, k, dim) for name in impls}
    expected = F.one_hot(z.argmax(dim), z.shape[dim]).to(z.dtype).movedim(-1, dim % z.dim())
    first = results[impls[0]][1]
    assert torch.isfinite(first).all()
    for name, (out, grad) in results.items():
        assert torch.equal(out, expected), name
        torch.testing.assert_close(grad, first, rtol=1e-6, atol=1e-12 * first.abs().max().item(),
                                   msg=lambda m: f"{name} vs {impls[0]}: {m}")
    return results


def randn(*shape, dtype=torch.float64, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=dtype, generator=gen) * scale


# ------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,dim", [((7, 5), -1), ((4, 6, 3), 1), ((4, 6, 3), 0), ((9, 1), -1),
                                       ((3, 0, 4), -1)])
def test_forward_is_onehot_of_argmax(impl, dtype, shape, dim):
    z = randn(*shape, dtype=dtype)
    z.view(-1)[::3] = 0.5  # ties
    out = IMPLS[impl](z, 20.0, dim)
    expected = F.one_hot(z.argmax(dim), z.shape[dim]).to(dtype).movedim(-1, dim % z.dim())
    assert out.dtype == dtype and torch.equal(out, expected)


@pytest.mark.parametrize("impl", FAST)
def test_forward_nan_and_inf_follow_argmax(impl):
    z = torch.tensor([[1.0, float("nan"), 3.0, float("nan")], [float("-inf"), 2.0, float("inf"), 0.0],
                      [-0.0, 0.0, -1.0, -0.0]] * 7)  # 21 rows of 4, and rows of 16+ below
    wide = randn(3, 40).float()
    wide[0, 17], wide[0, 30], wide[1, 5] = float("nan"), float("nan"), float("inf")
    for x in (z, wide):
        expected = F.one_hot(x.argmax(-1), x.shape[-1]).float()
        assert torch.equal(IMPLS[impl](x, 20.0, -1), expected)


# ------------------------------------------------------------------------------------ gradient
def smooth_twin(z0, k, dim):
    """A smooth f whose Jacobian at z0 is eq. 16's surrogate Jacobian: with m = argmax(z0) and z_max,
    z_pen frozen at z0, f_j = sigmoid(k (z_j - z_m)) for j != m and
    f_m = sigmoid(k (z_m - z_pen)) - sum_{j != m} sigmoid(k (z_j - z_max))."""
    m = z0.argmax(dim, keepdim=True)
    z_max = z0.gather(dim, m)
    z_pen = z0.scatter(dim, m, float("-inf")).amax(dim, keepdim=True)
    not_m = torch.ones_like(z0).scatter_(dim, m, 0.0)

    def f(z):
        others = torch.sigmoid(k * (z - z.gather(dim, m))) * not_m
        frozen = (torch.sigmoid(k * (z - z_max)) * not_m).sum(dim, keepdim=True)
        return others.scatter(dim, m, torch.sigmoid(k * (z.gather(dim, m) - z_pen)) - frozen)
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
    assert torch.autograd.gradcheck(lambda z: IMPLS[impl](z, k, dim) + twin(z).detach(), (z0,))


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_agree_random(dim):
    z = randn(6, 7, 5, scale=0.3)
    assert_agree(z, randn(6, 7, 5, seed=1), FAST + ["reference"], dim=dim)


def test_agree_on_softmax_probabilities():
    """As the thesis fed it: the probabilities of a softmax, gaps below 1."""
    z = torch.softmax(randn(4, 10, 12, scale=2.0), -1)
    assert_agree(z, randn(4, 10, 12, seed=1), FAST + ["reference"])


def test_agree_on_ties():
    z = torch.randint(0, 3, (5, 8, 6), generator=torch.Generator().manual_seed(0)).double() * 0.1
    results = assert_agree(z, randn(5, 8, 6, seed=1), FAST + ["reference"])
    assert (results["torch"][0].sum(-1) == 1).all()


@pytest.mark.parametrize("k", [20.0, 1.0, -5.0])
def test_agree_for_any_k(k):
    assert_agree(randn(3, 4, 9, scale=0.2), randn(3, 4, 9, seed=1), FAST + ["reference"], k=k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_gaps_stay_finite(dtype):
    """Gaps of hundreds: the thesis' sigma_f is NaN there (exp overflows), ours is finite."""
    z = randn(4, 6, 50, scale=300.0).to(dtype)
    g = randn(4, 6, 50, seed=1).to(dtype)
    _, ref = forward_backward(onehot_reference, z, g)
    assert torch.isnan(ref).any()
    results = assert_agree(z, g, FAST)
    assert all(torch.isfinite(grad).all() for _, grad in results.values())


@pytest.mark.parametrize("shape,rows", [((2, 50, 160), None), ((2, 2, 2880, 3), None),
                                        ((1, 20, 2881), 1)])
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


# ------------------------------------------------------------------------------------ registration
@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,dim", [((4, 7), -1), ((3, 5, 2), 1), ((6, 1), 1)])
def test_opcheck(dtype, shape, dim):
    z = randn(*shape).to(dtype).requires_grad_()
    torch.library.opcheck(torch.ops.ldf_ip.onehot_surrogate.default, (z, 20.0, dim))
    _, index = torch.ops.ldf_ip.onehot_surrogate(z.detach(), 20.0, dim)
    torch.library.opcheck(torch.ops.ldf_ip.onehot_surrogate_backward.default,
                          (torch.randn_like(z.detach()), z.detach(), index, 20.0, dim))


@needs_ext
def test_compile_without_graph_break():
    def loss(z):
        return (common.onehot_surrogate(z * 2.0, 20.0, -1) * torch.arange(5.0)).sum()

    z = randn(3, 5).float().requires_grad_()
    eager = torch.autograd.grad(loss(z), z)[0]
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(torch.autograd.grad(compiled(z), z)[0], eager)


def test_public_function_uses_the_loaded_implementation():
    assert common.ONEHOT_IMPL in ("prebuilt", "jit", "torch")
    z, g = randn(3, 9), randn(3, 9, seed=1)
    _, expected = forward_backward(IMPLS[FAST[0]], z, g)
    _, grad = forward_backward(common.onehot_surrogate, z, g)
    assert torch.equal(grad, expected)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("z,message", [
    (torch.zeros(3, 4, dtype=torch.int64), "must be float32 or float64"),
    (torch.zeros(3, 4, dtype=torch.float16), "must be float32 or float64"),
    (torch.zeros(3, 0), "class dimension"),
    (torch.tensor(1.0), "at least one dimension"),
])
def test_bad_input(impl, z, message):
    with pytest.raises(RuntimeError, match=message):
        IMPLS[impl](z, 20.0, -1)


@needs_ext
def test_bad_backward_arguments():
    z = randn(3, 4)
    _, index = torch.ops.ldf_ip.onehot_surrogate(z, 20.0, -1)
    bwd = torch.ops.ldf_ip.onehot_surrogate_backward
    with pytest.raises(RuntimeError, match="grad is Float but z is Double"):
        bwd(z.float(), z, index, 20.0, -1)
    with pytest.raises(RuntimeError, match="index must be int64"):
        bwd(z, z, index.int(), 20.0, -1)
    with pytest.raises(RuntimeError, match="index out of range"):
        bwd(z, z, index + 4, 20.0, -1)
    with pytest.raises(RuntimeError, match="k must be finite"):
        bwd(z, z, index, float("inf"), -1)
    with pytest.raises(RuntimeError, match="one device"):
        bwd(z, z, index.to("meta"), 20.0, -1)


def test_fallback_warns_once_when_the_build_fails(tmp_path):
    """No compiler: the loader warns and runs the pure-PyTorch version."""
    if common.ONEHOT_IMPL == "prebuilt":
        pytest.skip("a prebuilt extension is importable, the JIT path is not taken")
    env = dict(os.environ, CXX="false", LDF_IP_BUILD_DIR=str(tmp_path))
    env.pop("LDF_IP_ONEHOT", None)
    code = ("import warnings, torch; warnings.simplefilter('always'); import common; "
            "print(common.ONEHOT_IMPL); z = torch.randn(3, 4, requires_grad=True); "
            "common.onehot_surrogate(z).sum().backward(); print(z.grad.shape)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["torch", "torch.Size([3,", "4])"]
    assert run.stderr.count("UserWarning: ldf-ip: onehot_surrogate falls back to pure PyTorch") == 1


# ------------------------------------------------------------------------------------ CUDA
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,dim", [((4, 50, 160), -1), ((2, 20, 2881), -1),
                                       ((4, 2, 2880, 3), -1), ((5, 7, 3), 1), ((6, 1), -1),
                                       ((3, 33), -1), ((3, 40), 0)])
def test_cuda_matches_cpu(dtype, shape, dim):
    z, g = randn(*shape, scale=0.5).to(dtype), randn(*shape, seed=1).to(dtype)
    z.view(-1)[::7] = 0.25  # ties
    out_cpu, grad_cpu = forward_backward(ext, z, g, dim=dim)
    out_gpu, grad_gpu = forward_backward(ext, z.cuda(), g.cuda(), dim=dim)
    assert torch.equal(out_gpu.cpu(), out_cpu)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(grad_gpu.cpu(), grad_cpu, rtol=tol, atol=tol)


@needs_cuda
def test_cuda_opcheck_and_huge_gaps():
    z = randn(4, 6, 50, scale=300.0).float().cuda().requires_grad_()
    torch.library.opcheck(torch.ops.ldf_ip.onehot_surrogate.default, (z, 20.0, -1))
    _, grad = forward_backward(ext, z, torch.randn_like(z))
    assert torch.isfinite(grad).all()
