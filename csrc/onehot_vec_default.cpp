// The SIMD row kernels of onehot_vec_kernels.h for CPU_CAPABILITY=DEFAULT: compiled with the
// library's flags alone, so they run on any CPU of the target (NEON on aarch64; on x86-64 the
// generic Vectorized, for a CPU without AVX2 or under ATEN_CPU_CAPABILITY=default).
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include "onehot_vec_kernels.h"
