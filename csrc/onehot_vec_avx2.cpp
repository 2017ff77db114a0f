// The SIMD row kernels of onehot_vec_kernels.h for CPU_CAPABILITY=AVX2 (AVX2 + FMA), on x86-64
// with GCC; onehot.cpp calls them only where ATen reports that capability. PyTorch compiles such
// a file with -mavx2 -mfma; torch.utils.cpp_extension takes one set of flags for all sources of
// the library (JIT and setup.py alike), so this file raises the target itself, by pragma.
//
// Only code that runs after the run-time check may be compiled for AVX2: an inline function
// compiled here would be a second copy, which the linker may pick for the whole library. So the
// headers that the vec headers rely on (the standard library, c10) are included first, under the
// baseline target, and the pragma covers only at::vec (its own namespace, at::vec::AVX2) and the
// kernels (ldf_ip::AVX2). tests/test_onehot.py checks the symbols of the built library.
#include "onehot_vec.h"

#ifdef LDF_VEC_HAVE_AVX2
#include <ATen/NumericUtils.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Load.h>
#include <c10/util/TypeCast.h>
#include <c10/util/complex.h>
#include <c10/util/copysign.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <tuple>
#include <type_traits>

#include "onehot_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC diagnostic push
// a lambda's static invoker stays on the baseline target: 256-bit values passed by it are legal
#pragma GCC diagnostic ignored "-Wpsabi"
// g++ reads the whole file before it compiles, so the pragma does not define the macros of the
// target, as -mavx2 -mfma would: sleef.h (included by the vec headers) declares its 256-bit
// functions only under them.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "onehot_vec_kernels.h"
#undef __AVX__
#undef __AVX2__
#undef __FMA__
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif  // LDF_VEC_HAVE_AVX2
