// Autograd hooks for fkpnet's own gradient kernels: libtorch has them, tch does not
// expose them (src/autograd.rs is the Rust side and says why they are wanted).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

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

// The backward function of a tensor made outside autograd (`fkpnet_set_input_gradient`):
// it hands the output's gradient to a Rust closure, which writes the input's gradient.
struct InputGradient : torch::autograd::Node {
  std::shared_ptr<Callback> cb;
  bool (*input_grad)(void* ctx, at::Tensor* grad, at::Tensor* out);

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    at::Tensor out;
    if (!cb) {
      throw std::runtime_error("fkpnet's input gradient ran twice (its graph was kept)");
    }
    if (grads[0].defined() && !input_grad(cb->ctx, new at::Tensor(grads[0]), &out)) {
      throw std::runtime_error("an input gradient kernel of fkpnet's failed (its message is above)");
    }
    return {out};
  }

  // The engine calls this once the node has run in a pass that keeps no graph: the
  // closure and what it holds (the weights) go then, not with the whole graph.
  void release_variables() override { cb.reset(); }

  std::string name() const override { return "fkpnet::InputGradient"; }
};

}  // namespace

extern "C" {

// Makes `y` (a tensor outside autograd's graph, computed from `x` without it) the output
// of a backward function that calls `call(ctx, dy, out)` with y's gradient; `call` takes
// ownership of dy and assigns x's gradient to `out` (left undefined: none), returning
// false where it failed. Returns false where it could not (`drop(ctx)` has then run).
bool fkpnet_set_input_gradient(const at::Tensor* y, const at::Tensor* x, void* ctx,
                               bool (*call)(void*, at::Tensor*, at::Tensor*), void (*drop)(void*)) {
  std::shared_ptr<Callback> cb(new Callback{ctx, nullptr, drop});
  try {
    if (y->requires_grad() || !x->requires_grad()) {
      return false;
    }
    auto node = c10::make_intrusive<InputGradient>();
    node->cb = cb;
    node->input_grad = call;
    node->set_next_edges(torch::autograd::collect_next_edges(*x));
    torch::autograd::set_history(*y, node);
    return true;
  } catch (...) {
    return false;
  }
}

// `*dst = *src`: how a Rust closure hands a tensor back to C++.
void fkpnet_assign_tensor(at::Tensor* dst, const at::Tensor* src) { *dst = *src; }

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
