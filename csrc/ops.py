"""The Python side of the one-hot surrogate op of csrc/ (thesis eq. 16), in the manner of
pytorch/extension-cpp's ops.py: loading the C++ op, its fake kernels and autograd (registered with
torch.library), the pure-PyTorch fallback, and the public onehot_surrogate.

onehot_surrogate runs the C++/CUDA op ldf_ip::onehot_surrogate when it can be loaded: prebuilt
(`python setup.py build_ext --inplace` or `pip install --no-build-isolation -e .`), else JIT-built
with ninja into build/jit-*/ (once; LDF_IP_BUILD_DIR moves it), else onehot_surrogate_torch, with a
warning. LDF_IP_ONEHOT=torch forces onehot_surrogate_torch. All of this happens on first use, so
that importing this module (common.py does) never builds anything. Then ONEHOT_IMPL says which
implementation runs ("prebuilt", "jit" or "torch") and ONEHOT_CUDA whether the C++ op has CUDA
kernels; reading either one loads the op.

Both implementations behave alike, with the same error messages:
  * k must be positive and finite (RuntimeError); dim must be in [-z.dim(), z.dim()) (IndexError).
  * The gradient is finite for every z without NaN, infinities included: sigma_f treats equal
    entries as a tie whatever their value (a tie of +inf maxima, or a row of -inf, gets the slope
    k / 4 rather than inf - inf = NaN), and an infinite gap gives the slope 0. A row holding a NaN
    (always its argmax, as in torch.argmax) gets a NaN gradient throughout, unless it has a single
    class, whose gradient is always 0.
  * The surrogate Jacobian is not differentiable further: a double backward through the op (grad
    with create_graph=True, then differentiating that gradient) raises DOUBLE_BACKWARD_ERROR.
"""

import math
import os
import subprocess
import sys
import time
import warnings

import torch

__all__ = ["onehot_surrogate", "onehot_surrogate_torch", "sigmoid_slope"]

# ---------------------------------------------------------------- constants
CSRC_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(CSRC_DIR)
CPU_SOURCE = "onehot.cpp"
CUDA_SOURCE = "onehot_cuda.cu"
KNAPSACK_SOURCE = "knapsack.cpp"  # ldf_ip::knapsack_exact (csrc/knapsack.py), in the same library
CSP_SOURCE = "csp_improve.cpp"  # ldf_ip::csp_improve (csrc/csp.py), in the same library
# the one-hot op's SIMD kernels, once per CPU capability (csrc/onehot_vec.h); the AVX2 one last, so
# that the linker meets the baseline copy of any inline function first
VEC_SOURCES = ("onehot_vec_default.cpp", "onehot_vec_avx2.cpp")
# the library's C++ sources
CPU_SOURCES = (CPU_SOURCE, KNAPSACK_SOURCE, CSP_SOURCE, *VEC_SOURCES)
HEADERS = (
    "onehot.h",
    "onehot_kernels.h",
    "onehot_vec.h",
    "onehot_vec_kernels.h",
    "knapsack.h",
    "csp_improve.h",
)

PREBUILT_MODULE = "_ldf_ip_ops"  # built by setup.py; importing it registers the op
WITH_CUDA_MACRO = "LDF_IP_WITH_CUDA"  # setup.py defines it when it compiles the CUDA kernels in
JIT_NAME_CPU = "ldf_ip_ops_cpu"
JIT_NAME_CUDA = "ldf_ip_ops_cuda"
CXX_FLAGS = ["-O3", "-fopenmp", "-fno-trapping-math"]
LINK_FLAGS = ["-fopenmp"]
CUDA_FLAGS = ["-O3"]

IMPL_ENV = "LDF_IP_ONEHOT"  # "torch": always the pure-PyTorch version
BUILD_DIR_ENV = "LDF_IP_BUILD_DIR"  # where the JIT build goes, instead of build/jit-<name>/
BUILD_ERROR_CHARS = 300  # how much of a build error the fallback warning quotes
# what a failed JIT build raises: no compiler or ninja, a compile or link error, a bad library
BUILD_ERRORS = (OSError, RuntimeError, ImportError, subprocess.SubprocessError)

OP = "ldf_ip::onehot_surrogate"
KNAPSACK_OP = "ldf_ip::knapsack_exact"
KNAPSACK_FALLBACK = "the exact knapsack solver falls back to numpy (knapsack_ldf.solve_core)"
CSP_OP = "ldf_ip::csp_improve"
CSP_FALLBACK = "the CSP local improvement falls back to Python (csp_ldf.improve_python)"
BACKWARD_OP = "ldf_ip::onehot_surrogate_backward"
DEFAULT_K = 20.0
FLOAT_DTYPES = (torch.float32, torch.float64)
DOUBLE_BACKWARD_ERROR = (
    "onehot_surrogate: double backward is not supported (the surrogate Jacobian of eq. 16 is "
    "not differentiable further)"
)


# ---------------------------------------------------------------- sigma_f
def sigmoid_slope(a, b, k):
    """sigma_f(a, b): derivative at a of a sigmoid of sharpness k centred at b, k*s*(1-s) with
    s = sigmoid(k(a-b)). Written as k*sigmoid(x)*sigmoid(-x), it is finite for every input (the
    thesis' k*exp(-kd)/(exp(-kd)+1)**2 overflows to inf/inf = NaN once exp(-kd) passes float max).
    a - b is taken as 0 where a == b, so that equal infinities are a tie (slope k/4), not
    inf - inf = NaN; an infinite difference gives 0. NaN stays NaN. a is a tensor, b a tensor or
    a number."""
    difference = torch.where(a == b, 0.0, a - b)
    x = k * difference
    return k * torch.sigmoid(x) * torch.sigmoid(-x)


# ---------------------------------------------------------------- argument checks
def check_arguments(z, k, dim):
    """The checks of csrc/onehot.h (check_input), in its order and with its messages, for the
    pure-PyTorch version and the fake kernel."""
    if z.dtype not in FLOAT_DTYPES:
        raise RuntimeError(f"onehot_surrogate: z must be float32 or float64, got {z.dtype}")
    if z.dim() == 0:
        raise RuntimeError("onehot_surrogate: z must have at least one dimension")
    if not (k > 0 and math.isfinite(k)):
        # :g prints a float as C++ streams a double, so the message is the C++ op's
        raise RuntimeError(f"onehot_surrogate: k must be positive and finite, got {k:g}")
    n_dims = z.dim()
    if not -n_dims <= dim < n_dims:
        raise IndexError(
            f"onehot_surrogate: dim {dim} is out of range for z of {n_dims} dimensions "
            f"(expected {-n_dims} to {n_dims - 1})"
        )
    if z.shape[dim] == 0:
        raise RuntimeError(
            f"onehot_surrogate: the class dimension (dim {dim % n_dims}) of z is empty, "
            f"shape {list(z.shape)}"
        )


# ---------------------------------------------------------------- pure-PyTorch version
def onehot_backward_torch(grad, z, index, k, dim):
    """Eq. 16 in O(numel) tensor ops; index is the argmax, with keepdim."""
    z_max = z.gather(dim, index)
    grad_max = grad.gather(dim, index)
    # sigma_f(z_j, z_max), 0 at j = max
    slope = sigmoid_slope(z, z_max, k).scatter(dim, index, 0.0)
    if z.shape[dim] > 1:
        z_pen = z.scatter(dim, index, float("-inf")).amax(dim, keepdim=True)
        slope_pen = sigmoid_slope(z_pen, z_max, k)
    else:  # no runner-up: the slope at the max is 0, as in the C++ kernels
        slope_pen = torch.zeros_like(z_max)
    grad_at_max = slope_pen * grad_max - (slope * grad).sum(dim, keepdim=True)
    return (slope * (grad - grad_max)).scatter(dim, index, grad_at_max)


class _OnehotTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, k, dim):
        index = z.argmax(dim, keepdim=True)
        ctx.save_for_backward(z, index)
        ctx.k = k
        ctx.dim = dim
        return torch.zeros_like(z).scatter_(dim, index, 1.0)

    @staticmethod
    def backward(ctx, grad):
        z, index = ctx.saved_tensors
        grad_z = _OnehotTorchBackward.apply(grad, z, index, ctx.k, ctx.dim)
        return grad_z, None, None


class _OnehotTorchBackward(torch.autograd.Function):
    """The backward as a function of its own, as the C++ op's onehot_surrogate_backward: its
    gradient (a double backward of the one-hot) raises DOUBLE_BACKWARD_ERROR."""

    @staticmethod
    def forward(ctx, grad, z, index, k, dim):
        return onehot_backward_torch(grad, z, index, k, dim)

    @staticmethod
    def backward(ctx, grad_grad_z):
        raise RuntimeError(DOUBLE_BACKWARD_ERROR)


def onehot_surrogate_torch(z, k=DEFAULT_K, dim=-1):
    """Pure-PyTorch onehot_surrogate: the fallback, and the baseline of bench/onehot.py."""
    k = float(k)
    check_arguments(z, k, dim)
    return _OnehotTorch.apply(z, k, dim)


# ---------------------------------------------------------------- the C++ op: loading
def jit_build_dir(name):
    """Where the JIT build of library `name` goes: $LDF_IP_BUILD_DIR, else build/jit-<name>/."""
    return os.environ.get(BUILD_DIR_ENV) or os.path.join(REPO_ROOT, "build", "jit-" + name)


def _jit_build():
    """JIT-build the C++ op (and its CUDA kernels when torch sees a GPU and CUDA_HOME is set) and
    load it; return whether it has the CUDA kernels."""
    from torch.utils.cpp_extension import CUDA_HOME, load

    cuda = torch.cuda.is_available() and CUDA_HOME is not None
    name = JIT_NAME_CUDA if cuda else JIT_NAME_CPU
    sources = [os.path.join(CSRC_DIR, source) for source in CPU_SOURCES]
    if cuda:
        sources.append(os.path.join(CSRC_DIR, CUDA_SOURCE))
    build_dir = jit_build_dir(name)
    os.makedirs(build_dir, exist_ok=True)

    library = os.path.join(build_dir, name + ".so")
    dependencies = sources + [os.path.join(CSRC_DIR, header) for header in HEADERS]
    newest_source = max(os.path.getmtime(path) for path in dependencies)
    stale = not os.path.exists(library) or os.path.getmtime(library) < newest_source
    start = time.time()
    load(
        name=name,
        sources=sources,
        build_directory=build_dir,
        is_python_module=False,
        extra_cflags=CXX_FLAGS,
        extra_ldflags=LINK_FLAGS,
        extra_cuda_cflags=CUDA_FLAGS,
    )
    if stale:
        kind = "C++/CUDA" if cuda else "C++"
        seconds = time.time() - start
        print(
            f"ldf-ip: onehot_surrogate, knapsack_exact and csp_improve use the {kind} extension "
            f"(JIT-built in {seconds:.0f} s into {os.path.normpath(build_dir)})",
            file=sys.stderr,
        )
    return cuda


def _op_defined():
    return hasattr(torch.ops.ldf_ip, "onehot_surrogate")


def _op_runs_on_cuda():
    """Whether the op, loaded elsewhere, has CUDA kernels: try it on a CUDA tensor."""
    try:
        torch.ops.ldf_ip.onehot_surrogate.default(torch.zeros(1, 1, device="cuda"), 1.0, -1)
    except NotImplementedError:  # the dispatcher's "Could not run ... with the 'CUDA' backend"
        return False
    return True


# what _load_library() found: (how, whether it has CUDA kernels, why it failed or None)
_library_state = {}


def _load_library(fallback):
    """Load the library of the C++ ops (once); return (how, whether it has CUDA kernels), how being
    "prebuilt" or "jit", or "torch" when it cannot be had, which warns that `fallback`."""
    if not _library_state:
        _library_state["result"] = _find_library()
    how, cuda, error = _library_state["result"]
    if error is not None:
        warnings.warn(
            f"ldf-ip: {fallback}, the C++ extension could not be built or loaded ({error})",
            stacklevel=3,
        )
    return how, cuda


def _find_library():
    if _op_defined() and PREBUILT_MODULE not in sys.modules:
        # Loaded by other code of this process: loading a second library that defines the op
        # would abort the process.
        return "jit", torch.cuda.is_available() and _op_runs_on_cuda(), None
    try:
        import _ldf_ip_ops
    except ImportError:
        pass
    else:
        return "prebuilt", bool(getattr(_ldf_ip_ops, "WITH_CUDA", False)), None
    try:
        cuda = _jit_build()
    except BUILD_ERRORS as err:  # run, slower
        return "torch", False, f"{type(err).__name__}: {str(err)[-BUILD_ERROR_CHARS:]}"
    return "jit", cuda, None


def _load_extension():
    """Load the C++ op; return (how, whether it has CUDA kernels), how being "prebuilt" or "jit",
    or "torch" when it cannot be had."""
    if os.environ.get(IMPL_ENV) == "torch":
        return "torch", False
    return _load_library("onehot_surrogate falls back to pure PyTorch")


# ---------------------------------------------------------------- the C++ op: fake, autograd
def _onehot_fake(z, k, dim):
    check_arguments(z, k, dim)
    index_shape = list(z.shape)
    del index_shape[dim]
    return z.new_empty(z.shape), z.new_empty(index_shape, dtype=torch.long)


def _onehot_backward_fake(grad, z, index, k, dim):
    if not grad.device == z.device == index.device:
        raise RuntimeError(
            "onehot_surrogate_backward: grad, z and index must be on one device, "
            f"got {grad.device}, {z.device}, {index.device}"
        )
    return z.new_empty(z.shape)


def _setup_context(ctx, inputs, output):
    z, k, dim = inputs
    _onehot, index = output
    ctx.save_for_backward(z, index)
    ctx.k = k
    ctx.dim = dim


def _backward(ctx, grad, _grad_index):
    z, index = ctx.saved_tensors
    grad_z = torch.ops.ldf_ip.onehot_surrogate_backward.default(grad, z, index, ctx.k, ctx.dim)
    return grad_z, None, None


def _refuse_double_backward(ctx, grad_grad_z):
    raise RuntimeError(DOUBLE_BACKWARD_ERROR)


def _register_python_side():
    """Fake kernels (torch.compile, opcheck) and autograd for the loaded C++ op. The backward op
    gets an autograd that refuses, so that a double backward fails as in onehot_surrogate_torch
    (without one, PyTorch would warn and return a wrong, detached gradient)."""
    torch.library.register_fake(OP)(_onehot_fake)
    torch.library.register_fake(BACKWARD_OP)(_onehot_backward_fake)
    torch.library.register_autograd(OP, _backward, setup_context=_setup_context)
    torch.library.register_autograd(BACKWARD_OP, _refuse_double_backward)


# what _backend() found; a dict rather than functools.cache, which torch.compile does not trace
_backend_state = {}


def _backend():
    """(implementation, has CUDA kernels): loaded or built on first use, so that a script that
    never calls onehot_surrogate (knapsack_ldf.py) never pays for the build."""
    if not _backend_state:
        impl, cuda = _load_extension()
        if impl != "torch":
            _register_python_side()
        _backend_state.update(impl=impl, cuda=cuda)
    return _backend_state["impl"], _backend_state["cuda"]


# ---------------------------------------------------------------- the other ops of the library
_loaded_ops = {}  # op -> whether _op_loaded() found it runs


def _op_loaded(op, fallback, fake):
    """Whether `op` ("ldf_ip::name") can run: its library is loaded (or built) on the first call,
    whatever LDF_IP_ONEHOT says, and its fake kernel registered; else a warning, once."""
    if op not in _loaded_ops:
        impl, _cuda = _load_library(fallback)
        name = op.split("::")[1]
        loaded = impl != "torch" and hasattr(torch.ops.ldf_ip, name)
        if impl != "torch" and not loaded:
            warnings.warn(
                f"ldf-ip: {fallback}, the prebuilt {PREBUILT_MODULE} has no {name} "
                "(rebuild it: python setup.py build_ext --inplace)",
                stacklevel=3,
            )
        if loaded:
            torch.library.register_fake(op)(fake)
        _loaded_ops[op] = loaded
    return _loaded_ops[op]


def _knapsack_fake(weights, values, capacity, time_limit):
    n_instances = weights.shape[0]
    return (
        weights.new_empty(weights.shape, dtype=torch.uint8),
        weights.new_empty((n_instances,), dtype=torch.int64),
        weights.new_empty((n_instances,), dtype=torch.float64),
    )


def knapsack_op_loaded():
    """Whether ldf_ip::knapsack_exact (csrc/knapsack.cpp) can run (see _op_loaded)."""
    return _op_loaded(KNAPSACK_OP, KNAPSACK_FALLBACK, _knapsack_fake)


def _csp_fake(space, settings, chosen, cost, seconds, longest):
    return (
        chosen.new_empty(chosen.shape),
        chosen.new_empty((chosen.shape[0],)),
        longest.new_empty(longest.shape),
    )


def csp_op_loaded():
    """Whether ldf_ip::csp_improve (csrc/csp_improve.cpp) can run (see _op_loaded)."""
    return _op_loaded(CSP_OP, CSP_FALLBACK, _csp_fake)


def __getattr__(name):
    """ONEHOT_IMPL ("prebuilt", "jit" or "torch") and ONEHOT_CUDA, resolved on first use."""
    if name == "ONEHOT_IMPL":
        return _backend()[0]
    if name == "ONEHOT_CUDA":
        return _backend()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- public
def onehot_surrogate(z, k=DEFAULT_K, dim=-1):
    """One-hot of argmax(z, dim) (ties -> lowest index, as torch.argmax), same dtype as z, whose
    backward is the surrogate Jacobian of thesis eq. 16: for j != max,
    dL/dz_j = sigma_f(z_j, z_max) (g_j - g_max); dL/dz_max = sigma_f(z_pen, z_max) g_max -
    sum_{j != max} sigma_f(z_j, z_max) g_j, with z_pen the runner-up and sigma_f = sigmoid_slope.
    Runs the C++ op on CPU tensors, and on CUDA tensors where it has CUDA kernels; else (and on
    other devices) onehot_surrogate_torch."""
    impl, cuda = _backend()
    op_devices = ("cpu", "cuda") if cuda else ("cpu",)
    if impl == "torch" or z.device.type not in op_devices:
        return onehot_surrogate_torch(z, k, dim)
    onehot, _index = torch.ops.ldf_ip.onehot_surrogate.default(z, float(k), dim)
    return onehot
