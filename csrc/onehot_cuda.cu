// CUDA kernels of ldf_ip::onehot_surrogate (the kernels themselves are in onehot_kernels.h).
// Only the current stream is needed: c10/cuda/CUDAStream.h, not ATen/cuda/CUDAContext.h, which
// pulls in the cuBLAS, cuSPARSE and cuSOLVER headers that a minimal CUDA toolkit does not have.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "onehot.h"
#include "onehot_kernels.h"

namespace ldf_ip {

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& z_in, double k, int64_t dim) {
  const Layout L = check_input(z_in, k, dim);
  const c10::cuda::CUDAGuard guard(z_in.device());
  const at::Tensor z = z_in.contiguous();
  at::Tensor out = at::empty(z.sizes(), z.options());
  at::Tensor index = at::empty(index_shape(z, dim), z.options().dtype(at::kLong));
  if (L.rows == 0) return {out, index};
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "onehot_surrogate", [&] {
    launch_forward<scalar_t>(z.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                             index.mutable_data_ptr<int64_t>(), L.rows, L.C, L.inner,
                             c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, index};
}

at::Tensor backward_cuda(const at::Tensor& grad, const at::Tensor& z_in, const at::Tensor& index_in,
                         double k, int64_t dim) {
  const Layout L = check_backward(grad, z_in, index_in, k, dim);
  const c10::cuda::CUDAGuard guard(z_in.device());
  const at::Tensor z = z_in.contiguous(), g = grad.contiguous(), index = index_in.contiguous();
  at::Tensor gz = at::empty(z.sizes(), z.options());
  if (L.rows == 0) return gz;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "onehot_surrogate_backward", [&] {
    launch_backward<scalar_t>(g.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(),
                              index.const_data_ptr<int64_t>(), gz.mutable_data_ptr<scalar_t>(),
                              L.rows, L.C, L.inner, static_cast<scalar_t>(k),
                              c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return gz;
}

TORCH_LIBRARY_IMPL(ldf_ip, CUDA, m) {
  m.impl("onehot_surrogate", &forward_cuda);
  m.impl("onehot_surrogate_backward", &backward_cuda);
}

}  // namespace ldf_ip
