// Autograd hooks for fkpnet's own gradient kernels: libtorch has them, tch does not
// expose them (src/autograd.rs is the Rust side and says why they are wanted).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include <memory>
#include <stdexcept>

namespace {

// The Rust closure behind a hook; dropped (through `drop`) with the last copy of the
// hook, that is when autograd's graph that holds it goes.
struct Callback {
  void* ctx;
  bool (*call)(void* ctx, at::Tensor* grad);
  void (*drop)(void* ctx);
  ~Callback() { drop(ctx); }
};

}  // namespace

extern "C" {

// Registers on `y` (a tensor in autograd's graph) a hook that autograd's backward pass
// calls with y's gradient, before that gradient flows on into y's own backward function.
// `call` takes ownership of the handle it is given; it returns false where it failed,
// which fails the backward pass. Returns false where no hook could be registered (y
// needs no gradient); `drop(ctx)` has then run.
bool fkpnet_register_grad_hook(const at::Tensor* y, void* ctx, bool (*call)(void*, at::Tensor*),
                               void (*drop)(void*)) {
  std::shared_ptr<Callback> cb(new Callback{ctx, call, drop});
  try {
    y->register_hook([cb](const at::Tensor& grad) {
      if (!cb->call(cb->ctx, new at::Tensor(grad))) {
        throw std::runtime_error("a gradient kernel of fkpnet's failed (its message is above)");
      }
    });
    return true;
  } catch (...) {
    return false;
  }
}

// Adds `grad` to `param`'s gradient as autograd's accumulation does: the first gradient
// of a step becomes param.grad (with param's strides, and never a view, which
// zero_grad's in-place detach would refuse), later ones are added to it.
bool fkpnet_accumulate_grad(const at::Tensor* param, const at::Tensor* grad) {
  try {
    at::Tensor& g = param->mutable_grad();
    if (g.defined()) {
      g.add_(*grad);
    } else if (grad->strides() == param->strides() && !grad->is_view()) {
      g = *grad;
    } else {
      g = at::empty_like(*param);
      g.copy_(*grad);
    }
    return true;
  } catch (...) {
    return false;
  }
}

}  // extern "C"
