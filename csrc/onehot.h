// Argument checks and the (rows, C, inner) layout shared by the CPU (onehot.cpp) and CUDA
// (onehot_cuda.cu) implementations of ldf_ip::onehot_surrogate and its backward.
#pragma once
#include <ATen/ATen.h>
#include <ATen/WrapDimUtils.h>

#include <string>

namespace ldf_ip {

struct Layout {
  int64_t rows, C, inner;  // z viewed as contiguous (rows / inner, C, inner); dim is C
};

// A dtype as Python prints it ("torch.float32"), so that these messages match csrc/ops.py's.
inline std::string dtype_name(const at::Tensor& t) {
  return "torch." + std::string(c10::getDtypeNames(t.scalar_type()).first);
}

// The checks of the op and of its backward; csrc/ops.py (check_arguments) makes the same ones, in
// the same order and with the same messages, for the pure-PyTorch version and the fake kernel.
inline Layout check_input(const at::Tensor& z, double k, int64_t& dim) {
  TORCH_CHECK(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
              "onehot_surrogate: z must be float32 or float64, got ", dtype_name(z));
  TORCH_CHECK(z.dim() > 0, "onehot_surrogate: z must have at least one dimension");
  TORCH_CHECK(k > 0 && std::isfinite(k), "onehot_surrogate: k must be positive and finite, got ",
              k);
  const int64_t n = z.dim();
  TORCH_CHECK_INDEX(dim >= -n && dim < n, "onehot_surrogate: dim ", dim,
                    " is out of range for z of ", n, " dimensions (expected ", -n, " to ", n - 1,
                    ")");
  dim = c10::maybe_wrap_dim(dim, n);
  TORCH_CHECK(z.size(dim) > 0, "onehot_surrogate: the class dimension (dim ", dim,
              ") of z is empty, shape ", z.sizes());
  int64_t inner = 1;
  for (int64_t d = dim + 1; d < z.dim(); ++d) inner *= z.size(d);
  return {z.numel() / z.size(dim), z.size(dim), inner};
}

inline std::vector<int64_t> index_shape(const at::Tensor& z, int64_t dim) {
  auto shape = z.sizes().vec();
  shape.erase(shape.begin() + dim);
  return shape;
}

inline Layout check_backward(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& index,
                             double k, int64_t& dim) {
  const Layout L = check_input(z, k, dim);
  TORCH_CHECK(grad.scalar_type() == z.scalar_type(), "onehot_surrogate_backward: grad is ",
              dtype_name(grad), " but z is ", dtype_name(z));
  TORCH_CHECK(grad.device() == z.device() && index.device() == z.device(),
              "onehot_surrogate_backward: grad, z and index must be on one device, got ",
              grad.device(), ", ", z.device(), ", ", index.device());
  TORCH_CHECK(grad.sizes() == z.sizes(), "onehot_surrogate_backward: grad has shape ",
              grad.sizes(), " but z has ", z.sizes());
  const bool index_ok =
      index.scalar_type() == at::kLong && index.sizes() == at::IntArrayRef(index_shape(z, dim));
  TORCH_CHECK(index_ok,
              "onehot_surrogate_backward: index must be int64 of shape z.shape without dim");
  return L;
}

}  // namespace ldf_ip
