"""What knapsack_ldf.py and csp_ldf.py share, and nothing else.

The thesis' vocabulary: a *surrogate* gradient stands in for the zero gradient of rounding (or of a
one-hot argmax); the *violation* nu of a constraint is relaxed into the loss with a Lagrange
*multiplier* lambda, which a *subgradient step* raises once per epoch; models are selected by the
approximation ratio (AR) or by the *mu-loss* (label loss + mu * violation).
"""
import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
import warnings

import numpy as np
import torch


# ---------------------------------------------------------------- reproducibility and files
def set_seed(seed):
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name="auto"):
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def atomic_write_bytes(path, data):
    """Write `data` to `path` so that a reader (or an interrupt) never sees a partial file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.tolist()
    return str(x)


def atomic_torch_save(obj, path):
    """torch.save through a temporary file and an atomic rename."""
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- argparse value checks
def _checked(kind, test, what):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    parse.__name__ = what  # argparse names the type in its error message
    return parse


positive_float = _checked(float, lambda v: v > 0 and np.isfinite(v), "a positive number")
nonnegative_float = _checked(float, lambda v: v >= 0 and np.isfinite(v), "a number >= 0")
positive_int = _checked(int, lambda v: v > 0, "a positive integer")
nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")


# ---------------------------------------------------------------- surrogate gradients (thesis eq. 13, 16)
def sigmoid_slope(a, b, k):
    """sigma_f(a, b): derivative at a of a sigmoid of sharpness k centred at b, k*s*(1-s) with
    s = sigmoid(k(a-b)). Written as k*sigmoid(x)*sigmoid(-x), it is finite for every input (the
    thesis' k*exp(-kd)/(exp(-kd)+1)**2 overflows to inf/inf = NaN once exp(-kd) passes float max)."""
    x = k * (a - b)
    return k * torch.sigmoid(x) * torch.sigmoid(-x)


class _RoundSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, k):
        ctx.save_for_backward(p)
        ctx.k = k
        return torch.round(p)

    @staticmethod
    def backward(ctx, grad_out):
        (p,) = ctx.saved_tensors
        return grad_out * sigmoid_slope(p, 0.5, ctx.k), None


def round_surrogate(p, k=25.0):
    """Forward: round(p) (p a probability, so 0 or 1). Backward: the slope of a sigmoid of
    sharpness k centred at 0.5 (thesis eq. 13), so the violation of the rounded solution has a
    gradient. Use as round_surrogate(torch.sigmoid(logits), k)."""
    return _RoundSurrogate.apply(p, float(k))


# ---------------------------------------------------------------- Lagrangian dual framework
def subgradient_step(multiplier, step, violation_sum):
    """Thesis Algorithm 1: lambda <- lambda + s * sum of violations over the training set.
    Violations are >= 0, so the multiplier never falls; the max(0, .) keeps it a valid dual."""
    return max(0.0, float(multiplier) + float(step) * float(violation_sum))


def mu_loss(label_loss, violation, mu):
    """Thesis eq. 15: mean over instances of (label loss + mu * violation); mu fixes how much
    feasibility is worth when selecting a checkpoint, independently of the training multiplier."""
    return float(np.mean(np.asarray(label_loss) + mu * np.asarray(violation)))


# ---------------------------------------------------------------- approximation ratio (eq. 14, 17)
def approximation_ratio(pred_obj, opt_obj, gap=None):
    """Per-instance approximation ratio, >= 1, 1 = optimal.

    gap=None (thesis eq. 14, knapsack): max(pred/opt, opt/pred); 1 when both objectives are 0 and
    2 when exactly one is (the ratio is undefined there, the thesis scores it 2).
    gap given (thesis eq. 17, CSP, a minimisation whose label is only proven within a relative
    MIP gap): the optimum lies in [opt*(1-gap), opt]; a prediction below the middle of that range
    scores opt/pred, above it pred/(opt*(1-gap)).
    """
    pred = np.asarray(pred_obj, dtype=np.float64)
    opt = np.asarray(opt_obj, dtype=np.float64)
    if gap is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.maximum(pred / opt, opt / pred)
        zero_p, zero_o = pred == 0, opt == 0
        ratio = np.where(zero_p & zero_o, 1.0, np.where(zero_p ^ zero_o, 2.0, ratio))
        return ratio
    lower = opt * (1.0 - np.asarray(gap, dtype=np.float64))
    middle = 0.5 * (lower + opt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pred <= middle, opt / pred, pred / lower)


# ---------------------------------------------------------------- one-hot surrogate (thesis eq. 16)
# onehot_surrogate runs the C++/CUDA op ldf_ip::onehot_surrogate of csrc/ when it can be loaded:
# prebuilt (`python setup.py build_ext --inplace` or `pip install -e .`), else JIT-built with ninja
# into build/jit-*/ (once; LDF_IP_BUILD_DIR moves it), else the pure-PyTorch version below, with a
# warning. LDF_IP_ONEHOT=torch forces the pure-PyTorch version. ONEHOT_IMPL says which one runs.
_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")


def _check_onehot_args(z, k, dim):
    """The checks of csrc/onehot.h, with its messages, for the pure-PyTorch path and the fake op."""
    if z.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"onehot_surrogate: z must be float32 or float64, got {z.dtype}")
    if z.dim() == 0:
        raise RuntimeError("onehot_surrogate: z must have at least one dimension")
    if not math.isfinite(k):
        raise RuntimeError(f"onehot_surrogate: k must be finite, got {k}")
    if z.shape[dim] == 0:
        raise RuntimeError(f"onehot_surrogate: the class dimension (dim {dim % z.dim()}) of z is "
                           f"empty, shape {list(z.shape)}")


def _onehot_torch_backward(g, z, idx, k, dim):
    """Eq. 16 in O(numel) tensor ops; idx is the argmax with keepdim."""
    z_max, g_max = z.gather(dim, idx), g.gather(dim, idx)
    slope = sigmoid_slope(z, z_max, k).scatter_(dim, idx, 0.0)  # sigma_f(z_j, z_max), 0 at j = max
    z_pen = z.scatter(dim, idx, float("-inf")).amax(dim, keepdim=True)  # -inf when C == 1: slope 0
    grad_max = sigmoid_slope(z_pen, z_max, k) * g_max - (slope * g).sum(dim, keepdim=True)
    return (slope * (g - g_max)).scatter_(dim, idx, grad_max)


class _OnehotTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, k, dim):
        idx = z.argmax(dim, keepdim=True)
        ctx.save_for_backward(z, idx)
        ctx.k, ctx.dim = k, dim
        return torch.zeros_like(z).scatter_(dim, idx, 1.0)

    @staticmethod
    def backward(ctx, grad):
        z, idx = ctx.saved_tensors
        return _onehot_torch_backward(grad, z, idx, ctx.k, ctx.dim), None, None


def onehot_surrogate_torch(z, k=20.0, dim=-1):
    """Pure-PyTorch onehot_surrogate: the fallback, and the baseline of bench/onehot.py."""
    _check_onehot_args(z, float(k), dim)
    return _OnehotTorch.apply(z, float(k), dim)


def _load_onehot_ext():
    """Load the C++ op and return how ("prebuilt" or "jit"), or "torch" when it cannot be had."""
    if os.environ.get("LDF_IP_ONEHOT") == "torch":
        return "torch"
    try:
        import _ldf_ip_ops  # noqa: F401  (built by setup.py; importing it registers the op)
        return "prebuilt"
    except ImportError:
        pass
    try:
        from torch.utils.cpp_extension import CUDA_HOME, load
        cuda = torch.cuda.is_available() and CUDA_HOME is not None
        name = "ldf_ip_ops_cuda" if cuda else "ldf_ip_ops_cpu"
        sources = [os.path.join(_CSRC, f) for f in ["onehot.cpp"] + ["onehot_cuda.cu"] * cuda]
        build = os.environ.get("LDF_IP_BUILD_DIR") or os.path.join(_CSRC, "..", "build", "jit-" + name)
        os.makedirs(build, exist_ok=True)
        so = os.path.join(build, name + ".so")
        deps = sources + [os.path.join(_CSRC, f) for f in ("onehot.h", "onehot_kernels.h")]
        stale = not os.path.exists(so) or os.path.getmtime(so) < max(map(os.path.getmtime, deps))
        start = time.time()
        load(name=name, sources=sources, build_directory=build, is_python_module=False,
             extra_cflags=["-O3", "-fopenmp", "-fno-trapping-math"], extra_ldflags=["-fopenmp"],
             extra_cuda_cflags=["-O3"])
        if stale:
            print(f"ldf-ip: onehot_surrogate uses the C++{'/CUDA' if cuda else ''} extension "
                  f"(JIT-built in {time.time() - start:.0f} s into {os.path.normpath(build)})",
                  file=sys.stderr)
        return "jit"
    except Exception as err:  # no compiler, no ninja, a build error: run, slower
        warnings.warn(f"ldf-ip: onehot_surrogate falls back to pure PyTorch, the C++ extension "
                      f"could not be built or loaded ({type(err).__name__}: {str(err)[-300:]})")
        return "torch"


def _register_onehot_autograd():
    """Fake kernels (torch.compile, opcheck) and autograd for the C++ op, as pytorch/extension-cpp."""
    @torch.library.register_fake("ldf_ip::onehot_surrogate")
    def _(z, k, dim):
        _check_onehot_args(z, k, dim)
        shape = list(z.shape)
        del shape[dim]
        return z.new_empty(z.shape), z.new_empty(shape, dtype=torch.long)

    @torch.library.register_fake("ldf_ip::onehot_surrogate_backward")
    def _(grad, z, index, k, dim):
        if not grad.device == z.device == index.device:
            raise RuntimeError("onehot_surrogate_backward: grad, z and index must be on one device, "
                               f"got {grad.device}, {z.device}, {index.device}")
        return z.new_empty(z.shape)

    def setup_context(ctx, inputs, output):
        z, k, dim = inputs
        ctx.save_for_backward(z, output[1])
        ctx.k, ctx.dim = k, dim

    def backward(ctx, grad, _grad_index):
        z, index = ctx.saved_tensors
        return torch.ops.ldf_ip.onehot_surrogate_backward(grad, z, index, ctx.k, ctx.dim), None, None

    torch.library.register_autograd("ldf_ip::onehot_surrogate", backward, setup_context=setup_context)


_onehot_backend_state = {}


def _onehot_backend():
    """(implementation, has CUDA kernels): loaded or built on first use, so a script that never
    calls onehot_surrogate (knapsack_ldf.py) never pays for the build."""
    if not _onehot_backend_state:
        impl = _load_onehot_ext()
        if impl != "torch":
            _register_onehot_autograd()
        cuda = impl != "torch" and torch._C._dispatch_has_kernel_for_dispatch_key("ldf_ip::onehot_surrogate", "CUDA")
        _onehot_backend_state.update(impl=impl, cuda=cuda)
    return _onehot_backend_state["impl"], _onehot_backend_state["cuda"]


def __getattr__(name):
    """common.ONEHOT_IMPL ("prebuilt", "jit" or "torch") and common._ONEHOT_CUDA, resolved lazily."""
    if name == "ONEHOT_IMPL":
        return _onehot_backend()[0]
    if name == "_ONEHOT_CUDA":
        return _onehot_backend()[1]
    raise AttributeError(f"module 'common' has no attribute {name!r}")


def onehot_surrogate(z, k=20.0, dim=-1):
    """One-hot of argmax(z, dim) (ties -> lowest index, as torch.argmax), same dtype as z, whose
    backward is the surrogate Jacobian of thesis eq. 16: for j != max,
    dL/dz_j = sigma_f(z_j, z_max) (g_j - g_max); dL/dz_max = sigma_f(z_pen, z_max) g_max -
    sum_{j != max} sigma_f(z_j, z_max) g_j, with z_pen the runner-up and sigma_f = sigmoid_slope."""
    impl, cuda = _onehot_backend()
    if impl == "torch" or (z.is_cuda and not cuda):
        return onehot_surrogate_torch(z, k, dim)
    return torch.ops.ldf_ip.onehot_surrogate(z, float(k), dim)[0]
