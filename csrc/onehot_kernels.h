// One-hot surrogate of argmax (thesis section 4.4, eq. 16): the row kernels, free of torch so that
// `nvcc -c` can check them on a machine without CUDA torch headers. Raw pointers, sizes, strides.
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
#if !defined(__CUDACC__) && defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

// ------------------------------------------------------------------------------------ CPU, AVX2
// Explicitly vectorised kernels for contiguous rows (inner == 1) on x86-64 with AVX2 and FMA,
// chosen at run time (cpu_has_avx2); the loops above stay the portable path and the path for other
// layouts.
// They are written with GCC vector extensions (arithmetic, compares, `?:` selects) and a few
// intrinsics (permutes, movemask, masked loads), so one template serves float (8 lanes) and double
// (4 lanes), and nothing is left to the auto-vectoriser.
//  * long rows (C >= kLongRow): argmax as a max pass (4 accumulators) and a find pass over the row,
//    which is in L1 by then; backward as one pass of vectors over the row, masked at its tail.
//  * rows of C = 2, 3, 4: rows are the SIMD lanes. W rows (C W contiguous entries) are loaded as C
//    vectors and transposed with permutes and blends into C column vectors (entry j of W rows).
#if !defined(__CUDACC__) && defined(__x86_64__) && defined(__GNUC__)
#define LDF_HAVE_AVX2_KERNELS 1
namespace avx2 {
#define LDF_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline
#define LDF_AVX2_ENTRY __attribute__((target("avx2,fma"))) inline

constexpr int64_t kLongRow = 16;

template <typename T> struct VT;
template <> struct VT<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t M __attribute__((vector_size(32)));  // compare masks and lane indices
  typedef int32_t S;
  typedef uint32_t U __attribute__((vector_size(32)));
};
template <> struct VT<double> {
  typedef double V __attribute__((vector_size(32)));
  typedef int64_t M __attribute__((vector_size(32)));
  typedef int64_t S;
  typedef uint64_t U __attribute__((vector_size(32)));
};
template <typename T> using V = typename VT<T>::V;
template <typename T> using M = typename VT<T>::M;
template <typename T> using U = typename VT<T>::U;
template <typename T> using S = typename VT<T>::S;  // lane index type
template <typename T> constexpr int W = 32 / sizeof(T);

template <typename T> LDF_AVX2_INLINE V<T> splat(T x) { return V<T>{} + x; }
template <typename T> LDF_AVX2_INLINE V<T> load(const T* p) {
  V<T> v;
  __builtin_memcpy(&v, p, 32);
  return v;
}
template <typename T> LDF_AVX2_INLINE void store(T* p, V<T> v) { __builtin_memcpy(p, &v, 32); }
LDF_AVX2_INLINE V<float> vmax(V<float> a, V<float> b) {
  return (V<float>)_mm256_max_ps((__m256)a, (__m256)b);
}
LDF_AVX2_INLINE V<double> vmax(V<double> a, V<double> b) {
  return (V<double>)_mm256_max_pd((__m256d)a, (__m256d)b);
}
LDF_AVX2_INLINE int movemask(M<float> m) { return _mm256_movemask_ps((__m256)m); }
LDF_AVX2_INLINE int movemask(M<double> m) { return _mm256_movemask_pd((__m256d)m); }
LDF_AVX2_INLINE V<float> maskload(const float* p, M<float> m) {
  return (V<float>)_mm256_maskload_ps(p, (__m256i)m);
}
LDF_AVX2_INLINE V<double> maskload(const double* p, M<double> m) {
  return (V<double>)_mm256_maskload_pd(p, (__m256i)m);
}
LDF_AVX2_INLINE void maskstore(float* p, M<float> m, V<float> v) {
  _mm256_maskstore_ps(p, (__m256i)m, (__m256)v);
}
LDF_AVX2_INLINE void maskstore(double* p, M<double> m, V<double> v) {
  _mm256_maskstore_pd(p, (__m256i)m, (__m256d)v);
}
template <typename T> LDF_AVX2_INLINE M<T> iota() {
  M<T> r{};
  for (int l = 0; l < W<T>; ++l) r[l] = l;
  return r;
}
template <typename T> LDF_AVX2_INLINE T hsum(V<T> v) {
  T s = v[0];
  for (int l = 1; l < W<T>; ++l) s += v[l];
  return s;
}
template <typename T> LDF_AVX2_INLINE T hmax(V<T> v) {  // lanes are never NaN where it is used
  T s = v[0];
  for (int l = 1; l < W<T>; ++l) s = v[l] > s ? v[l] : s;
  return s;
}

// exp_nonpos and slope_cpu, lane-wise, with the same constants and range reduction; the Taylor
// polynomial in Horner form on 1/i! (one FMA a degree) rather than the nested 1 + r/i (...) of the
// scalar loop: the same error bound (< 1 ulp), last-bit differences only.
template <typename T> struct Taylor {  // 1/i!, i = 0..degree
  static constexpr int degree = ExpConst<T>::degree;
  T c[degree + 1];
  constexpr Taylor() : c() {
    c[0] = T(1);
    double f = 1.0;
    for (int i = 1; i <= degree; ++i) f /= i, c[i] = T(f);
  }
};
LDF_AVX2_INLINE V<float> max_lo(V<float> lo, V<float> x) {
  return (V<float>)_mm256_max_ps((__m256)lo, (__m256)x);
}
LDF_AVX2_INLINE V<double> max_lo(V<double> lo, V<double> x) {
  return (V<double>)_mm256_max_pd((__m256d)lo, (__m256d)x);
}
template <typename T> LDF_AVX2_INLINE V<T> exp_nonpos(V<T> x) {
  using C = ExpConst<T>;
  static constexpr Taylor<T> taylor;
  const V<T> lo = splat<T>(C::lo);
  const V<T> xc = max_lo(lo, x);  // lo > x ? lo : x, so NaN stays NaN
  const V<T> t = xc * T(1.4426950408889634) + C::magic;
  const V<T> n = t - C::magic;
  const V<T> r = (xc - n * C::ln2_hi) - n * C::ln2_lo;
  V<T> p = splat<T>(taylor.c[C::degree]);
#pragma GCC unroll 16
  for (int i = C::degree - 1; i >= 0; --i) p = p * r + taylor.c[i];
  const V<T> scale = (V<T>)((((U<T>)t) + C::bias) << C::mant);
  return (V<T>)((M<T>)(p * scale) & ~(M<T>)(x < lo));  // 0 below lo; NaN (not < lo) stays NaN
}
template <typename T> LDF_AVX2_INLINE V<T> vgap(V<T> a, V<T> b) {  // gap(), lane-wise
  return a == b ? V<T>{} : a - b;
}
template <typename T> LDF_AVX2_INLINE V<T> slope(V<T> x, T k) {
  constexpr typename ExpConst<T>::U sign_bit = typename ExpConst<T>::U(1) << (8 * sizeof(T) - 1);
  const V<T> nabs = (V<T>)((U<T>)x | (U<T>{} + sign_bit));
  const V<T> e = exp_nonpos<T>(nabs), d = T(1) + e;
  return k * e / (d * d);
}

// ---- long rows
template <typename T> LDF_AVX2_INLINE int64_t argmax_long(const T* __restrict__ z, int64_t C) {
  constexpr int w = W<T>;  // C >= kLongRow >= 2 w
  V<T> m0 = load(z), m1 = m0, m2 = m0, m3 = m0;
  M<T> nan = m0 != m0;
  int64_t j = w;
  for (; j + 4 * w <= C; j += 4 * w) {
    const V<T> a = load(z + j), b = load(z + j + w);
    const V<T> c = load(z + j + 2 * w), d = load(z + j + 3 * w);
    m0 = vmax(a, m0), m1 = vmax(b, m1), m2 = vmax(c, m2), m3 = vmax(d, m3);
    nan |= (a != a) | (b != b) | (c != c) | (d != d);
  }
  for (; j < C; j += w) {  // the last vector may overlap the one before: max is idempotent
    const V<T> a = load(z + (j + w <= C ? j : C - w));
    m0 = vmax(a, m0);
    nan |= a != a;
  }
  const bool any_nan = movemask(nan) != 0;
  const T best = hmax<T>(vmax(vmax(m0, m1), vmax(m2, m3)));  // NaN-free unless any_nan
  const V<T> b = splat<T>(best);
  for (j = 0; j < C; j += 2 * w) {  // first NaN, else first entry == best; overlapping tail again
    const int64_t j0 = j + w <= C ? j : C - w, j1 = j + 2 * w <= C ? j + w : C - w;
    const V<T> x0 = load(z + j0), x1 = load(z + j1);
    const int h0 = movemask(any_nan ? x0 != x0 : x0 == b);
    const int h1 = movemask(any_nan ? x1 != x1 : x1 == b);
    if (h0) return j0 + __builtin_ctz(h0);
    if (h1) return j1 + __builtin_ctz(h1);
  }
  return 0;  // not reached
}

// One vector of the backward of a long row at j: lanes in `in` (all for a full vector), and the
// argmax lane left out of acc and pen when kHasMax.
template <typename T, bool kFull, bool kHasMax>
LDF_AVX2_INLINE void backward_vec(const T* __restrict__ z, const T* __restrict__ g,
                                  T* __restrict__ gz, int64_t j, M<T> in, M<T> not_max, V<T> vzm,
                                  V<T> vgm, T k, V<T>& acc, V<T>& pen) {
  const V<T> zj = kFull ? load(z + j) : maskload(z + j, in);
  const V<T> gj = kFull ? load(g + j) : maskload(g + j, in);
  const V<T> sl = slope<T>(k * vgap<T>(zj, vzm), k);
  if (kFull) store(gz + j, sl * (gj - vgm)); else maskstore(gz + j, in, sl * (gj - vgm));
  if (kFull && !kHasMax) {
    acc += sl * gj;
    pen = vmax(zj, pen);  // zj > pen ? zj : pen
  } else {
    const M<T> use = kFull ? not_max : in & not_max;
    acc += (V<T>)((M<T>)(sl * gj) & use);
    pen = (use & (zj > pen)) ? zj : pen;
  }
}

template <typename T>
LDF_AVX2_INLINE void backward_long(const T* __restrict__ z, const T* __restrict__ g,
                                   T* __restrict__ gz, int64_t C, int64_t m, T k) {
  constexpr int w = W<T>;
  const T zm = z[m], gm = g[m];
  const V<T> vzm = splat<T>(zm), vgm = splat<T>(gm);
  const M<T> lane = iota<T>(), all = lane == lane;
  V<T> acc{}, pen = splat<T>(-std::numeric_limits<T>::infinity());
  // full vectors end at `full`; m is in [jm, jm + w)
  const int64_t full = C / w * w, jm = m / w * w;
  int64_t j = 0;
  for (; j < std::min(jm, full); j += w)
    backward_vec<T, true, false>(z, g, gz, j, all, all, vzm, vgm, k, acc, pen);
  if (jm < full) {
    backward_vec<T, true, true>(z, g, gz, jm, all, lane != S<T>(m - jm), vzm, vgm, k, acc, pen);
    for (j = jm + w; j < full; j += w)
      backward_vec<T, true, false>(z, g, gz, j, all, all, vzm, vgm, k, acc, pen);
  }
  if (full < C)
    backward_vec<T, false, true>(z, g, gz, full, lane < S<T>(C - full),
                                 lane + S<T>(full) != S<T>(m), vzm, vgm, k, acc, pen);
  gz[m] = slope_cpu(k * ldf_ip::gap(hmax<T>(pen), zm), k) * gm - hsum<T>(acc);
}

// ---- rows of C = 2, 3, 4 as lanes: transposes of W rows by 32-bit permutes and blends.
// in:  column j takes, from source vector s, 32-bit lane u <- perm[j][s][u] where mask[j][s][u].
// out: destination vector s takes, from column j, lane u <- perm[s][j][u] where mask[s][j][u].
template <typename T, int C> struct Transpose {
  static constexpr int E = sizeof(T) / 4, w = 8 / E;  // 32-bit units per entry, entries per vector
  struct Table { alignas(32) int32_t perm[C][C][8]; alignas(32) int32_t mask[C][C][8]; };
  static constexpr Table make(bool in) {
    Table t{};
    for (int a = 0; a < C; ++a)
      for (int b = 0; b < C; ++b)
        for (int u = 0; u < 8; ++u) {
          const int l = u / E, half = u % E;
          if (in) {  // a = column j, b = source s; entry (row l, class j) sits at p = l C + j
            const int p = l * C + a;
            t.perm[a][b][u] = (p % w) * E + half, t.mask[a][b][u] = p / w == b ? -1 : 0;
          } else {  // a = destination s, b = column j; entry p = s w + l: (row p / C, class p % C)
            const int p = a * w + l;
            t.perm[a][b][u] = (p / C) * E + half, t.mask[a][b][u] = p % C == b ? -1 : 0;
          }
        }
    return t;
  }
  static constexpr Table in = make(true), out = make(false);
};

LDF_AVX2_INLINE __m256 perm32(__m256 v, const int32_t* idx) {
  return _mm256_permutevar8x32_ps(v, _mm256_load_si256((const __m256i*)idx));
}
LDF_AVX2_INLINE __m256 blend32(__m256 a, __m256 b, const int32_t* mask) {
  return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_load_si256((const __m256i*)mask)));
}
template <typename T, int C, bool kIn>
LDF_AVX2_INLINE void transpose(const __m256 (&src)[C], V<T> (&dst)[C]) {
  using X = Transpose<T, C>;
  constexpr const typename X::Table& t = kIn ? X::in : X::out;
#pragma GCC unroll 4
  for (int a = 0; a < C; ++a) {
    __m256 acc = perm32(src[0], t.perm[a][0]);
#pragma GCC unroll 4
    for (int b = 1; b < C; ++b) acc = blend32(acc, perm32(src[b], t.perm[a][b]), t.mask[a][b]);
    dst[a] = (V<T>)acc;
  }
}
template <typename T, int C> LDF_AVX2_INLINE void load_columns(const T* p, V<T> (&col)[C]) {
  __m256 src[C];
#pragma GCC unroll 4
  for (int s = 0; s < C; ++s) src[s] = _mm256_loadu_ps(reinterpret_cast<const float*>(p) + 8 * s);
  transpose<T, C, true>(src, col);
}
template <typename T, int C> LDF_AVX2_INLINE void store_columns(T* p, const V<T> (&col)[C]) {
  __m256 src[C];
  V<T> dst[C];
#pragma GCC unroll 4
  for (int j = 0; j < C; ++j) src[j] = (__m256)col[j];
  transpose<T, C, false>(src, dst);
#pragma GCC unroll 4
  for (int s = 0; s < C; ++s) store(p + s * W<T>, dst[s]);
}
LDF_AVX2_INLINE void store_index(int64_t* p, M<float> m) {  // 8 int32 lanes -> 8 int64
  const __m256i v = (__m256i)m;
  _mm256_storeu_si256((__m256i*)p, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
  _mm256_storeu_si256((__m256i*)(p + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
}
LDF_AVX2_INLINE void store_index(int64_t* p, M<double> m) {
  _mm256_storeu_si256((__m256i*)p, (__m256i)m);
}
template <typename T> LDF_AVX2_INLINE M<T> load_index(const int64_t* p);
template <> LDF_AVX2_INLINE M<float> load_index<float>(const int64_t* p) {  // low halves, in range
  const __m256i lo = _mm256_loadu_si256((const __m256i*)p);
  const __m256i hi = _mm256_loadu_si256((const __m256i*)(p + 4));
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  return (M<float>)_mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(lo, even),
                                               _mm256_permutevar8x32_epi32(hi, even), 0x20);
}
template <> LDF_AVX2_INLINE M<double> load_index<double>(const int64_t* p) {
  return (M<double>)_mm256_loadu_si256((const __m256i*)p);
}

// Forward of rows [r0, r1) of C entries; returns the first row left over (fewer than W), for the
// scalar loop.
template <typename T, int C>
LDF_AVX2_INLINE int64_t forward_small(const T* __restrict__ z, T* __restrict__ out,
                                      int64_t* __restrict__ index, int64_t r0, int64_t r1) {
  constexpr int w = W<T>;
  int64_t r = r0;
  for (; r + w <= r1; r += w) {
    V<T> col[C];
    load_columns<T, C>(z + r * C, col);
    V<T> best = col[0];
    M<T> bj{};
#pragma GCC unroll 4
    for (int j = 1; j < C; ++j) {  // j > bj: take a NaN, or a larger entry, unless best is NaN
      const M<T> take = (best == best) & ((col[j] > best) | (col[j] != col[j]));
      best = take ? col[j] : best;
      bj = take ? M<T>{} + S<T>(j) : bj;
    }
#pragma GCC unroll 4
    for (int j = 0; j < C; ++j) col[j] = bj == S<T>(j) ? splat<T>(1) : splat<T>(0);
    store_columns<T, C>(out + r * C, col);
    store_index(index + r, bj);
  }
  return r;
}

// Backward of rows [r0, r1) of C entries; returns the first row left over, or -1 for an index out
// of range.
template <typename T, int C>
LDF_AVX2_INLINE int64_t backward_small(const T* __restrict__ z, const T* __restrict__ g,
                                       const int64_t* __restrict__ index, T* __restrict__ gz, T k,
                                       int64_t r0, int64_t r1) {
  constexpr int w = W<T>;
  int64_t r = r0;
  for (; r + w <= r1; r += w) {
    uint64_t bad = 0;
    for (int l = 0; l < w; ++l) bad |= static_cast<uint64_t>(index[r + l]) >= uint64_t(C);
    if (bad) return -1;
    const M<T> m = load_index<T>(index + r);
    V<T> zc[C], gc[C], sl[C];
    load_columns<T, C>(z + r * C, zc);
    load_columns<T, C>(g + r * C, gc);
    V<T> zm{}, gm{}, pen = splat<T>(-std::numeric_limits<T>::infinity());
#pragma GCC unroll 4
    for (int j = 0; j < C; ++j) {
      const M<T> is = m == S<T>(j);
      zm = is ? zc[j] : zm, gm = is ? gc[j] : gm;
      pen = (~is & (zc[j] > pen)) ? zc[j] : pen;
    }
    V<T> acc{};
#pragma GCC unroll 4
    for (int j = 0; j < C; ++j) {  // s_j = sigma_f(z_j, z_m) for j != m, sigma_f(z_pen, z_m) at m
      const M<T> is = m == S<T>(j);
      sl[j] = slope<T>(k * vgap<T>(is ? pen : zc[j], zm), k);
      acc += is ? V<T>{} : sl[j] * gc[j];
    }
#pragma GCC unroll 4
    for (int j = 0; j < C; ++j) sl[j] = m == S<T>(j) ? sl[j] * gm - acc : sl[j] * (gc[j] - gm);
    store_columns<T, C>(gz + r * C, sl);
  }
  return r;
}

// Entry points: rows [r0, r1) of a contiguous (rows, C) array.
template <typename T>
LDF_AVX2_ENTRY int64_t forward_rows(const T* __restrict__ z, T* __restrict__ out,
                                    int64_t* __restrict__ index, int64_t C, int64_t r0,
                                    int64_t r1) {
  switch (C) {
    case 2: return forward_small<T, 2>(z, out, index, r0, r1);
    case 3: return forward_small<T, 3>(z, out, index, r0, r1);
    case 4: return forward_small<T, 4>(z, out, index, r0, r1);
  }
  if (C < kLongRow || C > INT32_MAX) return r0;
  constexpr int w = W<T>;
  for (int64_t r = r0; r < r1; ++r) {
    const T* zr = z + r * C;
    T* o = out + r * C;
    const int64_t m = argmax_long(zr, C);
    for (int64_t j = 0; j < C; j += w) store(o + (j + w <= C ? j : C - w), V<T>{});
    o[m] = T(1);
    index[r] = m;
  }
  return r1;
}

template <typename T>
LDF_AVX2_ENTRY int64_t backward_rows(const T* __restrict__ g, const T* __restrict__ z,
                                     const int64_t* __restrict__ index, T* __restrict__ gz,
                                     int64_t C, T k, int64_t r0, int64_t r1) {
  switch (C) {
    case 2: return backward_small<T, 2>(z, g, index, gz, k, r0, r1);
    case 3: return backward_small<T, 3>(z, g, index, gz, k, r0, r1);
    case 4: return backward_small<T, 4>(z, g, index, gz, k, r0, r1);
  }
  if (C < kLongRow || C > INT32_MAX) return r0;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t m = index[r];
    if (m < 0 || m >= C) return -1;
    backward_long(z + r * C, g + r * C, gz + r * C, C, m, k);
  }
  return r1;
}

inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
}  // namespace avx2
#endif  // AVX2 kernels

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
