// The SIMD row kernels of ldf_ip::onehot_surrogate (thesis eq. 16, see onehot_kernels.h for the
// maths) for contiguous rows, written on ATen's portable vector type at::vec::Vectorized<T>. Only
// the onehot_vec_<capability>.cpp files include it, each after defining CPU_CAPABILITY (the
// namespace of this compilation) and CPU_CAPABILITY_<name>, which choose what Vectorized<T> is:
// 256-bit AVX2 registers, 128-bit NEON registers on aarch64, or an array that the compiler
// vectorises as it can (DEFAULT on x86). The code never assumes a lane count.
//  * long rows (C >= kLongRow): argmax as a max pass (4 accumulators) and a find pass over the row,
//    which is in L1 by then; backward as one pass of vectors over the row, partial at its tail.
//  * rows of C = 2, 3, 4: rows are the lanes. w rows (C w contiguous entries, w = lanes) are loaded
//    as C column vectors (entry j of each row), worked on lane-wise and stored back interleaved.
// The AVX2 build gives the results of the hand-written AVX2 kernels it replaced bit for bit (the
// FMAs sit where GCC contracted theirs; bench/onehot_before_after.py compares). Other builds, and
// the scalar loops of onehot_kernels.h, differ in the last bits (no FMA on x86 DEFAULT, other lane
// counts and sum orders; the scalar exp nests its polynomial otherwise).
#pragma once
#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY (and CPU_CAPABILITY_<name>) before including onehot_vec_kernels.h"
#endif
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <limits>

#include "onehot_kernels.h"
#include "onehot_vec.h"

namespace ldf_ip::CPU_CAPABILITY {

template <typename T>
using Vec = at::vec::Vectorized<T>;
template <typename T>
using Int = at::vec::int_same_size_t<T>;
template <typename T>
using IVec = at::vec::Vectorized<Int<T>>;  // the same bits seen as integers
template <typename T>
constexpr int kLanes = Vec<T>::size();

constexpr int64_t kLongRow = 16;  // from this C on, a row is worked on along its length
static_assert(kLongRow >= kLanes<float> && kLongRow >= kLanes<double>,
              "a long row holds a whole vector");
constexpr double kLog2e = 1.4426950408889634;

template <typename T>
inline Vec<T> select(const Vec<T>& mask, const Vec<T>& a, const Vec<T>& b) {  // mask ? a : b
  return Vec<T>::blendv(b, a, mask);
}

template <typename T>
inline int lanes_set(const Vec<T>& mask) {  // bit l set where lane l of a compare mask is true
  constexpr int all = (1 << kLanes<T>) - 1;
  return ~mask.zero_mask() & all;  // a true lane (all ones) is a NaN, never zero
}

// Reductions over the lanes, in lane order (a sum is then the same on every run), through memory:
// once a row, where at::vec::vec_reduce_all would go lane by lane through whole vectors (double).
template <typename T>
inline T lane_sum(const Vec<T>& v) {
  T lane[kLanes<T>];
  v.store(lane);
  T s = lane[0];
  for (int l = 1; l < kLanes<T>; ++l) s += lane[l];
  return s;
}

template <typename T>
inline T lane_max(const Vec<T>& v) {  // of lanes that are not NaN
  T lane[kLanes<T>];
  v.store(lane);
  T s = lane[0];
  for (int l = 1; l < kLanes<T>; ++l) s = lane[l] > s ? lane[l] : s;
  return s;
}

// ------------------------------------------------------------------------------------ exp, slope
// exp_nonpos and slope_cpu of onehot_kernels.h lane-wise, with the same constants and range
// reduction; the Taylor polynomial in Horner form on 1/i! (one FMA a degree) rather than the nested
// 1 + r/i (...) of the scalar loop: the same error bound (< 1 ulp), last-bit differences only.
template <typename T>
struct Taylor {  // 1/i!, i = 0..degree
  static constexpr int degree = ExpConst<T>::degree;
  T c[degree + 1];
  constexpr Taylor() : c() {
    c[0] = T(1);
    double f = 1.0;
    for (int i = 1; i <= degree; ++i) f /= i, c[i] = T(f);
  }
};

template <typename T>
inline Vec<T> exp_nonpos(const Vec<T>& x) {
  using C = ExpConst<T>;
  static constexpr Taylor<T> taylor;
  const Vec<T> lo(C::lo), magic(C::magic);
  const Vec<T> xc = at::vec::clamp_min(x, lo);  // max(x, lo), NaN stays NaN
  const Vec<T> t = at::vec::fmadd(xc, Vec<T>(T(kLog2e)), magic);  // t's low bits: round(x/ln2)
  const Vec<T> n = t - magic;
  const Vec<T> r =
      at::vec::fnmadd(n, Vec<T>(C::ln2_lo), at::vec::fnmadd(n, Vec<T>(C::ln2_hi), xc));
  Vec<T> p(taylor.c[C::degree]);
  for (int i = C::degree - 1; i >= 0; --i) p = at::vec::fmadd(p, r, Vec<T>(taylor.c[i]));
  // 2^n, written into the exponent bits (bias is exact in two's complement)
  const IVec<T> bits = at::vec::cast<Int<T>>(t) + IVec<T>(static_cast<Int<T>>(C::bias));
  const Vec<T> scale = at::vec::cast<T>(bits << IVec<T>(C::mant));
  return select(x < lo, Vec<T>(T(0)), p * scale);  // 0 below lo; NaN (not < lo) stays NaN
}

template <typename T>
inline Vec<T> gap(const Vec<T>& a, const Vec<T>& b) {  // ldf_ip::gap lane-wise
  return select(a == b, Vec<T>(T(0)), a - b);
}

template <typename T>
inline Vec<T> slope(const Vec<T>& x, const Vec<T>& k) {  // slope_cpu lane-wise
  const Vec<T> e = exp_nonpos(x | Vec<T>(T(-0.0)));   // exp(-|x|): the sign bit set
  const Vec<T> d = Vec<T>(T(1)) + e;
  return k * e / (d * d);
}

// ------------------------------------------------------------------------------------ long rows
template <typename T>
inline int64_t argmax_long(const T* __restrict__ z, int64_t C) {
  constexpr int w = kLanes<T>;  // C >= kLongRow >= w
  Vec<T> m0 = Vec<T>::loadu(z), m1 = m0, m2 = m0, m3 = m0;
  Vec<T> nan = m0 != m0;
  int64_t j = w;
  // clamp_min(m, a) is max(a, m), one instruction that ignores NaN rules: NaNs are looked for apart
  for (; j + 4 * w <= C; j += 4 * w) {
    const Vec<T> a = Vec<T>::loadu(z + j), b = Vec<T>::loadu(z + j + w);
    const Vec<T> c = Vec<T>::loadu(z + j + 2 * w), d = Vec<T>::loadu(z + j + 3 * w);
    m0 = at::vec::clamp_min(m0, a), m1 = at::vec::clamp_min(m1, b);
    m2 = at::vec::clamp_min(m2, c), m3 = at::vec::clamp_min(m3, d);
    nan = nan | (a != a) | (b != b) | (c != c) | (d != d);
  }
  for (; j < C; j += w) {  // the last vector may overlap the one before: max is idempotent
    const Vec<T> a = Vec<T>::loadu(z + (j + w <= C ? j : C - w));
    m0 = at::vec::clamp_min(m0, a);
    nan = nan | (a != a);
  }
  const bool any_nan = lanes_set(nan) != 0;
  const Vec<T> m = at::vec::clamp_min(at::vec::clamp_min(m1, m0), at::vec::clamp_min(m3, m2));
  const T best = lane_max(m);  // NaN-free unless any_nan
  const Vec<T> b(best);
  for (j = 0; j < C; j += 2 * w) {  // first NaN, else first entry == best; overlapping tail again
    const int64_t j0 = j + w <= C ? j : C - w, j1 = j + 2 * w <= C ? j + w : C - w;
    const Vec<T> x0 = Vec<T>::loadu(z + j0), x1 = Vec<T>::loadu(z + j1);
    const int h0 = lanes_set(any_nan ? x0 != x0 : x0 == b);
    const int h1 = lanes_set(any_nan ? x1 != x1 : x1 == b);
    if (h0) return j0 + __builtin_ctz(h0);
    if (h1) return j1 + __builtin_ctz(h1);
  }
  return 0;  // not reached
}

// One vector of the backward of a long row at j: `count` lanes (all for a full vector), and the
// argmax lane left out of acc and pen when kHasMax (use: the lanes that count).
template <typename T, bool kFull, bool kHasMax>
inline void backward_vec(const T* __restrict__ z, const T* __restrict__ g, T* __restrict__ gz,
                         int64_t j, int64_t count, const Vec<T>& use, const Vec<T>& vzm,
                         const Vec<T>& vgm, const Vec<T>& vk, Vec<T>& acc, Vec<T>& pen) {
  const Vec<T> zj = kFull ? Vec<T>::loadu(z + j) : Vec<T>::loadu(z + j, count);
  const Vec<T> gj = kFull ? Vec<T>::loadu(g + j) : Vec<T>::loadu(g + j, count);
  const Vec<T> sl = slope(vk * gap(zj, vzm), vk);
  const Vec<T> out = sl * (gj - vgm);
  if (kFull)
    out.store(gz + j);
  else
    out.store(gz + j, count);
  if (kFull && !kHasMax) {
    acc = at::vec::fmadd(sl, gj, acc);
    pen = at::vec::clamp_min(pen, zj);  // max(zj, pen)
  } else {
    acc = acc + ((sl * gj) & use);
    pen = select(use & (zj > pen), zj, pen);
  }
}

template <typename T>
inline void backward_long(const T* __restrict__ z, const T* __restrict__ g, T* __restrict__ gz,
                          int64_t C, int64_t m, T k) {
  constexpr int w = kLanes<T>;
  const T zm = z[m], gm = g[m];
  const Vec<T> vzm(zm), vgm(gm), vk(k), lane = Vec<T>::arange(T(0), T(1));
  const Vec<T> all = lane == lane;
  Vec<T> acc(T(0)), pen(-std::numeric_limits<T>::infinity());
  // full vectors end at `full`; m is in [jm, jm + w)
  const int64_t full = C / w * w, jm = m / w * w;
  int64_t j = 0;
  for (; j < std::min(jm, full); j += w)
    backward_vec<T, true, false>(z, g, gz, j, w, all, vzm, vgm, vk, acc, pen);
  if (jm < full) {
    backward_vec<T, true, true>(z, g, gz, jm, w, lane != Vec<T>(T(m - jm)), vzm, vgm, vk, acc,
                                pen);
    for (j = jm + w; j < full; j += w)
      backward_vec<T, true, false>(z, g, gz, j, w, all, vzm, vgm, vk, acc, pen);
  }
  if (full < C) {
    const Vec<T> use = (lane < Vec<T>(T(C - full))) & (lane != Vec<T>(T(m - full)));
    backward_vec<T, false, true>(z, g, gz, full, C - full, use, vzm, vgm, vk, acc, pen);
  }
  // pen: -inf or entries of z other than z_m, never NaN
  gz[m] = slope_cpu(k * ldf_ip::gap(lane_max(pen), zm), k) * gm - lane_sum(acc);
}

// ------------------------------------------------------------------------------------ short rows
// Rows of C = 2, 3, 4 as lanes. load_columns: C w contiguous entries (w rows) -> C column vectors,
// col[j] holding entry j of each row; store_columns the inverse. C = 2 and 4 by deinterleaving
// pairs (at::vec::deinterleave2, one or two rounds), C = 3 through a small buffer.
template <typename T, int C>
inline void load_columns(const T* p, Vec<T> (&col)[C]) {
  constexpr int w = kLanes<T>;
  if constexpr (C == 2) {
    std::tie(col[0], col[1]) = at::vec::deinterleave2(Vec<T>::loadu(p), Vec<T>::loadu(p + w));
  } else if constexpr (C == 4) {  // pairs (0 2), (1 3) first, then each pair
    const auto [e0, o0] = at::vec::deinterleave2(Vec<T>::loadu(p), Vec<T>::loadu(p + w));
    const auto [e1, o1] = at::vec::deinterleave2(Vec<T>::loadu(p + 2 * w),
                                                 Vec<T>::loadu(p + 3 * w));
    std::tie(col[0], col[2]) = at::vec::deinterleave2(e0, e1);
    std::tie(col[1], col[3]) = at::vec::deinterleave2(o0, o1);
  } else {
    T buf[C][w];
    for (int l = 0; l < w; ++l)
      for (int j = 0; j < C; ++j) buf[j][l] = p[l * C + j];
    for (int j = 0; j < C; ++j) col[j] = Vec<T>::loadu(buf[j]);
  }
}

template <typename T, int C>
inline void store_columns(T* p, const Vec<T> (&col)[C]) {
  constexpr int w = kLanes<T>;
  if constexpr (C == 2) {
    const auto [a, b] = at::vec::interleave2(col[0], col[1]);
    a.store(p), b.store(p + w);
  } else if constexpr (C == 4) {
    const auto [e0, e1] = at::vec::interleave2(col[0], col[2]);
    const auto [o0, o1] = at::vec::interleave2(col[1], col[3]);
    const auto [a, b] = at::vec::interleave2(e0, o0);
    const auto [c, d] = at::vec::interleave2(e1, o1);
    a.store(p), b.store(p + w), c.store(p + 2 * w), d.store(p + 3 * w);
  } else {
    T buf[C][w];
    for (int j = 0; j < C; ++j) col[j].store(buf[j]);
    for (int l = 0; l < w; ++l)
      for (int j = 0; j < C; ++j) p[l * C + j] = buf[j][l];
  }
}

// Forward of rows [r0, r1) of C entries; returns the first row left over (fewer than w).
template <typename T, int C>
inline int64_t forward_small(const T* __restrict__ z, T* __restrict__ out,
                             int64_t* __restrict__ index, int64_t r0, int64_t r1) {
  constexpr int w = kLanes<T>;
  int64_t r = r0;
  for (; r + w <= r1; r += w) {
    Vec<T> col[C];
    load_columns<T, C>(z + r * C, col);
    Vec<T> best = col[0], bj(T(0));  // bj: the argmax's index, as a T in each lane
    for (int j = 1; j < C; ++j) {  // j > bj: take a NaN, or a larger entry, unless best is NaN
      const Vec<T> take = (best == best) & ((col[j] > best) | (col[j] != col[j]));
      best = select(take, col[j], best);
      bj = select(take, Vec<T>(T(j)), bj);
    }
    for (int j = 0; j < C; ++j) col[j] = select(bj == Vec<T>(T(j)), Vec<T>(T(1)), Vec<T>(T(0)));
    store_columns<T, C>(out + r * C, col);
    T lane[w];
    bj.store(lane);
    for (int l = 0; l < w; ++l) index[r + l] = static_cast<int64_t>(lane[l]);
  }
  return r;
}

// Backward of rows [r0, r1) of C entries; returns the first row left over, or -1 for an index out
// of range.
template <typename T, int C>
inline int64_t backward_small(const T* __restrict__ z, const T* __restrict__ g,
                              const int64_t* __restrict__ index, T* __restrict__ gz, T k,
                              int64_t r0, int64_t r1) {
  constexpr int w = kLanes<T>;
  const Vec<T> vk(k);
  int64_t r = r0;
  for (; r + w <= r1; r += w) {
    T lane[w];  // the argmax index as a T, checked to be in [0, C) first
    uint64_t bad = 0;
    for (int l = 0; l < w; ++l) {
      bad |= static_cast<uint64_t>(index[r + l]) >= uint64_t(C);
      lane[l] = static_cast<T>(static_cast<int32_t>(index[r + l]));
    }
    if (bad) return -1;
    const Vec<T> m = Vec<T>::loadu(lane);
    Vec<T> zc[C], gc[C], sl[C];
    load_columns<T, C>(z + r * C, zc);
    load_columns<T, C>(g + r * C, gc);
    Vec<T> zm(T(0)), gm(T(0)), pen(-std::numeric_limits<T>::infinity());
    for (int j = 0; j < C; ++j) {
      const Vec<T> is = m == Vec<T>(T(j));
      zm = select(is, zc[j], zm), gm = select(is, gc[j], gm);
      pen = select((m != Vec<T>(T(j))) & (zc[j] > pen), zc[j], pen);
    }
    Vec<T> acc(T(0));
    for (int j = 0; j < C; ++j) {  // s_j = sigma_f(z_j, z_m) for j != m, sigma_f(z_pen, z_m) at m
      const Vec<T> is = m == Vec<T>(T(j));
      sl[j] = slope(vk * gap(select(is, pen, zc[j]), zm), vk);
      acc = acc + select(is, Vec<T>(T(0)), sl[j] * gc[j]);
    }
    for (int j = 0; j < C; ++j)
      sl[j] = select(m == Vec<T>(T(j)), at::vec::fmsub(sl[j], gm, acc), sl[j] * (gc[j] - gm));
    store_columns<T, C>(gz + r * C, sl);
  }
  return r;
}

// ------------------------------------------------------------------------------------ entries
template <typename T>
int64_t forward_rows(const T* z, T* out, int64_t* index, int64_t C, int64_t r0, int64_t r1) {
  switch (C) {
    case 2: return forward_small<T, 2>(z, out, index, r0, r1);
    case 3: return forward_small<T, 3>(z, out, index, r0, r1);
    case 4: return forward_small<T, 4>(z, out, index, r0, r1);
  }
  if (C < kLongRow) return r0;
  constexpr int w = kLanes<T>;
  const Vec<T> zero(T(0));
  for (int64_t r = r0; r < r1; ++r) {
    const T* zr = z + r * C;
    T* o = out + r * C;
    const int64_t m = argmax_long(zr, C);
    for (int64_t j = 0; j < C; j += w) zero.store(o + (j + w <= C ? j : C - w));
    o[m] = T(1);
    index[r] = m;
  }
  return r1;
}

template <typename T>
int64_t backward_rows(const T* g, const T* z, const int64_t* index, T* gz, int64_t C, T k,
                      int64_t r0, int64_t r1) {
  switch (C) {
    case 2: return backward_small<T, 2>(z, g, index, gz, k, r0, r1);
    case 3: return backward_small<T, 3>(z, g, index, gz, k, r0, r1);
    case 4: return backward_small<T, 4>(z, g, index, gz, k, r0, r1);
  }
  if (C < kLongRow) return r0;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t m = index[r];
    if (m < 0 || m >= C) return -1;
    backward_long(z + r * C, g + r * C, gz + r * C, C, m, k);
  }
  return r1;
}

template <typename T>
VecRowKernels<T> row_kernels() {
  return {&forward_rows<T>, &backward_rows<T>};
}
template VecRowKernels<float> row_kernels<float>();
template VecRowKernels<double> row_kernels<double>();

}  // namespace ldf_ip::CPU_CAPABILITY
