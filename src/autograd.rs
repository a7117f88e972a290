//! Autograd's tensor hooks, which libtorch has and tch does not expose (csrc/grad_hook.cpp
//! is the C++ side). A kernel of fkpnet's own that computes a layer's parameter gradients
//! (`Layer::build_train`) runs in autograd's backward pass through one: the gradient of the
//! layer's output reaches the hook as autograd computes it and is freed as soon as the
//! layer's backward function has used it, as for any layer. Read after the pass instead
//! (through a leaf), every such gradient lived until the end of the pass: VGG's peak
//! memory at batch 64 went from 1,435 to 1,697 MiB that way.

use std::ffi::c_void;
use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn fkpnet_register_grad_hook(
        y: *const C_tensor,
        ctx: *mut c_void,
        call: extern "C" fn(*mut c_void, *mut C_tensor) -> bool,
        drop: extern "C" fn(*mut c_void),
    ) -> bool;
    fn fkpnet_accumulate_grad(param: *const C_tensor, grad: *const C_tensor) -> bool;
    fn fkpnet_set_input_gradient(
        y: *const C_tensor,
        x: *const C_tensor,
        ctx: *mut c_void,
        call: extern "C" fn(*mut c_void, *mut C_tensor, *mut C_tensor) -> bool,
        drop: extern "C" fn(*mut c_void),
    ) -> bool;
    fn fkpnet_assign_tensor(dst: *mut C_tensor, src: *const C_tensor);
}

type Hook = Box<dyn FnMut(&Tensor) + Send>;
type InputGrad = Box<dyn FnMut(&Tensor) -> Option<Tensor> + Send>;

/// Has autograd's backward pass call `f` with `y`'s gradient (all of it, summed over
/// y's uses) before it flows on into the function that made `y`. False where `y` is not
/// in autograd's graph (it needs no gradient); `f` is then dropped uncalled.
pub fn on_gradient(y: &Tensor, f: impl FnMut(&Tensor) + Send + 'static) -> bool {
    if !y.requires_grad() {
        return false;
    }
    let ctx = Box::into_raw(Box::new(Box::new(f) as Hook)) as *mut c_void;
    // SAFETY: `ctx` is a Box<Hook> that the C++ side owns from here on and hands back
    // to `drop_hook` exactly once; `y` is a live tensor.
    unsafe { fkpnet_register_grad_hook(y.as_ptr(), ctx, call_hook, drop_hook) }
}

/// Adds `grad` to `param`'s gradient as autograd's accumulation does: the first of a
/// step becomes `param.grad` (with the parameter's strides), later ones are added.
pub fn accumulate_grad(param: &Tensor, grad: &Tensor) {
    // SAFETY: both are live tensors; the C++ side takes no ownership.
    let ok = unsafe { fkpnet_accumulate_grad(param.as_ptr(), grad.as_ptr()) };
    assert!(
        ok,
        "cannot add a gradient of shape {:?} to a parameter of shape {:?}",
        grad.size(),
        param.size()
    );
}

/// Puts `y`, computed from `x` outside autograd's graph (under `no_grad`, or from
/// detached tensors), into the graph as a function of `x` whose backward is `f`: given
/// y's gradient, `f` returns x's (or `None`: no gradient for x). A kernel of fkpnet's own
/// thus computes an input's gradient where libtorch's backward is the slower. False where
/// `x` needs no gradient or `y` is already in a graph; `y` is then unchanged and `f`
/// dropped uncalled.
pub fn with_input_gradient(
    y: &Tensor,
    x: &Tensor,
    f: impl FnMut(&Tensor) -> Option<Tensor> + Send + 'static,
) -> bool {
    let ctx = Box::into_raw(Box::new(Box::new(f) as InputGrad)) as *mut c_void;
    // SAFETY: `ctx` is a Box<InputGrad> that the C++ side owns from here on and hands
    // back to `drop_input_grad` exactly once; `y` and `x` are live tensors.
    unsafe { fkpnet_set_input_gradient(y.as_ptr(), x.as_ptr(), ctx, call_input_grad, drop_input_grad) }
}

extern "C" fn call_input_grad(ctx: *mut c_void, grad: *mut C_tensor, out: *mut C_tensor) -> bool {
    // SAFETY: as in `call_hook`; `out` is an undefined tensor on the C++ side's stack.
    let (grad, f) = unsafe { (Tensor::from_ptr(grad), &mut *(ctx as *mut InputGrad)) };
    let computed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&grad)));
    match computed {
        // SAFETY: `out` is live for this call; the C++ side copies the handle.
        Ok(Some(dx)) => unsafe { fkpnet_assign_tensor(out, dx.as_ptr()) },
        Ok(None) => {}
        Err(_) => return false,
    }
    true
}

extern "C" fn drop_input_grad(ctx: *mut c_void) {
    // SAFETY: called once, with the Box<InputGrad> made in `with_input_gradient`.
    drop(unsafe { Box::from_raw(ctx as *mut InputGrad) });
}

extern "C" fn call_hook(ctx: *mut c_void, grad: *mut C_tensor) -> bool {
    // SAFETY: `grad` is a fresh heap handle the C++ side hands over (`new at::Tensor`);
    // `ctx` is the live Box<Hook> made in `on_gradient`, called from one thread at a time.
    let (grad, hook) = unsafe { (Tensor::from_ptr(grad), &mut *(ctx as *mut Hook)) };
    // A panic must not unwind into C++: it is printed (the default hook) and fails the
    // backward pass with a C++ exception instead.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&grad))).is_ok()
}

extern "C" fn drop_hook(ctx: *mut c_void) {
    // SAFETY: called once, with the Box<Hook> made in `on_gradient`.
    drop(unsafe { Box::from_raw(ctx as *mut Hook) });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn a_hook_sees_the_outputs_gradient_and_adds_a_parameters() {
        let x = Tensor::from_slice(&[1f32, 2., 3.]).set_requires_grad(true);
        let p = Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let y = &x * 2.0;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (seen2, p2) = (seen.clone(), p.shallow_clone());
        assert!(on_gradient(&y, move |g| {
            seen2.lock().unwrap().push(Vec::<f32>::try_from(g).unwrap());
            accumulate_grad(&p2, &(g * 10.0));
            accumulate_grad(&p2, g);
        }));
        // y used twice: the hook gets the sum, once.
        (&y * &y + &y * 3.0).sum(Kind::Float).backward();
        let want = [2. * 2. + 3., 2. * 4. + 3., 2. * 6. + 3.];
        assert_eq!(*seen.lock().unwrap(), vec![want.to_vec()]);
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), want.map(|g| 11. * g).to_vec());
        assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), want.map(|g| 2. * g).to_vec());
        // Without a graph there is nothing to hook.
        assert!(!on_gradient(&Tensor::ones([2], (Kind::Float, tch::Device::Cpu)), |_| panic!("called")));
    }

    #[test]
    fn a_panicking_hook_fails_the_backward_pass_and_its_closure_is_dropped() {
        let dropped = std::sync::Arc::new(());
        let x = Tensor::from_slice(&[1f32]).set_requires_grad(true);
        let y = &x * 2.0;
        let held = dropped.clone();
        on_gradient(&y, move |_| {
            let _ = &held;
            panic!("kernel failed on purpose");
        });
        let r = y.sum(Kind::Float).f_backward();
        assert!(r.is_err(), "backward went through a failing hook");
        drop(y);
        assert_eq!(std::sync::Arc::strong_count(&dropped), 1, "the hook's closure outlived its graph");
    }

    #[test]
    fn an_input_gradient_flows_on_into_the_inputs_graph_and_its_closure_goes_after() {
        let a = Tensor::from_slice(&[1f32, -2., 3.]).set_requires_grad(true);
        let x = &a * 5.0; // x inside a graph: the gradient must flow on to a
        let y = tch::no_grad(|| &x * 3.0);
        let held = std::sync::Arc::new(());
        let h = held.clone();
        assert!(with_input_gradient(&y, &x, move |g| {
            let _ = &h;
            Some(g * 3.0)
        }));
        assert!(y.requires_grad());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        assert!(on_gradient(&y, move |g| s2.lock().unwrap().push(Vec::<f32>::try_from(g).unwrap())));
        (&y * &y).sum(Kind::Float).backward();
        // d(y^2)/da = 2y * 3 * 5 with y = 15a: 450a. The hook saw dy = 2y = 30a.
        assert_eq!(Vec::<f32>::try_from(a.grad()).unwrap(), vec![450., -900., 1350.]);
        assert_eq!(*seen.lock().unwrap(), vec![vec![30f32, -60., 90.]]);
        assert_eq!(std::sync::Arc::strong_count(&held), 1, "the closure outlived its pass");
        // Nothing to attach where x needs no gradient or y is in a graph already.
        let plain = Tensor::ones([2], (Kind::Float, tch::Device::Cpu));
        assert!(!with_input_gradient(&plain.copy(), &plain, |_| panic!("called")));
        assert!(!with_input_gradient(&y, &x, |_| panic!("called")));
    }

    #[test]
    fn no_input_gradient_leaves_the_input_without_one_and_a_panic_fails_the_pass() {
        let x = Tensor::from_slice(&[1f32, 2.]).set_requires_grad(true);
        let y = tch::no_grad(|| &x * 2.0);
        assert!(with_input_gradient(&y, &x, |_| None));
        y.sum(Kind::Float).backward();
        assert!(!x.grad().defined());
        let y = tch::no_grad(|| &x * 2.0);
        assert!(with_input_gradient(&y, &x, |_| panic!("kernel failed on purpose")));
        assert!(y.sum(Kind::Float).f_backward().is_err(), "backward went through a failing kernel");
    }
}
