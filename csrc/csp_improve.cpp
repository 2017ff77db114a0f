// ldf_ip::csp_improve: the local improvement of CSP class schedules (csp_ldf.improve) for a batch
// of scenarios, in parallel across them on ATen's intra-op threads. The moves are in
// csrc/csp_improve.h; the Python side (packing the schedule space, the checks) is csrc/csp.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>
#include <tuple>
#include <vector>

#include "csp_improve.h"

namespace ldf_ip {

// the tensors of `space`, in csrc/csp.py's SPACE_FIELDS order
enum SpaceField {
  kSizes = 0,  // (n, n_rec, T, days)
  kColClass,
  kColDay,
  kColDur,
  kColRuns,
  kClassPtr,
  kClassCols,
  kPrecPtr,
  kPrec,
  kSuccPtr,
  kSucc,
  kSize,
  kLo,
  kHi,
  kOrder,
  kRank,
  kNeed,     // float64
  kRoomCap,  // float64 (2,)
  kSpaceFields
};

// settings: float64 (7,) = IMPROVE_EPS, EJECTION_TARGETS, CHAIN_LIMIT, MAX_PASSES, CENTS,
// CUT_INFINITE, NO_COLUMN (csp_ldf's constants)
constexpr int64_t kSettings = 7;

static const int64_t* longs(at::TensorList space, int field, int64_t numel) {
  const at::Tensor& t = space[field];
  TORCH_CHECK(t.scalar_type() == at::kLong && t.is_contiguous() && t.is_cpu(),
              "csp_improve: space field ", field, " must be a contiguous int64 CPU tensor");
  TORCH_CHECK(numel < 0 || t.numel() == numel, "csp_improve: space field ", field, " holds ",
              t.numel(), " entries, expected ", numel);
  return t.data_ptr<int64_t>();
}

static const double* doubles(at::TensorList space, int field, int64_t numel) {
  const at::Tensor& t = space[field];
  TORCH_CHECK(t.scalar_type() == at::kDouble && t.is_contiguous() && t.is_cpu(),
              "csp_improve: space field ", field, " must be a contiguous float64 CPU tensor");
  TORCH_CHECK(t.numel() == numel, "csp_improve: space field ", field, " holds ", t.numel(),
              " entries, expected ", numel);
  return t.data_ptr<double>();
}

static csp::Space read_space(at::TensorList space) {
  TORCH_CHECK(static_cast<int64_t>(space.size()) == kSpaceFields, "csp_improve: space holds ",
              space.size(), " tensors, expected ", static_cast<int64_t>(kSpaceFields));
  csp::Space s;
  const int64_t* sizes = longs(space, kSizes, 4);
  s.n = sizes[0];
  s.n_rec = sizes[1];
  s.T = sizes[2];
  s.days = sizes[3];
  TORCH_CHECK(s.n > 0 && 0 <= s.n_rec && s.n_rec <= s.n && s.T > 0 && s.days > 0,
              "csp_improve: bad sizes");
  const at::Tensor& runs = space[kColRuns];
  TORCH_CHECK(runs.dim() == 2, "csp_improve: col_runs must be (columns, runs)");
  s.n_columns = runs.size(0);
  s.n_runs = runs.size(1);
  s.col_class = longs(space, kColClass, s.n_columns);
  s.col_day = longs(space, kColDay, s.n_columns);
  s.col_dur = longs(space, kColDur, s.n_columns);
  s.col_runs = longs(space, kColRuns, s.n_columns * s.n_runs);
  s.class_ptr = longs(space, kClassPtr, s.n + 1);
  s.class_cols = longs(space, kClassCols, s.class_ptr[s.n]);
  s.prec_ptr = longs(space, kPrecPtr, s.n + 1);
  s.prec = longs(space, kPrec, s.prec_ptr[s.n]);
  s.succ_ptr = longs(space, kSuccPtr, s.n + 1);
  s.succ = longs(space, kSucc, s.succ_ptr[s.n]);
  s.size = longs(space, kSize, s.n);
  s.lo = longs(space, kLo, s.n);
  s.hi = longs(space, kHi, s.n);
  s.order = longs(space, kOrder, s.n);
  s.rank = longs(space, kRank, s.n);
  s.need = doubles(space, kNeed, s.n);
  const double* room_cap = doubles(space, kRoomCap, 2);
  s.room_cap[0] = room_cap[0];
  s.room_cap[1] = room_cap[1];
  for (int64_t k = 0; k < s.n_columns; ++k) {
    TORCH_CHECK(0 <= s.col_class[k] && s.col_class[k] < s.n && 0 <= s.col_day[k] &&
                    s.col_day[k] < s.days && s.col_dur[k] > 0,
                "csp_improve: column ", k, " has a bad class, day or duration");
  }
  for (int64_t a = 0; a < s.n; ++a) {
    TORCH_CHECK(0 <= s.size[a] && s.size[a] < 2, "csp_improve: class ", a, " has a bad size");
    for (int64_t i = s.class_ptr[a]; i < s.class_ptr[a + 1]; ++i) {
      TORCH_CHECK(s.col_class[s.class_cols[i]] == a, "csp_improve: class_cols of class ", a,
                  " holds another class's column");
    }
    for (int64_t i = s.prec_ptr[a]; i < s.prec_ptr[a + 1]; ++i) {
      // the once-off min cut has a node chain for once-off classes only
      TORCH_CHECK(a < s.n_rec || s.prec[i] >= s.n_rec, "csp_improve: once-off class ", a,
                  " follows a recurring class");
    }
  }
  s.index();
  return s;
}

// space: the schedule space (csrc/csp.py); settings: float64 (7,); chosen: int64 (B, n), feasible
// start schedules (-1: a once-off class left out); cost: float64 (B, columns); seconds: the budget
// of each scenario (inf: to a local optimum); longest: float64 (4,), the longest move of each kind
// so far. Returns the improved schedules (B, n), the passes (B,) and the longest moves (4,).
static std::tuple<at::Tensor, at::Tensor, at::Tensor> csp_improve_cpu(
    at::TensorList space, const at::Tensor& settings, const at::Tensor& chosen,
    const at::Tensor& cost, double seconds, const at::Tensor& longest) {
  const csp::Space s = read_space(space);
  TORCH_CHECK(settings.scalar_type() == at::kDouble && settings.numel() == kSettings,
              "csp_improve: settings must be float64 (", kSettings, ",)");
  const at::Tensor set = settings.contiguous();
  const double* sp = set.data_ptr<double>();
  csp::Settings cfg;
  cfg.eps = sp[0];
  cfg.ejection_targets = static_cast<int64_t>(sp[1]);
  cfg.chain_limit = static_cast<int64_t>(sp[2]);
  cfg.max_passes = static_cast<int64_t>(sp[3]);
  cfg.cents = sp[4];
  cfg.cut_infinite = static_cast<int64_t>(sp[5]);
  cfg.no_column = static_cast<int64_t>(sp[6]);
  TORCH_CHECK(chosen.scalar_type() == at::kLong && chosen.dim() == 2 && chosen.size(1) == s.n,
              "csp_improve: chosen must be int64 (scenarios, ", s.n, "), got ", chosen.sizes());
  TORCH_CHECK(cost.scalar_type() == at::kDouble && cost.dim() == 2 &&
                  cost.size(0) == chosen.size(0) && cost.size(1) == s.n_columns,
              "csp_improve: cost must be float64 (", chosen.size(0), ", ", s.n_columns, "), got ",
              cost.sizes());
  TORCH_CHECK(longest.scalar_type() == at::kDouble && longest.numel() == csp::Improver::kMoves,
              "csp_improve: longest must be float64 (", csp::Improver::kMoves, ",)");
  const at::Tensor start = chosen.contiguous(), c = cost.contiguous();
  const int64_t n_scenarios = start.size(0);
  const int64_t* start_p = start.data_ptr<int64_t>();
  for (int64_t i = 0; i < n_scenarios * s.n; ++i) {
    const int64_t k = start_p[i], a = i % s.n;
    TORCH_CHECK(k == -1 || (0 <= k && k < s.n_columns && s.col_class[k] == a),
                "csp_improve: scenario ", i / s.n, ": class ", a, " starts at column ", k,
                ", not one of its columns");
    TORCH_CHECK(k >= 0 || a >= s.n_rec, "csp_improve: scenario ", i / s.n,
                ": recurring class ", a, " is unscheduled");
  }
  at::Tensor improved = at::empty_like(start);
  at::Tensor passes = at::empty({n_scenarios}, start.options());
  at::Tensor longest_out = longest.contiguous().clone();
  int64_t* improved_p = improved.data_ptr<int64_t>();
  int64_t* passes_p = passes.data_ptr<int64_t>();
  double* longest_p = longest_out.data_ptr<double>();
  const double* cost_p = c.data_ptr<double>();
  std::vector<double> longest_in(longest_p, longest_p + csp::Improver::kMoves);
  std::mutex merge;
  // one scenario per task; each thread carries its own move-time estimates from scenario to
  // scenario, and the longest of all threads' come back
  at::parallel_for(0, n_scenarios, 1, [&](int64_t first, int64_t last) {
    std::vector<double> mine = longest_in;
    for (int64_t i = first; i < last; ++i) {
      const double deadline = csp::Improver::seconds_now() + seconds;
      csp::Improver improver(s, cfg, cost_p + i * s.n_columns);
      passes_p[i] = improver.improve(start_p + i * s.n, deadline, mine.data());
      std::copy(improver.chosen().begin(), improver.chosen().end(), improved_p + i * s.n);
    }
    std::lock_guard<std::mutex> lock(merge);
    for (int64_t m = 0; m < csp::Improver::kMoves; ++m) {
      longest_p[m] = std::max(longest_p[m], mine[m]);
    }
  });
  return {improved, passes, longest_out};
}

// onehot.cpp holds the TORCH_LIBRARY block of the namespace; this op is a fragment of it.
TORCH_LIBRARY_FRAGMENT(ldf_ip, m) {
  m.def(
      "csp_improve(Tensor[] space, Tensor settings, Tensor chosen, Tensor cost, float seconds, "
      "Tensor longest) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ldf_ip, CPU, m) { m.impl("csp_improve", &csp_improve_cpu); }

}  // namespace ldf_ip
