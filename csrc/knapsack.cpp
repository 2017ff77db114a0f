// ldf_ip::knapsack_exact: exact 0/1 knapsack labels for a batch of instances, in parallel across
// the instances on ATen's intra-op threads. The solver is csrc/knapsack.h (combo's algorithm);
// the Python side (checks of the input, messages, the numpy fallback) is csrc/knapsack.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <chrono>
#include <limits>
#include <tuple>

#include "knapsack.h"

namespace ldf_ip {

// weights, values: int64 (B, n); capacity: int64 (B,); time_limit: seconds per instance (<= 0: no
// limit). Returns x: uint8 (B, n), the optimal solutions (0 where not solved); status: int64 (B,),
// a knapsack::Status per instance; seconds: float64 (B,), the time each instance took.
static std::tuple<at::Tensor, at::Tensor, at::Tensor> knapsack_exact_cpu(
    const at::Tensor& weights, const at::Tensor& values, const at::Tensor& capacity,
    double time_limit) {
  TORCH_CHECK(weights.scalar_type() == at::kLong && values.scalar_type() == at::kLong &&
                  capacity.scalar_type() == at::kLong,
              "knapsack_exact: weights, values and capacity must be int64");
  TORCH_CHECK(weights.dim() == 2, "knapsack_exact: weights must be (instances, items), got ",
              weights.sizes());
  TORCH_CHECK(values.sizes() == weights.sizes(), "knapsack_exact: values ", values.sizes(),
              " and weights ", weights.sizes(), " differ in shape");
  TORCH_CHECK(capacity.dim() == 1 && capacity.size(0) == weights.size(0),
              "knapsack_exact: capacity must be (instances,) = (", weights.size(0), "), got ",
              capacity.sizes());
  TORCH_CHECK(weights.size(1) < std::numeric_limits<int32_t>::max(),
              "knapsack_exact: too many items");
  const at::Tensor w = weights.contiguous(), p = values.contiguous(), c = capacity.contiguous();
  const int64_t n_instances = w.size(0), n_items = w.size(1);
  at::Tensor x = at::zeros({n_instances, n_items}, w.options().dtype(at::kByte));
  at::Tensor status = at::empty({n_instances}, w.options());
  at::Tensor seconds = at::empty({n_instances}, w.options().dtype(at::kDouble));
  const int64_t* wp = w.data_ptr<int64_t>();
  const int64_t* pp = p.data_ptr<int64_t>();
  const int64_t* cp = c.data_ptr<int64_t>();
  uint8_t* xp = x.data_ptr<uint8_t>();
  int64_t* sp = status.data_ptr<int64_t>();
  double* tp = seconds.data_ptr<double>();
  // one instance per task: instances differ in time by orders of magnitude
  at::parallel_for(0, n_instances, 1, [&](int64_t first, int64_t last) {
    knapsack::Solver solver;  // its state buffers are reused across this thread's instances
    for (int64_t i = first; i < last; ++i) {
      const auto start = std::chrono::steady_clock::now();
      const knapsack::Deadline deadline(time_limit);
      sp[i] = solver.solve(wp + i * n_items, pp + i * n_items, n_items, cp[i], xp + i * n_items,
                           deadline);
      tp[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  });
  return {x, status, seconds};
}

// onehot.cpp holds the TORCH_LIBRARY block of the namespace; this op is a fragment of it.
TORCH_LIBRARY_FRAGMENT(ldf_ip, m) {
  m.def(
      "knapsack_exact(Tensor weights, Tensor values, Tensor capacity, float time_limit) -> "
      "(Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ldf_ip, CPU, m) { m.impl("knapsack_exact", &knapsack_exact_cpu); }

}  // namespace ldf_ip
