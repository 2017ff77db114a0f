// The SIMD row kernels of ldf_ip::onehot_surrogate for contiguous rows (inner == 1), as onehot.cpp
// sees them: a table of two function pointers per scalar type, one table per CPU capability.
// The kernels themselves are in onehot_vec_kernels.h, written once on ATen's portable vector type
// at::vec::Vectorized and compiled once per capability, as PyTorch compiles its own CPU kernels:
//   onehot_vec_default.cpp  CPU_CAPABILITY=DEFAULT with the library's flags: NEON on aarch64, the
//                           generic (array) Vectorized elsewhere;
//   onehot_vec_avx2.cpp     CPU_CAPABILITY=AVX2 for AVX2+FMA, on x86-64 with GCC only (elsewhere
//                           it compiles to nothing).
// onehot.cpp picks the table at run time (vec_row_kernels). This header is free of ATen's vec
// headers, whose content depends on the capability macros.
#pragma once
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LDF_VEC_HAVE_AVX2 1  // onehot_vec_avx2.cpp holds the AVX2 kernels
#endif

namespace ldf_ip {

// Rows [r0, r1) of a contiguous (rows, C) array. Each returns the first row it left undone (the
// caller's scalar loops do the rest: other C, the last rows that do not fill a vector), or -1
// (backward) for an index out of [0, C).
template <typename T>
struct VecRowKernels {
  int64_t (*forward)(const T* z, T* out, int64_t* index, int64_t C, int64_t r0, int64_t r1);
  int64_t (*backward)(const T* g, const T* z, const int64_t* index, T* gz, int64_t C, T k,
                      int64_t r0, int64_t r1);
};

namespace DEFAULT {
template <typename T>
VecRowKernels<T> row_kernels();
}
#ifdef LDF_VEC_HAVE_AVX2
namespace AVX2 {
template <typename T>
VecRowKernels<T> row_kernels();
}
#endif

}  // namespace ldf_ip
