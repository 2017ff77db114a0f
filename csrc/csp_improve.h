// The local improvement of a CSP class schedule (csp_ldf.improve, issue 23), move for move as the
// Python of csp_ldf.py does it, at compiled speed. Python stays the readable definition; this file
// follows it function by function (their names are given), so that both make the same moves and
// end at the same schedule. The op around it is csrc/csp_improve.cpp, its Python side csrc/csp.py.
//
// A schedule is one start column per class (-1: a once-off class left out). A column covers one
// run of slots on one day (a once-off class) or one run a week (a recurring class); the rooms of
// its class's size in use on those slots must stay within the room count; a class starts on a
// later day than each of its predecessors, within its static day window.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <queue>
#include <vector>

namespace csp {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kNoDay = -1;
constexpr int64_t kFarDay = 1000000000;  // after every day (csp_ldf: initial=10**9)

// csp_ldf.schedule_space, as flat arrays (pointers into the op's tensors, read only).
struct Space {
  int64_t n = 0, n_rec = 0, T = 0, days = 0, n_columns = 0, n_runs = 0;
  const int64_t* col_class = nullptr;  // (columns,)
  const int64_t* col_day = nullptr;    // (columns,)
  const int64_t* col_dur = nullptr;    // (columns,)
  const int64_t* col_runs = nullptr;   // (columns, n_runs): first slot of each run, T: none
  const int64_t* class_ptr = nullptr;  // (n + 1,): class a's columns: class_cols[ptr[a]:ptr[a+1]]
  const int64_t* class_cols = nullptr;
  const int64_t* prec_ptr = nullptr;  // predecessors, CSR
  const int64_t* prec = nullptr;
  const int64_t* succ_ptr = nullptr;  // successors, CSR
  const int64_t* succ = nullptr;
  const int64_t* size = nullptr;   // (n,): 0 small rooms, 1 large
  const int64_t* lo = nullptr;     // (n,): static day window (day_windows)
  const int64_t* hi = nullptr;     // (n,)
  const int64_t* order = nullptr;  // (n,): precedence order, recurring classes first
  const int64_t* rank = nullptr;   // (n,): position in order
  const double* need = nullptr;    // (n,): rooms the class takes
  double room_cap[2] = {0.0, 0.0};

  // Derived by index(): whether each class's columns run in order of day (then a day window is
  // one range of them), and over the columns' positions in class_cols, the first slot of any run
  // from there on (suffix minimum) and the end of any run up to there (prefix maximum): the slots
  // whose rooms a range of columns reads.
  std::vector<char> by_day;
  std::vector<int64_t> slots_from, slots_to;

  int64_t first(int64_t a) const { return class_ptr[a]; }
  int64_t count(int64_t a) const { return class_ptr[a + 1] - class_ptr[a]; }

  void index() {
    by_day.assign(n, 1);
    slots_from.assign(class_ptr[n], T);
    slots_to.assign(class_ptr[n], 0);
    for (int64_t a = 0; a < n; ++a) {
      int64_t from = T, to = 0;
      for (int64_t i = class_ptr[a + 1] - 1; i >= class_ptr[a]; --i) {
        const int64_t k = class_cols[i];
        for (int64_t r = 0; r < n_runs; ++r) from = std::min(from, col_runs[k * n_runs + r]);
        slots_from[i] = from;
        if (i > class_ptr[a] && col_day[class_cols[i - 1]] > col_day[k]) by_day[a] = 0;
      }
      for (int64_t i = class_ptr[a]; i < class_ptr[a + 1]; ++i) {
        const int64_t k = class_cols[i];
        for (int64_t r = 0; r < n_runs; ++r) {
          const int64_t run = col_runs[k * n_runs + r];
          if (run < T) to = std::max(to, std::min(run + col_dur[k], T));
        }
        slots_to[i] = to;
      }
    }
  }
};

// csp_ldf's constants of the improvement.
struct Settings {
  double eps = 1e-6;             // IMPROVE_EPS
  int64_t ejection_targets = 16;  // EJECTION_TARGETS
  int64_t chain_limit = 5;       // CHAIN_LIMIT
  int64_t max_passes = 50;       // MAX_PASSES
  double cents = 100.0;          // CENTS
  int64_t cut_infinite = int64_t{1} << 30;  // CUT_INFINITE
  int64_t no_column = (int64_t{1} << 30) / 4;  // NO_COLUMN
};

// Dinic's maximum flow on a small graph, then the nodes the source reaches in the residual graph
// (the source side of the minimum cut that holds the fewest nodes: the same for every maximum
// flow, so the same as scipy's maximum_flow + breadth_first_order in csp_ldf).
class MaxFlow {
 public:
  void reset(int64_t n_nodes) {
    head_.assign(n_nodes, -1);
    to_.clear();
    next_.clear();
    left_.clear();
  }
  void edge(int64_t u, int64_t v, int64_t capacity) {
    add(u, v, capacity);
    add(v, u, 0);
  }
  void run(int64_t source, int64_t sink) {
    while (levels(source, sink)) {
      cursor_.assign(head_.begin(), head_.end());
      while (push(source, sink, std::numeric_limits<int64_t>::max()) > 0) {
      }
    }
  }
  // after run(): whether each node is on the source side
  std::vector<char> reached(int64_t source) {
    std::vector<char> seen(head_.size(), 0);
    std::vector<int64_t> todo{source};
    seen[source] = 1;
    while (!todo.empty()) {
      const int64_t u = todo.back();
      todo.pop_back();
      for (int64_t e = head_[u]; e >= 0; e = next_[e]) {
        if (left_[e] > 0 && !seen[to_[e]]) {
          seen[to_[e]] = 1;
          todo.push_back(to_[e]);
        }
      }
    }
    return seen;
  }

 private:
  void add(int64_t u, int64_t v, int64_t capacity) {
    to_.push_back(v);
    left_.push_back(capacity);
    next_.push_back(head_[u]);
    head_[u] = static_cast<int64_t>(to_.size()) - 1;
  }
  bool levels(int64_t source, int64_t sink) {
    level_.assign(head_.size(), -1);
    std::queue<int64_t> todo;
    level_[source] = 0;
    todo.push(source);
    while (!todo.empty()) {
      const int64_t u = todo.front();
      todo.pop();
      for (int64_t e = head_[u]; e >= 0; e = next_[e]) {
        if (left_[e] > 0 && level_[to_[e]] < 0) {
          level_[to_[e]] = level_[u] + 1;
          todo.push(to_[e]);
        }
      }
    }
    return level_[sink] >= 0;
  }
  int64_t push(int64_t u, int64_t sink, int64_t limit) {
    if (u == sink) return limit;
    for (int64_t& e = cursor_[u]; e >= 0; e = next_[e]) {
      const int64_t v = to_[e];
      if (left_[e] > 0 && level_[v] == level_[u] + 1) {
        const int64_t pushed = push(v, sink, std::min(limit, left_[e]));
        if (pushed > 0) {
          left_[e] -= pushed;
          left_[e ^ 1] += pushed;
          return pushed;
        }
      }
    }
    return 0;
  }
  std::vector<int64_t> head_, to_, next_, left_, level_, cursor_;
};

// csp_ldf.ClassSchedule and the moves of csp_ldf.improve on it, for one scenario's column costs.
class Improver {
 public:
  Improver(const Space& space, const Settings& settings, const double* cost)
      : s_(space), cfg_(settings), cost_(cost) {
    chosen_.assign(s_.n, -1);
    day_.assign(s_.n, kNoDay);
    use_.assign(2 * s_.T, 0.0);
    count_.assign(s_.T + 1, 0);
  }

  const std::vector<int64_t>& chosen() const { return chosen_; }

  // ---------------------------------------------------------------- ClassSchedule
  void put(int64_t a, int64_t k) {
    add_rooms(a, k, s_.need[a]);
    chosen_[a] = k;
    day_[a] = s_.col_day[k];
  }

  int64_t take(int64_t a) {
    const int64_t k = chosen_[a];
    if (k >= 0) add_rooms(a, k, -s_.need[a]);
    chosen_[a] = -1;
    day_[a] = kNoDay;
    return k;
  }

  // ClassSchedule.window: false where class a cannot be scheduled now
  bool window(int64_t a, int64_t* lo, int64_t* hi) const {
    int64_t latest_predecessor = -1;
    for (int64_t i = s_.prec_ptr[a]; i < s_.prec_ptr[a + 1]; ++i) {
      const int64_t d = day_[s_.prec[i]];
      if (d < 0) return false;  // a once-off class whose predecessor is unscheduled
      latest_predecessor = std::max(latest_predecessor, d);
    }
    int64_t earliest_successor = kFarDay;
    for (int64_t i = s_.succ_ptr[a]; i < s_.succ_ptr[a + 1]; ++i) {
      const int64_t d = day_[s_.succ[i]];
      if (d >= 0) earliest_successor = std::min(earliest_successor, d);
    }
    *lo = std::max(s_.lo[a], latest_predecessor + 1);
    *hi = std::min(s_.hi[a], earliest_successor - 1);
    return true;
  }

  // ClassSchedule.feasible: ok[j] for class a's j-th column (a taken out by the caller)
  // (only the columns inside the day window are looked at where the class's columns run in order
  // of day, and only the slots those columns cover)
  void feasible(int64_t a, bool rooms, bool precedence, std::vector<char>* ok) {
    const int64_t m = s_.count(a);
    ok->assign(m, 0);
    int64_t lo = 0, hi = s_.days;
    if (precedence && !window(a, &lo, &hi)) return;
    const int64_t* cols = s_.class_cols + s_.first(a);
    int64_t j0 = 0, j1 = m;
    if (s_.by_day[a]) {
      const auto day_of = [&](int64_t k, int64_t d) { return s_.col_day[k] < d; };
      j0 = std::lower_bound(cols, cols + m, lo, day_of) - cols;
      j1 = std::lower_bound(cols + j0, cols + m, hi + 1, day_of) - cols;
    }
    if (j0 >= j1) return;
    if (rooms) {
      blocked_counts(a, s_.slots_from[s_.first(a) + j0], s_.slots_to[s_.first(a) + j1 - 1]);
    }
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t k = cols[j];
      const int64_t d = s_.col_day[k];
      if (d < lo || d > hi) continue;
      (*ok)[j] = !rooms || !room_blocked(k);
    }
  }

  bool droppable(int64_t a) const {
    if (a < s_.n_rec) return false;
    for (int64_t i = s_.succ_ptr[a]; i < s_.succ_ptr[a + 1]; ++i) {
      if (day_[s_.succ[i]] >= 0) return false;
    }
    return true;
  }

  // ---------------------------------------------------------------- best_column
  // class a's cheapest feasible column and its cost (see csp_ldf.best_column); a taken out
  std::pair<int64_t, double> best_column(int64_t a) {
    feasible(a, true, true, &ok_);
    int64_t best = -1;
    double best_cost = (a < s_.n_rec || !droppable(a)) ? kInf : 0.0;
    const int64_t j = cheapest(a, ok_);
    if (j >= 0) {
      const int64_t k = s_.class_cols[s_.first(a) + j];
      if (cost_[k] < best_cost) {
        best = k;
        best_cost = cost_[k];
      }
    }
    return {best, best_cost};
  }

  // ---------------------------------------------------------------- place_once_off_exactly
  double place_once_off_exactly() {
    const int64_t D = s_.days;
    std::vector<int64_t> oneoff;
    for (int64_t i = 0; i < s_.n; ++i) {
      if (s_.order[i] >= s_.n_rec) oneoff.push_back(s_.order[i]);
    }
    for (int64_t a : oneoff) take(a);
    const int64_t n_once = static_cast<int64_t>(oneoff.size());
    std::vector<double> per_day(n_once * D, kInf);
    double lowest = 0.0;  // (np.min over the finite day costs, initial=0.0)
    for (int64_t i = 0; i < n_once; ++i) {
      const int64_t a = oneoff[i];
      feasible(a, true, false, &ok_);  // _day_costs: rooms only
      const int64_t* cols = s_.class_cols + s_.first(a);
      for (int64_t j = 0; j < s_.count(a); ++j) {
        if (!ok_[j]) continue;
        double& cell = per_day[i * D + s_.col_day[cols[j]]];
        cell = std::min(cell, cost_[cols[j]]);
      }
      for (int64_t d = 0; d < D; ++d) {
        if (std::isfinite(per_day[i * D + d])) lowest = std::min(lowest, per_day[i * D + d]);
      }
    }
    const double offset = std::max(0.0, -lowest) + 1.0;
    std::vector<int64_t> node(s_.n, -1);  // node of (a, d) = node[a] + d - 1
    for (int64_t i = 0; i < n_once; ++i) node[oneoff[i]] = 1 + i * D;
    const int64_t source = 0, sink = 1 + n_once * D;
    flow_.reset(sink + 1);
    for (int64_t i = 0; i < n_once; ++i) {
      const int64_t a = oneoff[i];
      const bool has_predecessor = s_.prec_ptr[a + 1] > s_.prec_ptr[a];
      for (int64_t d = 0; d <= D; ++d) {  // chain[d] -> chain[d + 1]
        const int64_t tail = d == 0 ? source : node[a] + d - 1;
        const int64_t head = d == D ? sink : node[a] + d;
        int64_t capacity;
        if (d == 0 && has_predecessor) {
          capacity = cfg_.cut_infinite;
        } else {
          const double value = d < D ? per_day[i * D + d] : 0.0;
          capacity = std::isfinite(value)
                         ? static_cast<int64_t>(std::nearbyint((value + offset) * cfg_.cents))
                         : cfg_.no_column;
        }
        flow_.edge(tail, head, capacity);
        if (0 < d && d < D) flow_.edge(head, tail, cfg_.cut_infinite);
      }
      for (int64_t p = s_.prec_ptr[a]; p < s_.prec_ptr[a + 1]; ++p) {
        const int64_t before = s_.prec[p];
        for (int64_t d = 1; d <= D; ++d) {  // x_p >= d  =>  x_a >= min(d + 1, D)
          flow_.edge(node[before] + d - 1, node[a] + std::min(d + 1, D) - 1, cfg_.cut_infinite);
        }
      }
    }
    flow_.run(source, sink);
    const std::vector<char> reached = flow_.reached(source);
    double total = 0.0;
    for (int64_t a : oneoff) {
      int64_t day = 0;
      for (int64_t d = 0; d < D; ++d) day += reached[node[a] + d];
      if (day == D) continue;
      feasible(a, true, true, &ok_);
      const int64_t* cols = s_.class_cols + s_.first(a);
      int64_t k = -1;
      double k_cost = kInf;
      for (int64_t j = 0; j < s_.count(a); ++j) {
        if (ok_[j] && s_.col_day[cols[j]] == day && (k < 0 || cost_[cols[j]] < k_cost)) {
          k = cols[j];
          k_cost = cost_[k];
        }
      }
      if (k < 0) k = best_column(a).first;  // the day is full: its cheapest feasible column
      if (k >= 0) {
        put(a, k);
        total += cost_[k];
      }
    }
    return total;
  }

  // ---------------------------------------------------------------- the moves
  bool move_one(int64_t a) {
    const int64_t old = take(a);
    const double old_cost = old >= 0 ? cost_[old] : 0.0;
    const auto [k, new_cost] = best_column(a);
    if (new_cost < old_cost - cfg_.eps) {
      if (k >= 0) put(a, k);
      return true;
    }
    if (old >= 0) put(a, old);
    return false;
  }

  bool place_once_off() {
    std::vector<int64_t> oneoff;
    for (int64_t a = s_.n_rec; a < s_.n; ++a) oneoff.push_back(a);
    return attempt(oneoff, [&] { return place_once_off_exactly(); });
  }

  bool shift_chain(int64_t a, const std::vector<double>& floor) {
    std::vector<int64_t> chain{a};
    const std::vector<int64_t> descendants = this->descendants(a);
    chain.insert(chain.end(), descendants.begin(), descendants.end());
    double now = 0.0;
    for (int64_t b : chain) {
      if (chosen_[b] >= 0) now += cost_[chosen_[b]];
    }
    const int64_t* cols = s_.class_cols + s_.first(a);
    const int64_t m = s_.count(a);
    int64_t last_day = 0;
    for (int64_t j = 0; j < m; ++j) last_day = std::max(last_day, s_.col_day[cols[j]]);
    std::vector<double> cheapest_per_day(last_day + 1, kInf);
    for (int64_t j = 0; j < m; ++j) {
      double& cell = cheapest_per_day[s_.col_day[cols[j]]];
      cell = std::min(cell, cost_[cols[j]]);
    }
    double descendants_floor = 0.0;
    for (int64_t b : descendants) descendants_floor += floor[b];
    if (day_[a] >= 0 && day_[a] <= last_day) cheapest_per_day[day_[a]] = kInf;
    std::vector<int64_t> rest(chain.begin() + 1, chain.end());
    bool first = true;
    for (int64_t d = 0; d <= last_day; ++d) {
      if (!(cheapest_per_day[d] + descendants_floor < now - cfg_.eps)) continue;
      if (!first && seconds_now() > deadline_) return false;  // (a long move stops in time)
      first = false;
      const bool kept = attempt(chain, [&] {
        feasible(a, true, true, &ok_);
        int64_t k = -1;
        for (int64_t j = 0; j < m; ++j) {
          if (ok_[j] && s_.col_day[cols[j]] == d && (k < 0 || cost_[cols[j]] < cost_[k])) {
            k = cols[j];
          }
        }
        if (k < 0) return kInf;
        put(a, k);
        return cost_[k] + reinsert(rest);
      });
      if (kept) return true;
    }
    return false;
  }

  bool eject(int64_t a) {
    const int64_t old = chosen_[a];
    if (old < 0) return false;
    const double old_cost = cost_[old];
    take(a);
    feasible(a, false, true, &precedence_ok_);
    feasible(a, true, true, &ok_);
    put(a, old);
    const int64_t* cols = s_.class_cols + s_.first(a);
    std::vector<int64_t> blocked;
    for (int64_t j = 0; j < s_.count(a); ++j) {
      if (precedence_ok_[j] && !ok_[j] && cost_[cols[j]] < old_cost - cfg_.eps) {
        blocked.push_back(j);
      }
    }
    std::stable_sort(blocked.begin(), blocked.end(),
                     [&](int64_t i, int64_t j) { return cost_[cols[i]] < cost_[cols[j]]; });
    const int64_t tries = std::min<int64_t>(cfg_.ejection_targets, blocked.size());
    for (int64_t t = 0; t < tries; ++t) {
      if (t > 0 && seconds_now() > deadline_) return false;  // (a long move stops in time)
      const int64_t j = blocked[t];
      const int64_t k = cols[j];
      const std::vector<int64_t> in_way = this->in_way(a, k);
      std::vector<int64_t> taken{a};
      taken.insert(taken.end(), in_way.begin(), in_way.end());
      const bool kept = attempt(taken, [&] {
        feasible(a, true, true, &ok_);
        if (!ok_[j]) return kInf;
        put(a, k);
        return cost_[k] + reinsert(in_way);
      });
      if (kept) return true;
    }
    return false;
  }

  // ---------------------------------------------------------------- improve
  // the moves' kinds, in the order improve() tries them (cheap moves first)
  enum Move { kMoveOne = 0, kPlaceOnceOff = 1, kShiftChain = 2, kEject = 3, kMoves = 4 };

  // csp_ldf.improve from `start`: -> passes. longest[kMoves]: the longest move of each kind so far
  // (seconds), read and updated; deadline: steady_clock seconds (inf: none), which also ends an
  // ejection or a chain shift between two of its tries.
  int64_t improve(const int64_t* start, double deadline, double* longest) {
    deadline_ = deadline;
    for (int64_t a = 0; a < s_.n; ++a) {
      if (start[a] >= 0) put(a, start[a]);
    }
    std::vector<double> floor(s_.n);
    for (int64_t a = 0; a < s_.n; ++a) {
      double lowest = kInf;
      for (int64_t j = 0; j < s_.count(a); ++j) {
        lowest = std::min(lowest, cost_[s_.class_cols[s_.first(a) + j]]);
      }
      floor[a] = a >= s_.n_rec ? std::min(lowest, 0.0) : lowest;
    }
    std::vector<int64_t> with_successors;
    for (int64_t i = 0; i < s_.n_rec; ++i) {
      const int64_t a = s_.order[i];
      const int64_t n_descendants = static_cast<int64_t>(descendants(a).size());
      if (0 < n_descendants && n_descendants <= cfg_.chain_limit) with_successors.push_back(a);
    }
    int64_t passes = 0;
    bool moved = true;
    while (moved && passes < cfg_.max_passes) {
      ++passes;
      moved = false;
      for (int move = 0; move < kMoves; ++move) {
        int64_t n_classes = s_.n;  // move_one and eject: every class, in precedence order
        if (move == kPlaceOnceOff) n_classes = 1;  // all once-off classes at once
        if (move == kShiftChain) n_classes = static_cast<int64_t>(with_successors.size());
        for (int64_t i = 0; i < n_classes; ++i) {
          const double before = seconds_now();
          if (before + longest[move] > deadline) return passes;
          switch (move) {
            case kMoveOne:
              moved |= move_one(s_.order[i]);
              break;
            case kPlaceOnceOff:
              moved |= place_once_off();
              break;
            case kShiftChain:
              moved |= shift_chain(with_successors[i], floor);
              break;
            default:
              moved |= eject(s_.order[i]);
          }
          longest[move] = std::max(longest[move], seconds_now() - before);
        }
      }
    }
    return passes;
  }

  static double seconds_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

 private:
  void add_rooms(int64_t a, int64_t k, double rooms) {
    double* use = use_.data() + s_.size[a] * s_.T;
    const int64_t dur = s_.col_dur[k];
    for (int64_t r = 0; r < s_.n_runs; ++r) {
      const int64_t first = s_.col_runs[k * s_.n_runs + r];
      if (first >= s_.T) continue;
      for (int64_t t = first; t < std::min(first + dur, s_.T); ++t) use[t] += rooms;
    }
  }

  // count_[t]: the slots before t where class a's rooms do not fit beside the others'
  // (over the slots from..to only: the columns looked at cover no others)
  void blocked_counts(int64_t a, int64_t from, int64_t to) {
    const double* use = use_.data() + s_.size[a] * s_.T;
    const double cap = s_.room_cap[s_.size[a]];
    const double need = s_.need[a];
    count_[from] = 0;
    for (int64_t t = from; t < to; ++t) count_[t + 1] = count_[t] + (use[t] + need > cap);
  }

  bool room_blocked(int64_t k) const {
    const int64_t dur = s_.col_dur[k];
    for (int64_t r = 0; r < s_.n_runs; ++r) {
      const int64_t first = s_.col_runs[k * s_.n_runs + r];
      if (first >= s_.T) continue;
      if (count_[std::min(first + dur, s_.T)] - count_[first] > 0) return true;
    }
    return false;
  }

  // the first of class a's columns where ok is set at the lowest cost (-1: none)
  int64_t cheapest(int64_t a, const std::vector<char>& ok) const {
    const int64_t* cols = s_.class_cols + s_.first(a);
    int64_t best = -1;
    for (int64_t j = 0; j < s_.count(a); ++j) {
      if (ok[j] && (best < 0 || cost_[cols[j]] < cost_[cols[best]])) best = j;
    }
    return best;
  }

  // _reinsert: the classes (taken out) back in precedence order at their cheapest columns
  double reinsert(std::vector<int64_t> classes) {
    std::stable_sort(classes.begin(), classes.end(),
                     [&](int64_t x, int64_t y) { return s_.rank[x] < s_.rank[y]; });
    double total = 0.0;
    for (int64_t b : classes) {
      const auto [k, c] = best_column(b);
      if (!std::isfinite(c)) return kInf;
      if (k >= 0) put(b, k);
      total += c;
    }
    return total;
  }

  // _try: take `taken` out, place() puts classes back and returns their cost; kept if cheaper
  template <class Place>
  bool attempt(const std::vector<int64_t>& taken, Place place) {
    const std::vector<int64_t> before = chosen_;
    double old_cost = 0.0;
    for (int64_t b : taken) {
      if (before[b] >= 0) old_cost += cost_[before[b]];
    }
    for (int64_t b : taken) take(b);
    const double new_cost = place();
    if (new_cost < old_cost - cfg_.eps) return true;
    for (int64_t b = 0; b < s_.n; ++b) {
      if (chosen_[b] != before[b]) take(b);
    }
    for (int64_t b = 0; b < s_.n; ++b) {
      if (chosen_[b] != before[b] && before[b] >= 0) put(b, before[b]);
    }
    return false;
  }

  // _in_way: the scheduled classes of a's room size whose runs overlap column k's
  std::vector<int64_t> in_way(int64_t a, int64_t k) const {
    std::vector<int64_t> found;
    for (int64_t b = 0; b < s_.n; ++b) {
      const int64_t c = chosen_[b];
      if (b == a || c < 0 || s_.size[b] != s_.size[a]) continue;
      bool overlap = false;
      for (int64_t r = 0; r < s_.n_runs && !overlap; ++r) {
        const int64_t theirs = s_.col_runs[c * s_.n_runs + r];
        if (theirs >= s_.T) continue;
        for (int64_t q = 0; q < s_.n_runs && !overlap; ++q) {
          const int64_t mine = s_.col_runs[k * s_.n_runs + q];
          if (mine >= s_.T) continue;
          overlap = theirs < mine + s_.col_dur[k] && mine < theirs + s_.col_dur[c];
        }
      }
      if (overlap) found.push_back(b);
    }
    return found;
  }

  // _descendants: depth first, as the Python's stack pops them
  std::vector<int64_t> descendants(int64_t a) const {
    std::vector<int64_t> found, todo(s_.succ + s_.succ_ptr[a], s_.succ + s_.succ_ptr[a + 1]);
    while (!todo.empty()) {
      const int64_t b = todo.back();
      todo.pop_back();
      if (std::find(found.begin(), found.end(), b) == found.end()) {
        found.push_back(b);
        todo.insert(todo.end(), s_.succ + s_.succ_ptr[b], s_.succ + s_.succ_ptr[b + 1]);
      }
    }
    return found;
  }

  const Space& s_;
  const Settings& cfg_;
  const double* cost_;
  double deadline_ = kInf;
  std::vector<int64_t> chosen_, day_, count_;
  std::vector<double> use_;
  std::vector<char> ok_, precedence_ok_;
  MaxFlow flow_;
};

}  // namespace csp
