// Exact 0/1 knapsack by an expanding-core dynamic program after Pisinger's minknap ("A minimal
// algorithm for the 0-1 knapsack problem", Operations Research 45, 1997) and combo (Martello,
// Pisinger and Toth, "Dynamic programming and strong bounds for the 0-1 knapsack problem",
// Management Science 45, 1999). Written from the papers; no torch here (csrc/knapsack.cpp wraps it
// as the op ldf_ip::knapsack_exact), so that it can be compiled and tried on its own.
//
// The problem: maximise sum p_j x_j subject to sum w_j x_j <= c, x_j in {0, 1}, integer data.
// Before anything else (both exact reductions, see solve):
//   * identical items (same weight and profit) are bundled by binary splitting where that leaves
//     at most a quarter of the items (the spanner classes: a few dozen kinds);
//   * if every item is a multiple of one of at most two (weight, profit) ratios (the spanner
//     classes), the problem is a subset-sum over the multiples of each ratio, solved by bitsets.
// The algorithm, per (sub)problem ("level"):
//   * items sorted by falling efficiency e_j = p_j / w_j (exact: p_i w_j vs p_j w_i in 128 bits);
//     the break item b is the first that does not fit; the break solution takes items 0..b-1.
//   * incumbent z: the break solution filled greedily with the later items that fit.
//   * the core [s, t] grows from b outwards, one item to the right (t + 1: may be added) and one to
//     the left (s - 1: may be removed) in turn. A state is a solution that takes every item before
//     s, none after t and any subset of the core: (weight, profit, the last 64 core decisions).
//     States are kept sorted by weight with rising profits: a state no lighter and no more
//     valuable than another is dominated and dropped (the merge of the old states with the old
//     states plus the new item does this in linear time).
//   * an item about to enter the core whose Dembo-Hammer bound (the LP bound with the item fixed
//     at the other value) cannot beat z is fixed and never enters ("reduction").
//   * a state is dropped when its upper bound cannot beat z: under the capacity it can at best
//     add items of efficiency <= e_{t+1}, over it it must remove items of efficiency >= e_{s-1}.
//   * state-item pairing (combo): once there are many states, every state is tried with one item
//     outside the core added (or removed), for a better incumbent sooner; on subset-sum data also
//     with the subsets of the next 32 items (two lists, as Horowitz and Sahni).
//   * swap pairing for exact fills (where profits are a constant apart from the weights: strongly
//     and inverse strongly correlated data): every state with every pair of a free item removed
//     outside the core and one added, looked up by the weight that fills c exactly.
//   * surrogate relaxation (combo): the cardinality constraint surrogated into the capacity with
//     the Lagrangian multiplier gives a knapsack of its own, solved by a nested solver that drops
//     every state unable to beat z; its optimum bounds this problem, and its solution, where it
//     fits, is optimal; where it does not, it is repaired into an incumbent and the next
//     surrogate problem takes a multiplier that cuts it off.
//   * cardinality bounds (combo): every solution worth z + 1 takes between k_min and k_max items;
//     the Lagrangian relaxation of these constraints with the LP bound gives an upper bound that
//     may prove z optimal long before the core is exhausted (strongly correlated data); with its
//     multiplier, the same bound on every state (its item count from its core decisions) drops
//     the states that cannot beat z (almost strongly correlated data).
//   * pairing, the cardinality bound and the surrogate relaxation are amortised: each runs again
//     only once the core has handled states in proportion to its cost (measured, for the bound
//     and the surrogate); items fixed by Dembo-Hammer are not tested again (z only grows); z at
//     the LP bound stops the search at once.
//   * solution vectors (minknap): a state keeps only its last 64 core decisions; if the best state
//     depends on earlier ones, the items of those decisions form a smaller knapsack whose optimum
//     is known, solved the same way (each such level has at least 64 items fewer).
// All arithmetic is exact in 64-bit integers, products in 128 bits; the sums of weights and of
// profits must stay below 2^62 (else kTooLarge).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

namespace ldf_ip {
namespace knapsack {

using i64 = int64_t;
using i128 = __int128;
using u64 = uint64_t;

// What a solve ends with; csrc/knapsack.py turns each into its message.
enum Status : int64_t {
  kOptimal = 0,
  kTimeLimit = 1,      // not proven optimal within the time limit
  kStateLimit = 2,     // more states than kMaxStates (memory)
  kTooLarge = 3,       // the sums of weights or profits reach kMaxSum
  kBadInput = 4,       // a negative weight
  kInternalError = 5,  // a reconstructed solution that does not check out (a bug)
};

constexpr i64 kMaxSum = i64(1) << 62;  // sums of weights, of profits: exact bounds below 2^62
constexpr size_t kMaxStates = size_t(1) << 22;  // about 100 MB of states per thread
constexpr int kVectorBits = 64;                 // core decisions a state remembers
constexpr size_t kPairingStates = 1000;         // pairing once there are more states than this
constexpr u64 kPairingWorkPerItem = 4;  // ... when the core has handled this many states per item
                                        // since the last pairing
constexpr u64 kBoundCostDivisor = 8;  // the cardinality bound again after 1/this of its cost
                                      // (items its LP passes went through) in core states
constexpr int kBlockItems = 32;                 // items next to the core in block pairing
constexpr size_t kFillPairs = 1 << 14;  // fill_by_swaps: at most this many (removed, added)
constexpr u64 kFillCostDivisor = 4;  // ... again after 1/this of its cost (states + pairs) in
                                     // core states (1: 2x slower at R = 10^7, 16: as 4)
constexpr size_t kCardinalityStates = 1000;     // the cardinality bound beyond this many states
constexpr size_t kSurrogateStates = 1000;  // the surrogate relaxation beyond this many states
constexpr i64 kSurrogateStepShare = 100;  // a surrogate multiplier stepped by >= 1/this only
constexpr int kSurrogateDepth = 1;         // surrogate problems are not relaxed again
constexpr size_t kMaxRatios = 2;  // solve_by_ratios: at most this many (w, p) / gcd
constexpr size_t kMaxRatioWords = size_t(1) << 18;  // ... and bitsets of at most this many words
constexpr size_t kBundleShare = 4;  // identical items bundled where kinds <= items / this
constexpr size_t kHashLoad = 2;  // count_kinds: table slots per item, at least
constexpr u64 kHashMultiplier = 0x9E3779B97F4A7C15ull;  // Fibonacci hashing: 2^64 / golden ratio
constexpr i64 kNoTarget = std::numeric_limits<i64>::min();

struct Item {
  i64 w, p;
  int32_t index;  // in the caller's arrays
};

struct State {
  i64 w, p;
  u64 vect;  // bit k: whether the k-th most recent core item is toggled against the break solution
};

// A list of states in a buffer that only grows: the merge of add_to_core writes up to twice the
// states of the list before it, and a std::vector's resize would zero-fill them first.
class StateList {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  State& operator[](size_t i) { return buf_[i]; }
  const State& operator[](size_t i) const { return buf_[i]; }
  State* data() { return buf_.get(); }
  const State* data() const { return buf_.get(); }
  void assign_one(const State& state) {
    reserve(1);
    buf_[0] = state;
    size_ = 1;
  }
  // room for n states; the contents are lost
  void reserve(size_t n) {
    if (n > capacity_) {
      capacity_ = std::max(n, 2 * capacity_);
      buf_.reset(new State[capacity_]);
    }
  }
  void set_size(size_t n) { size_ = n; }
  void swap(StateList& other) {
    std::swap(buf_, other.buf_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }

 private:
  std::unique_ptr<State[]> buf_;
  size_t size_ = 0, capacity_ = 0;
};

class Deadline {
 public:
  explicit Deadline(double seconds)
      : limited_(seconds > 0 && seconds < kForever),
        end_(std::chrono::steady_clock::now() +
             std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                 std::chrono::duration<double>(limited_ ? seconds : 0.0))) {}
  bool passed() const { return limited_ && std::chrono::steady_clock::now() > end_; }

 private:
  static constexpr double kForever = 1e9;  // seconds: no limit at all
  bool limited_;
  std::chrono::steady_clock::time_point end_;
};

// a ahead of b in efficiency order: p_a / w_a > p_b / w_b, ties by index
inline bool more_efficient(const Item& a, const Item& b) {
  const i128 left = i128(a.p) * b.w, right = i128(b.p) * a.w;
  return left != right ? left > right : a.index < b.index;
}

inline i64 gcd64(i64 a, i64 b) {
  while (b != 0) {
    const i64 r = a % b;
    a = b;
    b = r;
  }
  return a;
}

// The number of set bits (SWAR: the builtin is a library call without -mpopcnt).
inline int popcount64(u64 x) {
  x = x - ((x >> 1) & 0x5555555555555555ull);
  x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
  return int((x * 0x0101010101010101ull) >> 56);
}

// floor(a / b) for b > 0
inline i128 floor_div(i128 a, i128 b) {
  i128 q = a / b;
  if ((a % b != 0) && (a < 0)) --q;
  return q;
}

// The Lagrangian cardinality bound of combo for one level's items (any order), capacity c.
class CardinalityBound {
 public:
  void prepare(const std::vector<Item>& items, i64 c) {
    c_ = c;
    items_ = &items;
    std::vector<i64> w, p;
    for (const Item& it : items) {
      w.push_back(it.w);
      p.push_back(it.p);
    }
    std::sort(w.begin(), w.end());
    std::sort(p.begin(), p.end(), std::greater<i64>());
    // k_max: the most items that fit (the lightest)
    k_max_ = 0;
    i64 weight = 0;
    while (k_max_ < w.size() && weight + w[k_max_] <= c) weight += w[k_max_++];
    profit_prefix_.assign(1, 0);
    for (i64 v : p) profit_prefix_.push_back(profit_prefix_.back() + v);
    sum_w_ = std::accumulate(w.begin(), w.end(), i64(0));
    max_p_ = p.empty() ? 0 : p.front();
    max_w_ = w.empty() ? 0 : w.back();
    ready_ = true;
  }
  bool ready() const { return ready_; }

  // An upper bound on every solution worth at least target (target - 1 when there is none):
  // such a solution takes k in [k_min, k_max] items, and for every integer lambda,
  //   z <= lambda * (k_max if lambda >= 0 else k_min) + LP(profits p - lambda).
  // The bound is convex in lambda; its subgradient k - sum x_LP(lambda) guides a bisection.
  i128 bound(i64 target) {
    const i64 total = profit_prefix_.back();
    if (target > total) return i128(target) - 1;
    size_t k_min = 0;
    if (target > 0)
      k_min = std::lower_bound(profit_prefix_.begin(), profit_prefix_.end(), target) -
              profit_prefix_.begin();
    if (k_min > k_max_) return i128(target) - 1;
    k_min_ = k_min;
    i128 lo = -(i128(sum_w_) + total), hi = max_p_;
    // warm start: the multiplier of the last call, bracketed by doubling steps
    if (have_last_ && last_ > lo && last_ < hi) {
      i128 step = 1;
      if (slope_sign(last_) >= 0) {
        hi = last_;
        while (hi - step > lo && slope_sign(hi - step) >= 0) {
          hi -= step;
          step *= 2;
        }
        lo = std::max(lo, hi - step);
      } else {
        lo = last_ + 1;
        while (lo + step < hi && slope_sign(lo + step) < 0) {
          lo += step + 1;
          step *= 2;
        }
        hi = std::min(hi, lo + step);
      }
    }
    while (lo < hi) {  // the smallest lambda whose slope is >= 0
      const i128 mid = lo + floor_div(hi - lo, 2);
      if (slope_sign(mid) >= 0)
        hi = mid;
      else
        lo = mid + 1;
    }
    last_ = lo;
    have_last_ = true;
    const i128 below = value(lo - 1), at = value(lo);
    if (below < at) last_ = lo - 1;
    return std::min(below, at);
  }

  // Items the LP relaxations have gone through so far: the cost of the bounds.
  u64 work() const { return work_; }

  // The multiplier of the last bound, and its cardinality (k_max if >= 0, else k_min).
  i128 multiplier() const { return last_; }
  i64 cardinality() const { return k_of(last_); }

 private:
  struct Lp {
    i128 value;  // floor of the LP bound
    i64 full;    // items taken whole
    i64 rem;     // capacity left for the break item
    i64 w_break;  // its weight (0: no break item, everything fits)
  };

  i64 k_of(i128 lambda) const { return lambda >= 0 ? i64(k_max_) : i64(k_min_); }

  i128 value(i128 lambda) {
    const Lp lp = solve_lp(lambda);
    return lambda * k_of(lambda) + lp.value;
  }

  // sign of k - sum x_LP(lambda)
  int slope_sign(i128 lambda) {
    const Lp lp = solve_lp(lambda);
    const i64 k = k_of(lambda);
    if (lp.w_break == 0) return k > lp.full ? 1 : (k < lp.full ? -1 : 0);
    const i128 d = i128(k - lp.full) * lp.w_break - lp.rem;
    return d > 0 ? 1 : (d < 0 ? -1 : 0);
  }

  // The LP relaxation with profits p - lambda, by weighted quickselect: expected linear time.
  Lp solve_lp(i128 lambda) {
    work_ += items_->size();
    // profits and weights small enough for 64-bit products (every class here): the same
    // partition on 16-byte entries with 64-bit products, about twice as fast
    if ((i128(max_p_) - lambda) * max_w_ < kMaxSum) return solve_lp_as<i64>(lambda, buf64_);
    return solve_lp_as<i128>(lambda, buf_);
  }

  template <typename Q>
  struct AdjustedAs {
    Q q;  // p - lambda > 0
    i64 w;
  };

  template <typename Q>
  Lp solve_lp_as(i128 lambda, std::vector<AdjustedAs<Q>>& buf) {
    buf.clear();
    for (const Item& it : *items_) {
      const i128 q = i128(it.p) - lambda;
      if (q > 0) buf.push_back({Q(q), it.w});
    }
    Lp out{0, 0, 0, 0};
    i64 cap = c_;
    size_t lo = 0, hi = buf.size();
    while (lo < hi) {
      const AdjustedAs<Q> pivot = buf[lo + (hi - lo) / 2];
      // three-way partition of [lo, hi): more efficient than the pivot | as efficient | less
      size_t gt = lo, i = lo, lt = hi;
      while (i < lt) {
        const Q a = buf[i].q * pivot.w, b = pivot.q * buf[i].w;
        if (a > b)
          std::swap(buf[gt++], buf[i++]);
        else if (a < b)
          std::swap(buf[i], buf[--lt]);
        else
          ++i;
      }
      i128 w_gt = 0, q_gt = 0;
      for (size_t j = lo; j < gt; ++j) {
        w_gt += buf[j].w;
        q_gt += buf[j].q;
      }
      if (w_gt > cap) {  // the break item is among the more efficient ones
        hi = gt;
        continue;
      }
      cap -= i64(w_gt);
      out.value += q_gt;
      out.full += i64(gt - lo);
      for (size_t j = gt; j < lt; ++j) {  // equally efficient: whole items while they fit
        if (buf[j].w <= cap) {
          cap -= buf[j].w;
          out.value += buf[j].q;
          ++out.full;
        } else {
          out.rem = cap;
          out.w_break = buf[j].w;
          out.value += (i128(cap) * buf[j].q) / buf[j].w;
          return out;
        }
      }
      lo = lt;
    }
    return out;
  }

  const std::vector<Item>* items_ = nullptr;
  i64 c_ = 0;
  size_t k_max_ = 0, k_min_ = 0;
  std::vector<i64> profit_prefix_;
  i64 sum_w_ = 0, max_p_ = 0, max_w_ = 0;
  std::vector<AdjustedAs<i128>> buf_;
  std::vector<AdjustedAs<i64>> buf64_;
  i128 last_ = 0;
  bool have_last_ = false;
  bool ready_ = false;
  u64 work_ = 0;
};

class Solver {
 public:
  // Solves one instance: x (n bytes) gets the optimal 0/1 solution (all 0 unless kOptimal).
  // floor (the nested surrogate problems): only a solution worth more than floor is wanted, so
  // states that cannot beat it are dropped from the start; where no solution is worth more,
  // *none_above is set (and x is not a solution).
  Status solve(const i64* w, const i64* p, i64 n, i64 c, uint8_t* x, const Deadline& deadline,
               i64 floor = kNoTarget, bool* none_above = nullptr) {
    if (none_above != nullptr) *none_above = false;
    std::fill(x, x + n, uint8_t(0));
    deadline_ = &deadline;
    if (c < 0) {  // not even the empty solution fits; x = 0 as solve_core
      if (none_above != nullptr) *none_above = floor != kNoTarget;
      return kOptimal;
    }
    std::vector<Item> items;
    i128 sum_w = 0, sum_p = 0, free_p = 0;
    for (i64 j = 0; j < n; ++j) {
      if (w[j] < 0) return kBadInput;
      if (p[j] <= 0 || w[j] > c) continue;  // never worth taking / never fits
      if (w[j] == 0) {  // free
        x[j] = 1;
        free_p += p[j];
        continue;
      }
      sum_w += w[j];
      sum_p += p[j];
      items.push_back({w[j], p[j], int32_t(j)});
    }
    if (sum_w >= kMaxSum || sum_p >= kMaxSum) return kTooLarge;
    c = i64(std::min<i128>(c, sum_w));  // keeps every bound product within 128 bits
    bundle_identical(items);
    // the free items count towards the floor: the rest must beat floor - free_p (every solution
    // does where that is negative)
    if (floor != kNoTarget) floor = i128(floor) - free_p < 0 ? kNoTarget : i64(floor - free_p);
    std::vector<int32_t> taken;
    i64 value = 0;
    bool found = true;
    if (solve_by_ratios(items, c, taken)) {
      for (int32_t bundle : taken) value += items[bundle].p;  // items[k].index is bundle k
      found = floor == kNoTarget || value > floor;
    } else {
      const Status status =
          solve_level(std::move(items), c, kNoTarget, floor, taken, value, found);
      if (status != kOptimal) return status;
    }
    if (!found) {  // x: the free items only
      if (none_above != nullptr) *none_above = true;
      return kOptimal;
    }
    for (int32_t bundle : taken)
      for (int32_t k = bundle_start_[bundle]; k < bundle_start_[bundle + 1]; ++k)
        x[bundle_members_[k]] = 1;
    return kOptimal;
  }

 private:
  // What the incumbent z is: the greedy solution, or a state (plus one item outside the core
  // toggled, when pairing found it).
  struct Incumbent {
    bool from_state = false;
    u64 vect = 0;
    size_t decisions = 0;  // core items toggled so far when it was found
    std::vector<int> extra;  // items outside the core toggled too (positions): pairing
    std::vector<char> full;  // not from a state: the solution (positions), empty for greedy
  };

  // Identical items (same weight and profit: the spanner classes have a few dozen kinds among
  // hundreds of items) are bundled by binary splitting: q copies become bundles of 1, 2, 4, ...
  // copies and a remainder, whose subsets take every count 0..q of the copies, so the optimum is
  // the same with far fewer items. A bundle's weight and profit are sums of the items', below
  // kMaxSum. Afterwards items[k].index is bundle k, whose items are bundle_members_[
  // bundle_start_[k] .. bundle_start_[k + 1]).
  void bundle_identical(std::vector<Item>& items) {
    auto same = [](const Item& a, const Item& b) { return a.w == b.w && a.p == b.p; };
    bundle_members_.clear();
    bundle_start_.clear();
    const size_t kinds = count_kinds(items);
    // a bundle counts as one item in the cardinality bound, which is then weaker: bundles only
    // where they save many items
    if (kinds * kBundleShare > items.size()) {  // each item its own bundle: no sort needed
      for (size_t k = 0; k < items.size(); ++k) {
        bundle_start_.push_back(int32_t(k));
        bundle_members_.push_back(items[k].index);
        items[k].index = int32_t(k);
      }
      bundle_start_.push_back(int32_t(items.size()));
      return;
    }
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
      return a.w != b.w ? a.w < b.w : (a.p != b.p ? a.p < b.p : a.index < b.index);
    });
    bundle_start_.assign(1, 0);
    std::vector<Item> bundles;
    for (size_t first = 0; first < items.size();) {
      size_t last = first + 1;
      while (last < items.size() && same(items[first], items[last])) ++last;
      i64 left = i64(last - first), size = 1;
      size_t member = first;
      while (left > 0) {
        const i64 take = std::min(size, left);
        bundles.push_back({items[first].w * take, items[first].p * take,
                           int32_t(bundle_start_.size() - 1)});
        for (i64 k = 0; k < take; ++k) bundle_members_.push_back(items[member++].index);
        bundle_start_.push_back(int32_t(bundle_members_.size()));
        left -= take;
        size *= 2;
      }
      first = last;
    }
    items = std::move(bundles);
  }

  // Few ratios (the spanner classes: every item is a multiple of one of two "spanner" items):
  // item j is m_j times (w0, p0), the weight and profit divided by their gcd. If all items have
  // one of at most kMaxRatios such (w0, p0), a solution is worth only its sum M_r of the m_j
  // of each ratio r, and it can take any sum that a subset of those m_j makes: an exact
  // subset-sum over the m_j of each ratio (bitsets, one per item for the way back), then the
  // best pair (M_1, M_2) with w0_1 M_1 + w0_2 M_2 <= c. Only where the bitsets stay small
  // (kMaxRatioWords); returns whether it solved the problem (taken: the items, any order).
  bool solve_by_ratios(const std::vector<Item>& items, i64 c, std::vector<int32_t>& taken) {
    struct Ratio {
      i64 w0, p0;
      std::vector<int> members;  // positions in items
      std::vector<i64> m;        // their multiples
      i64 total = 0;
    };
    std::vector<Ratio> ratios;
    for (size_t k = 0; k < items.size(); ++k) {
      const i64 g = gcd64(items[k].w, items[k].p);
      const i64 w0 = items[k].w / g, p0 = items[k].p / g;
      size_t r = 0;
      while (r < ratios.size() && (ratios[r].w0 != w0 || ratios[r].p0 != p0)) ++r;
      if (r == ratios.size()) {
        if (ratios.size() == kMaxRatios) return false;
        ratios.push_back({w0, p0, {}, {}, 0});
      }
      ratios[r].members.push_back(int(k));
      ratios[r].m.push_back(g);
      ratios[r].total += g;
    }
    if (ratios.empty()) return false;
    // sums above c / w0 never fit: the bitsets stop there
    size_t words = 0;
    for (Ratio& ratio : ratios) {
      ratio.total = std::min(ratio.total, c / ratio.w0);
      words += (ratio.members.size() + 1) * (size_t(ratio.total) / 64 + 1);
    }
    if (words > kMaxRatioWords) return false;
    // reach[r][k]: the sums of ratio r that its first k members make (bit s: sum s)
    std::vector<std::vector<std::vector<u64>>> reach(ratios.size());
    for (size_t r = 0; r < ratios.size(); ++r) {
      const size_t n_words = size_t(ratios[r].total) / 64 + 1;
      const size_t top = size_t(ratios[r].total) % 64;  // no sums above the total
      const u64 top_mask = top == 63 ? ~u64(0) : (u64(1) << (top + 1)) - 1;
      std::vector<u64> bits(n_words, 0);
      bits[0] = 1;
      reach[r].push_back(bits);
      for (i64 shift : ratios[r].m) {
        if (shift <= ratios[r].total) {
          const size_t word_shift = size_t(shift / 64), bit_shift = size_t(shift % 64);
          for (size_t i = n_words; i-- > word_shift;) {  // bits |= bits << shift, top down
            u64 moved = bits[i - word_shift] << bit_shift;
            if (bit_shift != 0 && i > word_shift)
              moved |= bits[i - word_shift - 1] >> (64 - bit_shift);
            bits[i] |= moved;
          }
          bits[n_words - 1] &= top_mask;
        }
        reach[r].push_back(bits);
      }
    }
    auto has = [](const std::vector<u64>& bits, i64 sum) {
      return ((bits[size_t(sum) / 64] >> (sum % 64)) & 1) != 0;
    };
    // the best sums: for each sum of the first ratio, the largest of the second that fits
    const Ratio& first = ratios[0];
    const std::vector<u64>& all_first = reach[0].back();
    std::vector<i64> largest;  // largest[x]: the largest sum <= x of the second ratio
    if (ratios.size() == 2) {
      largest.assign(size_t(ratios[1].total) + 1, 0);
      for (i64 x = 0; x <= ratios[1].total; ++x)
        largest[x] = has(reach[1].back(), x) ? x : (x > 0 ? largest[x - 1] : 0);
    }
    i128 best_value = -1;
    i64 best_sum[kMaxRatios] = {};
    for (i64 sum = 0; sum <= first.total; ++sum) {
      if (!has(all_first, sum)) continue;
      i128 value = i128(sum) * first.p0;
      i64 other = 0;
      if (ratios.size() == 2) {
        const i64 room = (c - sum * first.w0) / ratios[1].w0;
        other = largest[size_t(std::min(room, ratios[1].total))];
        value += i128(other) * ratios[1].p0;
      }
      if (value > best_value) {
        best_value = value;
        best_sum[0] = sum;
        if (ratios.size() == 2) best_sum[1] = other;
      }
    }
    // the way back: member k is taken where the sum left is not made without it
    for (size_t r = 0; r < ratios.size(); ++r) {
      i64 left = best_sum[r];
      for (size_t k = ratios[r].members.size(); k-- > 0;) {
        if (has(reach[r][k], left)) continue;
        left -= ratios[r].m[k];
        taken.push_back(items[ratios[r].members[k]].index);
      }
      if (left != 0) return false;  // cannot happen: the sum was reachable
    }
    return true;
  }

  // The number of different (weight, profit) among the items: open addressing, expected linear
  // time.
  size_t count_kinds(const std::vector<Item>& items) {
    size_t size = 1;
    while (size < kHashLoad * items.size()) size *= 2;
    hash_.assign(size, -1);
    size_t kinds = 0;
    for (size_t k = 0; k < items.size(); ++k) {
      const u64 key = u64(items[k].w) * kHashMultiplier ^ u64(items[k].p);
      size_t at = size_t((key * kHashMultiplier) >> 32) & (size - 1);
      bool seen = false;
      while (hash_[at] >= 0 && !seen) {
        const Item& other = items[hash_[at]];
        seen = other.w == items[k].w && other.p == items[k].p;
        at = (at + 1) & (size - 1);
      }
      if (!seen) {
        hash_[at] = int32_t(k);
        ++kinds;
      }
    }
    return kinds;
  }

  // One level: an optimal solution of items under capacity c (original indices into `taken`); with
  // a target, any solution worth at least target (the caller knows one exists and is optimal).
  // With a floor (no target), only solutions worth more than floor: found = false if there is
  // none (then taken is left empty).
  Status solve_level(std::vector<Item> items, i64 c, i64 target, i64 floor,
                     std::vector<int32_t>& taken, i64& value, bool& found) {
    found = true;
    auto too_heavy = [c](const Item& it) { return it.w > c; };
    items.erase(std::remove_if(items.begin(), items.end(), too_heavy), items.end());
    const int m = int(items.size());
    value = 0;
    if (m == 0) {
      found = floor == kNoTarget || floor < 0;
      return (target == kNoTarget || target <= 0) ? kOptimal : kInternalError;
    }
    // rudimentary divisibility: with all weights multiples of g, only multiples of g are reachable
    i64 g = 0;
    for (const Item& it : items) g = gcd64(g, it.w);
    c = c / g * g;
    std::sort(items.begin(), items.end(), more_efficient);
    // the break item b and the break solution (items 0..b-1)
    i64 w_bar = 0, p_bar = 0;
    int b = 0;
    while (b < m && w_bar + items[b].w <= c) {
      w_bar += items[b].w;
      p_bar += items[b].p;
      ++b;
    }
    if (b == m) {  // everything fits
      if (target != kNoTarget && p_bar < target) return kInternalError;
      value = p_bar;
      found = floor == kNoTarget || p_bar > floor;
      if (found)
        for (const Item& it : items) taken.push_back(it.index);
      return kOptimal;
    }
    // the greedy incumbent
    std::vector<char> greedy(m, 0);
    i64 z = p_bar, room = c - w_bar;
    for (int j = 0; j < m; ++j) {
      if (j < b) {
        greedy[j] = 1;
      } else if (items[j].w <= room) {
        greedy[j] = 1;
        room -= items[j].w;
        z += items[j].p;
      }
    }
    bool have_solution = true;
    const bool greedy_reaches_target = target != kNoTarget && z >= target;
    if (target != kNoTarget && z < target) {  // no solution yet: only states worth target count
      z = target - 1;
      have_solution = false;
    }
    if (floor != kNoTarget && z <= floor) {  // only states worth more than floor count
      z = floor;
      have_solution = false;
    }
    const i64 wb = items[b].w, pb = items[b].p;
    // Dantzig's LP bound: z proven optimal at once?
    const i128 dantzig = p_bar + (i128(c - w_bar) * pb) / wb;
    Incumbent best;
    std::vector<int> toggled;  // core items (positions) in the order they entered the core
    if (dantzig > z && !greedy_reaches_target) {
      const Status status =
          expand_core(items, c, b, w_bar, p_bar, dantzig, z, have_solution, best, toggled);
      if (status != kOptimal) return status;
    }
    if (!have_solution) {
      if (floor == kNoTarget) return kInternalError;
      found = false;  // nothing worth more than floor
      return kOptimal;
    }
    value = z;
    return emit(items, c, b, z, greedy, best, toggled, taken);
  }

  // Dembo-Hammer: can item j (outside the core) be fixed at its break-solution value? The LP
  // bound with x_j flipped is at most p_bar + (c - w_bar) e_b -/+ (p_j - e_b w_j).
  static bool fixed_by_dembo_hammer(const Item& it, bool right, i64 c, i64 w_bar, i64 p_bar,
                                    const Item& brk, i64 z) {
    const i64 sign = right ? 1 : -1;
    const i128 lhs = i128(p_bar + sign * it.p - z - 1) * brk.w +
                     i128(c - w_bar - sign * it.w) * brk.p;
    return lhs < 0;
  }

  // dantzig: the LP bound of the level; z reaching it is optimal.
  Status expand_core(const std::vector<Item>& items, i64 c, int b, i64 w_bar, i64 p_bar,
                     i128 dantzig, i64& z, bool& have_solution, Incumbent& best,
                     std::vector<int>& toggled) {
    const int m = int(items.size());
    const Item& brk = items[b];
    break_item_ = brk;
    right_mask_ = 0;
    cur_.assign_one(State{w_bar, p_bar, 0});
    int s = b, t = b - 1;  // the core is s..t
    i64 bounded_at = kNoTarget;
    cardinality_ = CardinalityBound();
    // every item as efficient as every other (subset-sum data): block pairing pays off there
    // (elsewhere, measured, it cost more than it found)
    const bool one_efficiency =
        i128(items.front().p) * items.back().w == i128(items.back().p) * items.front().w;
    // p_j - w_j the same for every item (strongly and inverse strongly correlated data): the
    // surrogate relaxation is a subset-sum problem that bounds no better (try_surrogate)
    bool constant_offset = !one_efficiency;
    for (int j = 1; j < m && constant_offset; ++j)
      constant_offset = items[j].p - items[j].w == items[0].p - items[0].w;
    // the first item from j on (rightwards / leftwards) not fixed by Dembo-Hammer; the items
    // passed are fixed at their break-solution values for every solution better than z. z only
    // grows, so an item once fixed stays fixed: items t + 1 .. fixed_right - 1 (and s - 1 down to
    // fixed_left + 1) are known fixed and not tested again (j is always t + 1, resp. s - 1).
    int fixed_right = t + 1, fixed_left = s - 1;
    auto free_right = [&](int j) {
      j = std::max(j, fixed_right);
      while (j < m && fixed_by_dembo_hammer(items[j], true, c, w_bar, p_bar, brk, z)) ++j;
      fixed_right = j;
      return j;
    };
    auto free_left = [&](int j) {
      j = std::min(j, fixed_left);
      while (j >= 0 && fixed_by_dembo_hammer(items[j], false, c, w_bar, p_bar, brk, z)) --j;
      fixed_left = j;
      return j;
    };
    // pairing costs about m operations (times a logarithm), the cardinality bound some dozen
    // passes over the items, a surrogate problem a solve: each runs again only once the core
    // steps since its last run have handled states in proportion to its cost (m for pairing,
    // the measured cost for the others), so that they never cost much more than the core itself
    // (the first runs at once)
    const u64 pairing_work = kPairingWorkPerItem * u64(m);
    u64 paired_at = work_ - pairing_work, bound_at_work = work_, bound_cost = 0;
    u64 surrogate_at = 0, surrogate_cost = 0;
    SurrogateMemo surrogate;
    u64 swapped_at = 0, swap_cost = 0;
    while (true) {
      bool progressed = false;
      const int r = free_right(t + 1);
      t = std::min(r, m - 1);
      if (r < m) {
        add_to_core(items, c, t, true, free_right(t + 1), free_left(s - 1), z, have_solution, best,
                    toggled);
        progressed = true;
      }
      if (!cur_.empty()) {
        const int l = free_left(s - 1);
        s = std::max(l, 0);
        if (l >= 0) {
          add_to_core(items, c, s, false, free_right(t + 1), free_left(s - 1), z, have_solution,
                      best, toggled);
          progressed = true;
        }
      }
      // z at the LP bound (subset-sum data: the capacity, filled) is optimal: stop before the
      // bounds below are computed for nothing
      if (cur_.empty() || !progressed || z >= dantzig) break;
      if (deadline_->passed()) return kTimeLimit;
      if (cur_.size() > kMaxStates) return kStateLimit;
      if (cur_.size() > kPairingStates && work_ - paired_at >= pairing_work) {
        paired_at = work_;
        pair_outside(items, c, s, t, z, have_solution, best, toggled);
        if (one_efficiency) pair_block(items, c, s, t, z, have_solution, best, toggled);
        if (z >= dantzig) break;
      }
      // swap pairing for exact fills where the surrogate relaxation is no use (profits a
      // constant apart from the weights), once the cardinality bound has failed to prove z (on
      // small R it proves z without it: measured, swaps first were 1.2-1.7 times slower there),
      // amortised as the others; z at the cardinality bound is optimal
      if (constant_offset && cardinality_.ready() && cur_.size() > kPairingStates &&
          work_ - swapped_at >= swap_cost) {
        swapped_at = work_;
        const i64 before_swaps = z;
        swap_cost = fill_by_swaps(items, c, s, t, w_bar, p_bar, z, have_solution, best, toggled);
        if (z > before_swaps && cardinality_.bound(z + 1) <= z) break;
      }
      // (on subset-sum data the cardinality bound is the capacity, as the LP bound, except in
      // rare cases; measured, it cost more than it saved)
      if (!one_efficiency && cur_.size() > kCardinalityStates && bounded_at != z &&
          (work_ - bound_at_work) * kBoundCostDivisor >= bound_cost) {
        bounded_at = z;
        bound_at_work = work_;
        if (!cardinality_.ready()) cardinality_.prepare(items, c);
        const u64 before = cardinality_.work();
        if (cardinality_.bound(z + 1) <= z) break;  // no solution is worth z + 1
        bound_cost = cardinality_.work() - before;
        // the bound's multiplier on every state: states that cannot beat z dropped (gated by
        // the share dropped last time, measured: no faster at R = 10^3, slower at R = 10^6)
        if (toggled.size() <= size_t(kVectorBits)) {
          reduce_by_cardinality(items, c, s, t, b, w_bar, p_bar, z);
          if (cur_.empty()) break;
        }

        // a surrogate problem costs a solve of its own: another one only once the core has done
        // as much work as the last one took
        if (cur_.size() > kSurrogateStates && depth_ < kSurrogateDepth &&
            work_ - surrogate_at >= surrogate_cost) {
          bool proved = false;
          const u64 before = work_;
          const Status status =
              try_surrogate(items, c, z, have_solution, best, surrogate, proved);
          if (status != kOptimal) return status;
          if (proved || z >= surrogate.bound) break;
          surrogate_cost = work_ - before;
          surrogate_at = work_;
        }
      }
    }
    return kOptimal;
  }

  // Item j enters the core: every state with it toggled (added on the right, removed on the
  // left) merged with the states as they are; dominated states and states whose bound cannot
  // reach z + 1 dropped.
  void add_to_core(const std::vector<Item>& items, i64 c, int j, bool right, int next_right,
                   int next_left, i64& z, bool& have_solution, Incumbent& best,
                   std::vector<int>& toggled) {
    const int m = int(items.size());
    const i64 dw = right ? items[j].w : -items[j].w, dp = right ? items[j].p : -items[j].p;
    const size_t n = cur_.size();
    // the best new solution: the heaviest state that still fits with the toggle
    {
      const long h = heaviest_within(c - dw);
      if (h >= 0 && cur_[h].p + dp > z) {
        z = cur_[h].p + dp;
        have_solution = true;
        best = Incumbent{true, (cur_[h].vect << 1) | 1, toggled.size() + 1, {}, {}};
      }
    }
    toggled.push_back(j);
    right_mask_ = (right_mask_ << 1) | u64(right);
    work_ += n;
    // bound of a state: under the capacity + (c - w) e_{t+1}; over it - (w - c) e_{s-1}, with
    // t + 1 and s - 1 the next items not fixed
    const bool has_next = next_right < m, has_prev = next_left >= 0;
    const i64 wr = has_next ? items[next_right].w : 1, pr = has_next ? items[next_right].p : 0;
    const i64 wl = has_prev ? items[next_left].w : 1, pl = has_prev ? items[next_left].p : 0;
    const i64 need = z + 1;
    next_.reserve(2 * n);
    State* out = next_.data();
    const State* a = cur_.data();
    i64 last_p = std::numeric_limits<i64>::min();
    // written unconditionally, kept by moving `out` on: the merge's choices are data-dependent
    // and would be mispredicted half of the time as branches
    auto emit_state = [&](const State& cand) {
      bool keep;
      if (cand.w <= c)  // states are sorted by weight: this branch is predictable
        keep = i128(cand.p - need) * wr + i128(c - cand.w) * pr >= 0;
      else
        keep = has_prev && i128(cand.p - need) * wl - i128(cand.w - c) * pl >= 0;
      *out = cand;
      out += keep & (cand.p > last_p);  // else dominated by a lighter (or as heavy) state
      last_p = std::max(last_p, cand.p);
    };
    size_t i = 0, k = 0;  // a[i] as it is, a[k] toggled
    while (i < n && k < n) {
      const State kept{a[i].w, a[i].p, a[i].vect << 1};
      const State moved{a[k].w + dw, a[k].p + dp, (a[k].vect << 1) | 1};
      const bool first = kept.w < moved.w || (kept.w == moved.w && kept.p >= moved.p);
      emit_state(first ? kept : moved);
      i += first;
      k += !first;
    }
    for (; i < n; ++i) emit_state(State{a[i].w, a[i].p, a[i].vect << 1});
    for (; k < n; ++k) emit_state(State{a[k].w + dw, a[k].p + dp, (a[k].vect << 1) | 1});
    next_.set_size(out - next_.data());
    cur_.swap(next_);
  }

  // The heaviest state of weight <= room (states are sorted by weight), or -1 if none is.
  long heaviest_within(i64 room) const {
    size_t lo = 0, hi = cur_.size();  // the first state heavier than room
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (cur_[mid].w <= room)
        lo = mid + 1;
      else
        hi = mid;
    }
    return long(lo) - 1;
  }

  // State-item pairing: each item outside the core with the heaviest state it leaves room for.
  void pair_outside(const std::vector<Item>& items, i64 c, int s, int t, i64& z,
                    bool& have_solution, Incumbent& best, const std::vector<int>& toggled) {
    const int m = int(items.size());
    for (int j = 0; j < m; ++j) {
      if (j == s) j = t + 1;  // skip the core
      if (j >= m) break;
      const bool add = j > t;
      const long at = heaviest_within(add ? c - items[j].w : c + items[j].w);
      if (at < 0) continue;
      const i64 value = cur_[at].p + (add ? items[j].p : -items[j].p);
      if (value > z) {
        z = value;
        have_solution = true;
        best = Incumbent{true, cur_[at].vect, toggled.size(), {j}, {}};
      }
    }
  }

  // What the surrogate relaxations of one level have found so far.
  struct SurrogateMemo {
    bool tried = false;      // a surrogate problem was solved at this level
    bool stepped = false;    // its solution was infeasible and memo.next cuts it off
    i128 lagrangian = 0;     // the Lagrangian multiplier it started from
    i64 k = 0;               // and its cardinality
    i128 next = 0;           // the multiplier of the next surrogate problem
    i64 bound = std::numeric_limits<i64>::max();  // the least surrogate optimum: an upper bound
  };

  // State reduction by the cardinality bound: with its multiplier lambda and cardinality k (k_max
  // for lambda >= 0, k_min below), every solution x worth z + 1 has
  //   sum p x <= lambda k + sum (p - lambda) x,
  // and a solution growing from a state (weight w_s, profit p_s, n_s items) adds items right of
  // the core and removes items left of it, so its sum (p - lambda) x is at most
  //   p_s - lambda n_s - Q_left + LP(c - w_s + W_left),
  // with Q_left, W_left the profit (p - lambda) and weight of the items left of the core and LP
  // the LP relaxation over the items outside the core with profits p - lambda (a removed item
  // is one not kept); items fixed by Dembo-Hammer stay as they are and count in neither. Where
  // the Lagrangian bound is tight and the LP bound of the states is not (almost strongly
  // correlated data: the fractional item count), this drops up to 3/4 of the states. n_s
  // comes from the state's core decisions (right_mask_: those that added an item), so only while
  // the core has made at most kVectorBits decisions. The LP breakpoints are sorted once; states
  // by rising weight meet them in falling capacity, so one sweep does all states.
  void reduce_by_cardinality(const std::vector<Item>& items, i64 c, int s, int t, int b,
                             i64 w_bar, i64 p_bar, i64 z) {
    const int m = int(items.size());
    const i128 lambda = cardinality_.multiplier();
    const i64 k = cardinality_.cardinality();
    i128 q_left = 0, w_left = 0;
    lp_items_.clear();
    for (int j = 0; j < m; ++j) {
      if (j == s) j = t + 1;  // skip the core
      if (j >= m) break;
      // fixed by Dembo-Hammer: at its break-solution value in every solution worth z + 1
      if (fixed_by_dembo_hammer(items[j], j > t, c, w_bar, p_bar, break_item_, z)) continue;
      const i128 q = i128(items[j].p) - lambda;
      if (j < s) {
        q_left += q;
        w_left += items[j].w;
      }
      if (q > 0) lp_items_.push_back(LpItem{q, items[j].w});
    }
    std::sort(lp_items_.begin(), lp_items_.end(), [](const LpItem& a, const LpItem& b) {
      return a.q * b.w > b.q * a.w;  // falling efficiency (q, w < 2^63: exact in 128 bits)
    });
    const size_t n_lp = lp_items_.size();
    lp_w_.assign(1, 0);
    lp_q_.assign(1, 0);
    for (const LpItem& it : lp_items_) {
      lp_w_.push_back(lp_w_.back() + it.w);
      lp_q_.push_back(lp_q_.back() + it.q);
    }
    const i128 base = lambda * k - q_left;
    const u64 left_mask = ~right_mask_;
    size_t r = n_lp;  // items taken whole at the current capacity
    size_t kept = 0;
    for (size_t a = 0; a < cur_.size(); ++a) {
      const State& st = cur_[a];
      const i128 room = i128(c) - st.w + w_left;
      if (room < 0) continue;  // even without every item left of the core it does not fit
      while (lp_w_[r] > room) --r;  // capacity falls as the states get heavier
      i128 lp = lp_q_[r];
      if (r < n_lp) lp += (room - lp_w_[r]) * lp_items_[r].q / lp_items_[r].w;
      const i64 n_s =
          i64(b) + popcount64(st.vect & right_mask_) - popcount64(st.vect & left_mask);
      if (base + st.p - lambda * n_s + lp >= i128(z) + 1) cur_[kept++] = st;
    }
    cur_.set_size(kept);
  }

  // Swap pairing (state-item pairing with two items) for exact fills, on data whose profits are
  // a constant apart from the weights (strongly and inverse strongly correlated): a solution is
  // worth its weight plus the constant times its size, and the optimum, at the cardinality bound,
  // fills the capacity exactly with as many items as the break solution. At large R that is a few
  // exchanges inside the core plus one or two items far out, which the core reaches only with
  // some 2^(core size) states (one item far out: state-item pairing). Here every state meets
  // every pair of an item removed left of the core (or none) and one added right of it (or none),
  // both not fixed by Dembo-Hammer: the states' weights go into a hash table, and each pair looks
  // up the state it brings to weight c exactly. Up to kFillPairs pairs (the free items evenly
  // thinned). Returns its cost in state-sized steps.
  u64 fill_by_swaps(const std::vector<Item>& items, i64 c, int s, int t, i64 w_bar, i64 p_bar,
                    i64& z, bool& have_solution, Incumbent& best,
                    const std::vector<int>& toggled) {
    const int m = int(items.size());
    swap_left_.clear();
    swap_right_.clear();
    for (int j = 0; j < s; ++j)
      if (!fixed_by_dembo_hammer(items[j], false, c, w_bar, p_bar, break_item_, z))
        swap_left_.push_back(j);
    for (int j = t + 1; j < m; ++j)
      if (!fixed_by_dembo_hammer(items[j], true, c, w_bar, p_bar, break_item_, z))
        swap_right_.push_back(j);
    auto thin = [](std::vector<int>& list, size_t keep) {
      if (list.size() <= keep) return;
      std::vector<int> kept;
      for (size_t k = 0; k < keep; ++k) kept.push_back(list[k * list.size() / keep]);
      list.swap(kept);
    };
    while ((swap_left_.size() + 1) * (swap_right_.size() + 1) > kFillPairs) {
      if (swap_left_.size() >= swap_right_.size())
        thin(swap_left_, swap_left_.size() * 3 / 4);
      else
        thin(swap_right_, swap_right_.size() * 3 / 4);
    }
    size_t size = 1;
    while (size < kHashLoad * cur_.size()) size *= 2;
    hash_.assign(size, -1);
    auto slot = [size](i64 w) { return size_t((u64(w) * kHashMultiplier) >> 32) & (size - 1); };
    for (size_t a = 0; a < cur_.size(); ++a) {  // by rising weight: a later equal weight is better
      size_t at = slot(cur_[a].w);
      while (hash_[at] >= 0 && cur_[hash_[at]].w != cur_[a].w) at = (at + 1) & (size - 1);
      hash_[at] = int32_t(a);
    }
    auto find = [&](i64 w) -> long {
      for (size_t at = slot(w); hash_[at] >= 0; at = (at + 1) & (size - 1))
        if (cur_[hash_[at]].w == w) return hash_[at];
      return -1;
    };
    i64 best_value = z;
    long best_state = -1;
    int best_removed = -1, best_added = -1;
    for (int k = -1; k < int(swap_left_.size()); ++k) {
      const int i = k < 0 ? -1 : swap_left_[k];
      const i64 w_out = i < 0 ? 0 : items[i].w, p_out = i < 0 ? 0 : items[i].p;
      for (int h = -1; h < int(swap_right_.size()); ++h) {
        const int j = h < 0 ? -1 : swap_right_[h];
        const i64 w_in = j < 0 ? 0 : items[j].w, p_in = j < 0 ? 0 : items[j].p;
        const long a = find(c - w_in + w_out);
        if (a < 0) continue;
        const i64 value = cur_[a].p + p_in - p_out;
        if (value > best_value) {
          best_value = value;
          best_state = a;
          best_removed = i;
          best_added = j;
        }
      }
    }
    if (best_state >= 0) {
      z = best_value;
      have_solution = true;
      best = Incumbent{true, cur_[best_state].vect, toggled.size(), {}, {}};
      if (best_removed >= 0) best.extra.push_back(best_removed);
      if (best_added >= 0) best.extra.push_back(best_added);
    }
    return u64(cur_.size() + (swap_left_.size() + 1) * (swap_right_.size() + 1)) /
           kFillCostDivisor;
  }

  // Surrogate relaxation of the cardinality constraint (combo): with the multiplier lambda of the
  // Lagrangian bound, every solution worth z + 1 satisfies
  //   sum (w_j + lambda) x_j <= c + lambda k   (k = k_max for lambda >= 0, k_min for lambda < 0),
  // a knapsack of its own (on strongly correlated data with lambda = the profit offset, a
  // subset-sum problem), solved exactly by a nested solver. Its optimum bounds the problem; a
  // solution of it that also fits c is optimal. proved: z is now optimal.
  Status try_surrogate(const std::vector<Item>& items, i64 c, i64& z, bool& have_solution,
                       Incumbent& best, SurrogateMemo& memo, bool& proved) {
    const int m = int(items.size());
    const i128 lagrangian = cardinality_.multiplier();
    const i64 k = cardinality_.cardinality();
    if (memo.tried && memo.lagrangian == lagrangian && memo.k == k && !memo.stepped)
      return kOptimal;  // the same problem again: the same infeasible solution, no new bound
    // from the Lagrangian multiplier, or stepped towards 0 past the last infeasible solution
    const i128 lambda = memo.tried && memo.lagrangian == lagrangian && memo.k == k
                            ? memo.next
                            : lagrangian;
    memo.tried = true;
    memo.lagrangian = lagrangian;
    memo.k = k;
    memo.stepped = false;
    i128 capacity = i128(c) + lambda * k;
    i64 base = 0;  // items of weight w + lambda < 0 are always in the relaxation's optimum
    std::vector<i64> w(m), p(m);
    std::vector<char> forced(m, 0);
    for (int j = 0; j < m; ++j) {
      const i128 weight = i128(items[j].w) + lambda;
      if (weight < 0) {
        forced[j] = 1;
        capacity -= weight;
        base += items[j].p;
        w[j] = 0;
        p[j] = 0;  // out of the nested problem
      } else {
        if (weight >= kMaxSum) return kOptimal;  // out of exact range: no surrogate
        w[j] = i64(weight);
        p[j] = items[j].p;
      }
    }
    if (capacity < 0 || capacity >= kMaxSum) return kOptimal;
    // a relaxation with p_j = w_j + lambda throughout is a subset-sum problem as hard as this one
    // (strongly correlated data): its bound is the Lagrangian one, no use solving it
    bool subset_sum = true;
    for (int j = 0; j < m && subset_sum; ++j) subset_sum = forced[j] || w[j] == p[j];
    if (subset_sum) return kOptimal;
    Solver nested;
    nested.depth_ = depth_ + 1;
    std::vector<uint8_t> x(m);
    // only a surrogate solution worth more than z matters: the nested solver drops every state
    // that cannot beat z - base from the start (measured: 5-50 times fewer states on almost
    // strongly correlated data than from its own greedy solution)
    bool none_above = false;
    const Status status = nested.solve(w.data(), p.data(), m, i64(capacity), x.data(),
                                       *deadline_, z - base, &none_above);
    work_ += nested.work_;
    if (status == kTimeLimit) return kTimeLimit;
    if (status != kOptimal) return kOptimal;  // no surrogate bound
    if (none_above) {  // the relaxation, hence the problem, has nothing worth z + 1
      proved = true;
      return kOptimal;
    }
    i64 value = base, weight = 0;
    std::vector<char> take(m, 0);
    for (int j = 0; j < m; ++j) {
      if (forced[j] || x[j]) {
        take[j] = 1;
        value += items[j].p;
        weight += items[j].w;
      }
    }
    if (value <= z) {
      proved = true;
    } else if (weight <= c) {
      z = value;
      have_solution = true;
      best = Incumbent{false, 0, 0, {}, std::move(take)};
      proved = true;
    } else {
      // infeasible: it takes k' != k items and uses the slack lambda (k - k') for an excess
      // weight `over` <= lambda (k - k'). Its value bounds the problem at this multiplier; a
      // multiplier nearer 0 with |lambda'| (|k - k'|) < over cuts it off (lambda' = 0 would be
      // the problem itself), and the next surrogate problem uses it.
      memo.bound = std::min(memo.bound, value);
      const i64 count = i64(std::count(take.begin(), take.end(), char(1)));
      const i64 spread = count > k ? count - k : k - count;
      const i128 over = i128(weight) - c;
      const i128 next = spread > 0 ? (over - 1) / spread : 0;  // |lambda'| < over / spread
      // only a step of 1 % or more: smaller ones (R >= 10^4) barely change the relaxation,
      // whose next solution is again infeasible, at the cost of another nested solve
      const i128 magnitude = lambda < 0 ? -lambda : lambda;
      if (next > 0 && (magnitude - next) * kSurrogateStepShare >= magnitude) {
        memo.next = lambda < 0 ? -next : next;
        memo.stepped = true;
      }
      repair(items, c, take, z, have_solution, best);
    }
    return kOptimal;
  }

  // A solution from an infeasible one (the surrogate's: nearly optimal, a little too heavy): the
  // least efficient of its items dropped until it fits, then the most efficient items left out
  // added where they fit. A better incumbent replaces z.
  void repair(const std::vector<Item>& items, i64 c, std::vector<char>& take, i64& z,
              bool& have_solution, Incumbent& best) {
    const int m = int(items.size());  // items are in falling efficiency
    i64 weight = 0, value = 0;
    for (int j = 0; j < m; ++j) {
      if (take[j]) {
        weight += items[j].w;
        value += items[j].p;
      }
    }
    for (int j = m - 1; j >= 0 && weight > c; --j) {
      if (take[j]) {
        take[j] = 0;
        weight -= items[j].w;
        value -= items[j].p;
      }
    }
    for (int j = 0; j < m; ++j) {
      if (!take[j] && items[j].w <= c - weight) {
        take[j] = 1;
        weight += items[j].w;
        value += items[j].p;
      }
    }
    if (value > z) {
      z = value;
      have_solution = true;
      best = Incumbent{false, 0, 0, {}, std::move(take)};
    }
  }

  // Block pairing (two lists, as Horowitz and Sahni for subset sum): the states of the items next
  // to the core (up to kBlockItems, as many states as the core has) combined with the core's
  // states, each core state with the best block state it leaves room for, in one sweep.
  void pair_block(const std::vector<Item>& items, i64 c, int s, int t, i64& z, bool& have_solution,
                  Incumbent& best, const std::vector<int>& toggled) {
    const int m = int(items.size());
    block_items_.clear();
    for (int h = 1; int(block_items_.size()) < kBlockItems && (t + h < m || s - h >= 0); ++h) {
      if (t + h < m) block_items_.push_back(t + h);
      if (s - h >= 0 && int(block_items_.size()) < kBlockItems) block_items_.push_back(s - h);
    }
    block_.assign(1, State{0, 0, 0});
    size_t used = 0;  // block items in block_ (bit k: block_items_[k])
    for (; used < block_items_.size() && block_.size() < cur_.size(); ++used) {
      const int j = block_items_[used];
      const bool add = j > t;
      const i64 dw = add ? items[j].w : -items[j].w, dp = add ? items[j].p : -items[j].p;
      const size_t n = block_.size();
      block_next_.clear();
      size_t i = 0, k = 0;
      i64 last_p = std::numeric_limits<i64>::min();
      while (i < n || k < n) {
        State cand;
        const State& a = block_[i < n ? i : 0];
        const State& b = block_[k < n ? k : 0];
        if (k >= n || (i < n && (a.w < b.w + dw || (a.w == b.w + dw && a.p >= b.p + dp)))) {
          cand = a;
          ++i;
        } else {
          cand = State{b.w + dw, b.p + dp, b.vect | (u64(1) << used)};
          ++k;
        }
        if (cand.p <= last_p) continue;
        last_p = cand.p;
        block_next_.push_back(cand);
      }
      std::swap(block_, block_next_);
    }
    // sweep: core states by rising weight, block states by falling weight
    long at = long(block_.size()) - 1;
    i64 best_value = z;
    long best_state = -1, best_block = -1;
    for (size_t i = 0; i < cur_.size(); ++i) {
      while (at >= 0 && cur_[i].w + block_[at].w > c) --at;
      if (at < 0) break;
      const i64 value = cur_[i].p + block_[at].p;
      if (value > best_value) {
        best_value = value;
        best_state = long(i);
        best_block = at;
      }
    }
    if (best_state < 0) return;
    z = best_value;
    have_solution = true;
    best = Incumbent{true, cur_[best_state].vect, toggled.size(), {}, {}};
    for (size_t k = 0; k < used; ++k)
      if ((block_[best_block].vect >> k) & 1) best.extra.push_back(block_items_[k]);
  }

  // The solution of the incumbent, into `taken`; decisions older than the 64 a state keeps are
  // recovered by solving the knapsack of their items with the value they must reach.
  Status emit(const std::vector<Item>& items, i64 c, int b, i64 z, const std::vector<char>& greedy,
              const Incumbent& best, const std::vector<int>& toggled,
              std::vector<int32_t>& taken) {
    const int m = int(items.size());
    std::vector<char> take(m, 0);
    std::vector<char> unknown(m, 0);
    if (!best.from_state) {
      take = best.full.empty() ? greedy : best.full;
    } else {
      for (int j = 0; j < b; ++j) take[j] = 1;
      for (int j : best.extra) take[j] ^= 1;
      const size_t known = std::min<size_t>(best.decisions, kVectorBits);
      for (size_t k = 0; k < known; ++k)
        if ((best.vect >> k) & 1) take[toggled[best.decisions - 1 - k]] ^= 1;
      for (size_t k = 0; k + known < best.decisions; ++k) unknown[toggled[k]] = 1;
    }
    i64 weight = 0, profit = 0;
    std::vector<Item> rest;
    for (int j = 0; j < m; ++j) {
      if (unknown[j]) {
        rest.push_back(items[j]);
      } else if (take[j]) {
        weight += items[j].w;
        profit += items[j].p;
        taken.push_back(items[j].index);
      }
    }
    if (!rest.empty()) {
      std::vector<int32_t> sub;
      i64 sub_value = 0;
      bool found = true;
      const Status status =
          solve_level(std::move(rest), c - weight, z - profit, kNoTarget, sub, sub_value, found);
      if (status != kOptimal) return status;
      for (int32_t index : sub) taken.push_back(index);
      profit += sub_value;  // the sub-level checked its weight against c - weight
    }
    if (weight > c || profit != z) return kInternalError;
    return kOptimal;
  }

  const Deadline* deadline_ = nullptr;
  int depth_ = 0;  // surrogate problems this solver is nested in
  u64 work_ = 0;   // states handled by add_to_core so far (nested solvers' included)
  StateList cur_, next_;
  std::vector<int32_t> bundle_members_, bundle_start_;  // bundle_identical
  std::vector<int32_t> hash_;                           // count_kinds
  std::vector<State> block_, block_next_;
  std::vector<int> swap_left_, swap_right_;
  struct LpItem {
    i128 q;  // profit - lambda > 0
    i64 w;
  };
  std::vector<LpItem> lp_items_;      // reduce_by_cardinality
  std::vector<i128> lp_w_, lp_q_;     // ... their prefix sums
  u64 right_mask_ = 0;  // bit k: the k-th most recent core decision added an item (right)
  Item break_item_{0, 0, 0};  // the break item of the level in expand_core (Dembo-Hammer)
  std::vector<int> block_items_;
  CardinalityBound cardinality_;
};

}  // namespace knapsack
}  // namespace ldf_ip
