// ldf_ip::onehot_surrogate: one-hot of argmax with the surrogate gradient of thesis eq. 16.
// Defines the two ops and their CPU kernels (the CUDA kernels are in onehot_cuda.cu); autograd and
// the fake kernels are registered from Python, in csrc/ops.py, with torch.library.
#include <Python.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "onehot.h"
#include "onehot_kernels.h"
#include "onehot_vec.h"

// setup.py defines it where it compiles onehot_cuda.cu into the same library.
#ifndef LDF_IP_WITH_CUDA
#define LDF_IP_WITH_CUDA 0
#endif

extern "C" {
// `import _ldf_ip_ops` (the setup.py build) loads this library, which runs the registrations below.
// The module's WITH_CUDA says whether the library holds the CUDA kernels too.
PyObject* PyInit__ldf_ip_ops(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_ldf_ip_ops", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&def);
  if (module != nullptr && PyModule_AddIntConstant(module, "WITH_CUDA", LDF_IP_WITH_CUDA) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

namespace ldf_ip {

static int64_t grain(int64_t C) { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / C); }

// A new output of tens of MB is page-faulted in by the kernels' first writes, 4 KB a fault (~1.4 us
// each: 20 ms for the 59 MB of a (256, 20, 2881) float32 head, more than the kernels take). Ask for
// transparent huge pages on its 2 MB-aligned interior first, as c10's allocator does under
// THP_MEM_ALLOC_ENABLE: 512 times fewer faults. Only from 32 MB, the size from which glibc always
// maps a block of its own (below, the block is in the heap, where THP gave no gain and rare
// stalls of tens of ms). A hint: ignored where THP is off or the memory is not anonymous; the
// data is unchanged.
static at::Tensor empty_output(const at::Tensor& like) {
  at::Tensor t = at::empty(like.sizes(), like.options());
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr()), n = t.nbytes();
  if (n >= (uintptr_t(32) << 20)) {
    const uintptr_t b = (p + kHuge - 1) & ~(kHuge - 1), e = (p + n) & ~(kHuge - 1);
    if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
  }
#endif
  return t;
}

// The SIMD kernels of onehot_vec.h take contiguous rows (inner == 1) and leave what they do not
// handle (other C, the last rows of a chunk that do not fill a vector) to the loops below. Their
// capability follows ATen's (at::get_cpu_capability: the CPU's, unless ATEN_CPU_CAPABILITY lowers
// it), as PyTorch's own kernels do: AVX2 from "AVX2" up, else DEFAULT.
static bool use_avx2_kernels() {
#ifdef LDF_VEC_HAVE_AVX2
  static const bool avx2 = [] {
    const std::string capability = at::get_cpu_capability();
    return capability == "AVX2" || capability == "AVX512";
  }();
  return avx2;
#else
  return false;
#endif
}

template <typename T>
static const VecRowKernels<T>* vec_kernels(const Layout& L) {
  if (L.inner != 1) return nullptr;
#ifdef LDF_VEC_HAVE_AVX2
  static const VecRowKernels<T> avx2 = AVX2::row_kernels<T>();
  if (use_avx2_kernels()) return &avx2;
#endif
  static const VecRowKernels<T> fallback = DEFAULT::row_kernels<T>();
  return &fallback;
}

// The row loops are compiled twice on x86-64 GCC, for AVX2+FMA and for the baseline, and picked at
// load time (target_clones), so one build is both fast and portable; `flatten` inlines the row
// kernels into each clone (else both clones would call one baseline copy).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define LDF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#else
#define LDF_CPU_CLONES
#endif

// Rows r0..r1 of z seen as (rows / inner, C, inner); row r = (o, i) starts at (o * C) * inner + i.
template <typename T>
LDF_CPU_CLONES void forward_rows(const T* z, T* out, int64_t* index, Layout L, int64_t r0,
                                 int64_t r1) {
  int64_t o = r0 / L.inner, i = r0 % L.inner;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = o * L.C * L.inner + i;
    const int64_t m = argmax_row(z + b, L.C, L.inner);
    // every entry written here, in the same pass (no memset of out first)
    if (L.inner == 1)
      std::fill(out + b, out + b + L.C, T(0));
    else
      for (int64_t j = 0; j < L.C; ++j) out[b + j * L.inner] = T(0);
    out[b + m * L.inner] = T(1);
    index[r] = m;
    if (++i == L.inner) i = 0, ++o;
  }
}

template <typename T>
LDF_CPU_CLONES bool backward_rows(const T* g, const T* z, const int64_t* index, T* gz, Layout L,
                                  T k, int64_t r0, int64_t r1) {
  if (L.C <= kShortRow && L.inner == 1)
    return backward_short_rows<T, true>(z, g, index, gz, L.C, 1, k, r0, r1);
  if (L.C <= kShortRow)
    return backward_short_rows<T, false>(z, g, index, gz, L.C, L.inner, k, r0, r1);
  int64_t o = r0 / L.inner, i = r0 % L.inner;
  bool ok = true;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = o * L.C * L.inner + i, m = index[r];
    if (m >= 0 && m < L.C)
      backward_row(z + b, g + b, gz + b, L.C, L.inner, m, k);
    else
      ok = false;
    if (++i == L.inner) i = 0, ++o;
  }
  return ok;
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& z_in, double k, int64_t dim) {
  const Layout L = check_input(z_in, k, dim);
  const at::Tensor z = z_in.contiguous();
  at::Tensor out = empty_output(z);
  at::Tensor index = at::empty(index_shape(z, dim), z.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "onehot_surrogate", [&] {
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    int64_t* ip = index.mutable_data_ptr<int64_t>();
    const VecRowKernels<scalar_t>* simd = vec_kernels<scalar_t>(L);
    at::parallel_for(0, L.rows, grain(L.C), [&](int64_t r0, int64_t r1) {
      if (simd) r0 = simd->forward(zp, op, ip, L.C, r0, r1);  // leaves the rows it does not do
      if (r0 < r1) forward_rows(zp, op, ip, L, r0, r1);
    });
  });
  return {out, index};
}

at::Tensor backward_cpu(const at::Tensor& grad, const at::Tensor& z_in, const at::Tensor& index_in,
                        double k, int64_t dim) {
  const Layout L = check_backward(grad, z_in, index_in, k, dim);
  const at::Tensor z = z_in.contiguous(), g = grad.contiguous(), index = index_in.contiguous();
  at::Tensor gz = empty_output(z);
  std::atomic<bool> ok{true};
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "onehot_surrogate_backward", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    const int64_t* ip = index.const_data_ptr<int64_t>();
    scalar_t* gzp = gz.mutable_data_ptr<scalar_t>();
    const VecRowKernels<scalar_t>* simd = vec_kernels<scalar_t>(L);
    at::parallel_for(0, L.rows, grain(L.C), [&](int64_t r0, int64_t r1) {
      if (simd) r0 = simd->backward(gp, zp, ip, gzp, L.C, static_cast<scalar_t>(k), r0, r1);
      if (r0 < 0) {  // an index out of range
        ok = false;
        return;
      }
      if (r0 < r1 && !backward_rows(gp, zp, ip, gzp, L, static_cast<scalar_t>(k), r0, r1))
        ok = false;
    });
  });
  TORCH_CHECK(ok, "onehot_surrogate_backward: index out of range [0, ", L.C, ")");
  return gz;
}

TORCH_LIBRARY(ldf_ip, m) {
  m.def("onehot_surrogate(Tensor z, float k, int dim) -> (Tensor, Tensor)");
  m.def(
      "onehot_surrogate_backward(Tensor grad, Tensor z, Tensor index, float k, int dim) -> Tensor");
}

TORCH_LIBRARY_IMPL(ldf_ip, CPU, m) {
  m.impl("onehot_surrogate", &forward_cpu);
  m.impl("onehot_surrogate_backward", &backward_cpu);
}

}  // namespace ldf_ip
