// One-hot surrogate of argmax (thesis section 4.4, eq. 16): the row kernels, free of torch so that
// `nvcc -c` can check them on a machine without CUDA torch headers. Raw pointers, sizes, strides.
// The portable CPU loops here take every layout; SIMD kernels for contiguous rows, on ATen's
// Vectorized, are in onehot_vec_kernels.h (see onehot_vec.h).
//
// A *row* is the C entries along the class dimension, `s` elements apart. Forward writes the
// one-hot of argmax (ties -> lowest index, NaN counts as the largest, as torch.argmax) and its
// index m.
// Backward is the vector-Jacobian product of eq. 16, with sigma_f(a, b) = k e / (1 + e)^2,
// e = exp(-|k gap(a, b)|), the slope of a sigmoid of sharpness k centred at b:
//   j != m: gz_j = sigma_f(z_j, z_m) (g_j - g_m)
//   j == m: gz_m = sigma_f(z_pen, z_m) g_m - sum_{j != m} sigma_f(z_j, z_m) g_j
// z_pen is the largest entry other than z_m; a row of C == 1 has none, and its gz_m is 0.
// gap(a, b) is a - b, but 0 when a == b: equal entries are a tie whatever their value, so that
// equal infinities give the slope of a tie, k / 4, rather than NaN (inf - inf). With it, sigma_f
// is finite for every pair of numbers, infinities included (an infinite gap gives 0). A NaN in a
// row is its argmax, so every gap of that row is NaN: its gradient is NaN throughout (C > 1).
// csrc/ops.py computes the same in PyTorch (sigmoid_slope, onehot_surrogate_torch).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#if defined(__CUDACC__)
#define LDF_HD __host__ __device__ __forceinline__
#else
#define LDF_HD inline
#endif

namespace ldf_ip {

// ------------------------------------------------------------------------------------ shared math
template <typename T>
LDF_HD T gap(T a, T b) {  // a - b, 0 when a == b (equal infinities); NaN stays NaN
  return a == b ? T(0) : a - b;
}

template <typename T>
LDF_HD T slope_from_exp(T e, T k) {  // k s (1 - s) with s = sigmoid(-|x|), given e = exp(-|x|)
  const T d = T(1) + e;
  return k * e / (d * d);
}

// torch.argmax order: NaN beats every number, the first NaN wins, ties go to the lower index.
template <typename T>
LDF_HD bool beats(T v, int64_t j, T best, int64_t bj) {
  const bool vn = v != v, bn = best != best;
  if (vn || bn) return vn && (!bn || j < bj);
  return v > best || (v == best && j < bj);
}

// ------------------------------------------------------------------------------------ CPU
// exp(x) for x <= 0 without a library call, so that loops over it vectorise: x = n ln2 + r with
// |r| <= ln2/2 (Cody-Waite), e^r by its Taylor polynomial (error < 1 ulp: degree 7 in float, 12 in
// double), 2^n written into the exponent bits. Below the smallest normal it returns 0; NaN stays
// NaN.
template <typename T> struct ExpConst;
template <> struct ExpConst<float> {
  using U = uint32_t;
  static constexpr float lo = -87.0f, magic = 12582912.0f;  // 1.5 * 2^23
  static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187045e-06f;
  static constexpr U bias = 127u - 0x4B400000u;  // bits(magic + n) - bits(magic) = n
  static constexpr int mant = 23, degree = 7;
};
template <> struct ExpConst<double> {
  using U = uint64_t;
  static constexpr double lo = -708.0, magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static constexpr U bias = 1023ull - 0x4338000000000000ull;
  static constexpr int mant = 52, degree = 12;
};

template <typename T>
inline T exp_nonpos(T x) {
  using C = ExpConst<T>;
  using U = typename C::U;
  const T xc = x < C::lo ? C::lo : x;
  const T t = xc * T(1.4426950408889634) + C::magic;  // low mantissa bits of t hold round(x/ln2)
  const T n = t - C::magic;
  const T r = (xc - n * C::ln2_hi) - n * C::ln2_lo;
  T p = T(1);
#if !defined(__CUDACC__)
#pragma GCC unroll 16
#endif
  for (int i = C::degree; i >= 1; --i) p = T(1) + p * (r * (T(1) / T(i)));  // Horner, sum r^i/i!
  // a bit cast without taking addresses: memcpy would make `omp simd` spill the lanes to memory
  const U scale_bits = static_cast<U>((__builtin_bit_cast(U, t) + C::bias) << C::mant);
  const T scale = __builtin_bit_cast(T, scale_bits);
  return p * scale * T(x >= C::lo);  // a product, not `?:`, which GCC turns into a branch
}

template <typename T>
inline T slope_cpu(T x, T k) {  // sigma_f for x = k (a - b)
  return slope_from_exp(exp_nonpos(x < T(0) ? x : -x), k);
}

// Index of the max of one row (torch.argmax semantics).
template <typename T>
inline int64_t argmax_row(const T* __restrict__ z, int64_t C, int64_t s) {
  if (s != 1 || C < 16) {
    T best = z[0];
    int64_t bj = 0;
    for (int64_t j = 1; j < C; ++j)
      if (beats(z[j * s], j, best, bj)) best = z[j * s], bj = j;
    return bj;
  }
  // contiguous: two integer max-reductions, which vectorise (a float max does not, for its NaN
  // rules): of the order-preserving integer key of each entry, and of |bits| to spot a NaN. Then
  // the first entry equal to the max, or the first NaN.
  using U = typename ExpConst<T>::U;
  using I = std::make_signed_t<U>;
  constexpr U abs_mask = ~U(0) >> 1;
  constexpr U inf_bits = __builtin_bit_cast(U, std::numeric_limits<T>::infinity());
  I key = std::numeric_limits<I>::min();
  U mag = 0;
#pragma omp simd reduction(max : key, mag)
  for (int64_t j = 0; j < C; ++j) {
    const I b = __builtin_bit_cast(I, z[j]);
    const I k = b ^ ((b >> (8 * sizeof(T) - 1)) & I(abs_mask));  // floats ordered as integers
    const U m = U(b) & abs_mask;
    key = k > key ? k : key;
    mag = m > mag ? m : mag;
  }
  int64_t j = 0;
  if (mag > inf_bits) {
    while (z[j] == z[j]) ++j;
  } else {
    const T best = __builtin_bit_cast(T, key ^ ((key >> (8 * sizeof(T) - 1)) & I(abs_mask)));
    while (!(z[j] == best)) ++j;
  }
  return j;
}

// Vector-Jacobian product for one row whose argmax is m: one pass over z and g.
template <typename T>
inline void backward_row(const T* __restrict__ z, const T* __restrict__ g, T* __restrict__ gz,
                         int64_t C, int64_t s, int64_t m, T k) {
  const T zm = z[m * s], gm = g[m * s];
  T acc = T(0), pen = -std::numeric_limits<T>::infinity();
  if (s != 1 || C < 16) {
    for (int64_t j = 0; j < C; ++j) {
      if (j == m) continue;
      const T zj = z[j * s], gj = g[j * s], sl = slope_cpu(k * gap(zj, zm), k);
      gz[j * s] = sl * (gj - gm);
      acc += sl * gj;
      pen = zj > pen ? zj : pen;
    }
  } else {
    for (int part = 0; part < 2; ++part) {  // [0, m) and (m, C): no mask in the loop
      const int64_t lo = part ? m + 1 : 0, hi = part ? C : m;
#pragma omp simd reduction(+ : acc) reduction(max : pen)
      for (int64_t j = lo; j < hi; ++j) {
        const T zj = z[j], gj = g[j], sl = slope_cpu(k * gap(zj, zm), k);
        gz[j] = sl * (gj - gm);
        acc += sl * gj;
        pen = zj > pen ? zj : pen;
      }
    }
  }
  gz[m * s] = slope_cpu(k * gap(pen, zm), k) * gm - acc;  // C > kShortRow here: z_pen exists
}

// Backward for rows r0..r1 of short rows (C <= kShortRow, any stride), where a loop along one row
// is too short to vectorise: blocks of rows go through three passes, and only the middle one,
// which holds all the exp(), runs over the block as one flat, vectorised loop.
//   1. per row: x_j = k gap(z_j, z_m) for j != m, and x_m = k gap(z_pen, z_m) (-inf if C == 1)
//   2. flat:    s = sigma_f(x)                    (s_m is then sigma_f(z_pen, z_m))
//   3. per row: gz_j = s_j (g_j - g_m), gz_m = s_m g_m - sum_{j != m} s_j g_j
constexpr int64_t kShortRow = 64, kRowBlock = 1024;  // elements per block of rows

template <typename T, bool kUnitStride>
inline bool backward_short_rows(const T* __restrict__ z, const T* __restrict__ g,
                                const int64_t* __restrict__ index, T* __restrict__ gz, int64_t C,
                                int64_t inner_, T k, int64_t r0, int64_t r1) {
  const int64_t inner = kUnitStride ? 1 : inner_;  // a constant stride for the common case
  T x[kRowBlock], sl[kRowBlock];
  const int64_t block = kRowBlock / C;
  int64_t o = r0 / inner, i = r0 % inner;
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t n = std::min(block, r1 - rb);
    int64_t oo = o, ii = i;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t m = index[rb + r], b = oo * C * inner + ii;
      if (m < 0 || m >= C) return false;
      const T zm = z[b + m * inner];
      T pen = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < C; ++j) {
        const T zj = z[b + j * inner];
        const T other = j == m ? -std::numeric_limits<T>::infinity() : zj;  // selects, no branch
        x[r * C + j] = k * gap(zj, zm);
        pen = other > pen ? other : pen;
      }
      // no runner-up when C == 1: x = -inf, whose slope is 0
      x[r * C + m] = C > 1 ? k * gap(pen, zm) : -std::numeric_limits<T>::infinity();
      if (++ii == inner) ii = 0, ++oo;
    }
    for (int64_t e = 0; e < n * C; ++e) sl[e] = slope_cpu(x[e], k);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t m = index[rb + r], b = o * C * inner + i;
      const T gm = g[b + m * inner];
      T acc = T(0);
      for (int64_t j = 0; j < C; ++j) {
        const T gj = g[b + j * inner], s = sl[r * C + j] * T(j != m);
        gz[b + j * inner] = s * (gj - gm);
        acc += s * gj;
      }
      gz[b + m * inner] = sl[r * C + m] * gm - acc;
      if (++i == inner) i = 0, ++o;
    }
  }
  return true;
}

// ------------------------------------------------------------------------------------ CUDA
// Rows are laid out as (outer, C, inner) contiguous: row r = (o, i) starts at o*C*inner + i, stride
// inner. Short rows (C <= 32) or strided rows (inner > 1): a thread per row, so that neighbouring
// threads read neighbouring addresses when inner > 1. Long contiguous rows: a warp per row.
#if defined(__CUDACC__)
constexpr int kWarp = 32;
constexpr int kBlock = 256;

template <typename T>
__device__ __forceinline__ T slope_gpu(T x, T k) {
  return slope_from_exp(exp(-fabs(x)), k);
}

__device__ __forceinline__ int64_t row_start(int64_t r, int64_t C, int64_t inner) {
  return (r / inner) * C * inner + r % inner;
}

template <typename T>
__device__ __forceinline__ void warp_argmax(T& best, int64_t& bj) {
  for (int o = kWarp / 2; o > 0; o /= 2) {
    const T v = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t j = __shfl_xor_sync(0xffffffffu, bj, o);
    if (beats(v, j, best, bj)) best = v, bj = j;
  }
}

template <typename T>
__global__ void forward_thread_kernel(const T* __restrict__ z, T* __restrict__ out,
                                      int64_t* __restrict__ index, int64_t rows, int64_t C,
                                      int64_t inner) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows;
       r += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = row_start(r, C, inner);
    T best = z[b];
    int64_t bj = 0;
    for (int64_t j = 1; j < C; ++j) {
      const T v = z[b + j * inner];
      if (beats(v, j, best, bj)) best = v, bj = j;
    }
    for (int64_t j = 0; j < C; ++j) out[b + j * inner] = j == bj ? T(1) : T(0);
    index[r] = bj;
  }
}

template <typename T>
__global__ void forward_warp_kernel(const T* __restrict__ z, T* __restrict__ out,
                                    int64_t* __restrict__ index, int64_t rows, int64_t C) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / kWarp);
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x / kWarp) + threadIdx.x / kWarp; r < rows;
       r += warps) {  // r is the same for the whole warp, so the shuffles see all 32 lanes
    const T* zr = z + r * C;
    T best = zr[0];
    int64_t bj = 0;
    for (int64_t j = lane; j < C; j += kWarp)
      if (beats(zr[j], j, best, bj)) best = zr[j], bj = j;
    warp_argmax(best, bj);
    for (int64_t j = lane; j < C; j += kWarp) out[r * C + j] = j == bj ? T(1) : T(0);
    if (lane == 0) index[r] = bj;
  }
}

template <typename T>
__global__ void backward_thread_kernel(const T* __restrict__ g, const T* __restrict__ z,
                                       const int64_t* __restrict__ index, T* __restrict__ gz,
                                       int64_t rows, int64_t C, int64_t inner, T k) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows;
       r += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = row_start(r, C, inner), m = index[r];
    if (m < 0 || m >= C) {  // not an index from the forward: make it visible, don't read past row
      for (int64_t j = 0; j < C; ++j) gz[b + j * inner] = NAN;
      continue;
    }
    const T zm = z[b + m * inner], gm = g[b + m * inner];
    T acc = T(0), pen = -INFINITY;
    for (int64_t j = 0; j < C; ++j) {
      if (j == m) continue;
      const int64_t e = b + j * inner;
      const T zj = z[e], gj = g[e], sl = slope_gpu(k * gap(zj, zm), k);
      gz[e] = sl * (gj - gm);
      acc += sl * gj;
      pen = fmax(pen, zj);
    }
    const T sl_pen = C > 1 ? slope_gpu(k * gap(pen, zm), k) : T(0);  // no runner-up when C == 1
    gz[b + m * inner] = sl_pen * gm - acc;
  }
}

template <typename T>
__global__ void backward_warp_kernel(const T* __restrict__ g, const T* __restrict__ z,
                                     const int64_t* __restrict__ index, T* __restrict__ gz,
                                     int64_t rows, int64_t C, T k) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / kWarp);
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x / kWarp) + threadIdx.x / kWarp; r < rows;
       r += warps) {
    const T* zr = z + r * C;
    const T* gr = g + r * C;
    const int64_t m = index[r];
    if (m < 0 || m >= C) {
      for (int64_t j = lane; j < C; j += kWarp) gz[r * C + j] = NAN;
      continue;
    }
    const T zm = zr[m], gm = gr[m];
    T acc = T(0), pen = -INFINITY;
    for (int64_t j = lane; j < C; j += kWarp) {
      if (j == m) continue;
      const T zj = zr[j], gj = gr[j], sl = slope_gpu(k * gap(zj, zm), k);
      gz[r * C + j] = sl * (gj - gm);
      acc += sl * gj;
      pen = fmax(pen, zj);
    }
    for (int o = kWarp / 2; o > 0; o /= 2) {
      acc += __shfl_xor_sync(0xffffffffu, acc, o);
      pen = fmax(pen, __shfl_xor_sync(0xffffffffu, pen, o));
    }
    if (lane == 0) gz[r * C + m] = slope_gpu(k * gap(pen, zm), k) * gm - acc;  // C > kWarp
  }
}

// Launchers, templated on the scalar type; `stream` is a cudaStream_t.
inline int grid_for(int64_t threads) {
  const int64_t blocks = (threads + kBlock - 1) / kBlock;
  return (int)(blocks < 65535 * 32 ? (blocks > 0 ? blocks : 1) : 65535 * 32);
}

template <typename T>
void launch_forward(const T* z, T* out, int64_t* index, int64_t rows, int64_t C, int64_t inner,
                    cudaStream_t stream) {
  if (C <= kWarp || inner > 1)
    forward_thread_kernel<T><<<grid_for(rows), kBlock, 0, stream>>>(z, out, index, rows, C, inner);
  else
    forward_warp_kernel<T><<<grid_for(rows * kWarp), kBlock, 0, stream>>>(z, out, index, rows, C);
}

template <typename T>
void launch_backward(const T* g, const T* z, const int64_t* index, T* gz, int64_t rows, int64_t C,
                     int64_t inner, T k, cudaStream_t stream) {
  if (C <= kWarp || inner > 1)
    backward_thread_kernel<T>
        <<<grid_for(rows), kBlock, 0, stream>>>(g, z, index, gz, rows, C, inner, k);
  else
    backward_warp_kernel<T>
        <<<grid_for(rows * kWarp), kBlock, 0, stream>>>(g, z, index, gz, rows, C, k);
}
#endif  // __CUDACC__

}  // namespace ldf_ip
