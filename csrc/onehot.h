// Argument checks and the (rows, C, inner) layout shared by the CPU (onehot.cpp) and CUDA
// (onehot_cuda.cu) implementations of ldf_ip::onehot_surrogate and its backward.
#pragma once
#include <ATen/ATen.h>
#include <ATen/WrapDimUtils.h>

namespace ldf_ip {

struct Layout {
  int64_t rows, C, inner;  // z viewed as contiguous (rows / inner, C, inner); dim is C
};

inline Layout check_input(const at::Tensor& z, double k, int64_t& dim) {
  TORCH_CHECK(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
              "onehot_surrogate: z must be float32 or float64, got ", z.scalar_type());
  TORCH_CHECK(z.dim() > 0, "onehot_surrogate: z must have at least one dimension");
  TORCH_CHECK(std::isfinite(k), "onehot_surrogate: k must be finite, got ", k);
  dim = c10::maybe_wrap_dim(dim, z.dim());
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
              grad.scalar_type(), " but z is ", z.scalar_type());
  TORCH_CHECK(grad.device() == z.device() && index.device() == z.device(),
              "onehot_surrogate_backward: grad, z and index must be on one device, got ",
              grad.device(), ", ", z.device(), ", ", index.device());
  TORCH_CHECK(grad.sizes() == z.sizes(), "onehot_surrogate_backward: grad has shape ",
              grad.sizes(), " but z has ", z.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong && index.sizes() == at::IntArrayRef(index_shape(z, dim)),
              "onehot_surrogate_backward: index must be int64 of shape z.shape without dim");
  return L;
}

}  // namespace ldf_ip
