//! Each update rule and lr policy against values computed by hand from the formulas in docs/caffe.md.

use fkpnet::config::net::ParamMult;
use fkpnet::config::solver::{Flavor, LrPolicy, Regularization};
use fkpnet::config::{SolverConfig, SolverType};
use fkpnet::graph::Param;
use fkpnet::solver::{lr, Solver};
use tch::{Kind, Tensor};

fn cfg(kind: SolverType) -> SolverConfig {
    let yaml = "net: x.yaml\ndata: {train: synthetic}\nbase_lr: 0.1\nmax_iter: 100\nbatch_size: 1\n";
    let mut c: SolverConfig = serde_yaml::from_str(yaml).unwrap();
    c.solver_type = kind;
    c
}

/// One scalar parameter starting at `w0`.
fn param(w0: f64, mult: ParamMult) -> Param {
    let t = Tensor::from_slice(&[w0]).set_requires_grad(true);
    Param { name: "w".into(), tensor: t, mult, learn: true }
}

/// Set the gradient to `g` (by backpropagating g * w) and take one step.
fn step(s: &mut Solver, p: &Param, g: f64, rate: f64) -> f64 {
    (&p.tensor * g).sum(Kind::Double).backward();
    s.step(std::slice::from_ref(p), rate);
    p.tensor.double_value(&[0])
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "{a} != {b}");
}

#[test]
fn sgd_caffe_keeps_lr_in_history_and_differs_from_pytorch_after_a_drop() {
    let mut c = cfg(SolverType::SGD);
    c.momentum = 0.9;
    let p = param(1.0, ParamMult::default());
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    close(step(&mut s, &p, 1.0, 0.1), 0.9); // V = 0.1
    close(step(&mut s, &p, 1.0, 0.01), 0.8); // V = 0.09 + 0.01
    c.flavor = Flavor::Pytorch;
    let p = param(1.0, ParamMult::default());
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    close(step(&mut s, &p, 1.0, 0.1), 0.9); // B = 1
    close(step(&mut s, &p, 1.0, 0.01), 0.881); // B = 1.9, w -= 0.019
}

#[test]
fn nesterov_caffe() {
    let mut c = cfg(SolverType::Nesterov);
    c.momentum = 0.9;
    let p = param(1.0, ParamMult::default());
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    // V1 = 0.1*2 = 0.2; w -= 1.9*0.2 - 0.9*0 = 0.38
    close(step(&mut s, &p, 2.0, 0.1), 0.62);
    // V2 = 0.9*0.2 + 0.1*1 = 0.28; w -= 1.9*0.28 - 0.9*0.2 = 0.352
    close(step(&mut s, &p, 1.0, 0.1), 0.62 - 0.352);
}

#[test]
fn adam_caffe_and_pytorch_epsilon() {
    let mut c = cfg(SolverType::Adam);
    c.momentum = 0.9;
    c.delta = 1e-3; // large enough that where epsilon goes matters
    let (b1, b2, eps, lr) = (0.9f64, 0.999f64, 1e-3f64, 0.01f64);
    let grads = [0.5, -0.2, 0.3];
    for flavor in [Flavor::Caffe, Flavor::Pytorch] {
        c.flavor = flavor;
        let p = param(1.0, ParamMult::default());
        let mut s = Solver::new(&c, std::slice::from_ref(&p));
        let (mut m, mut v, mut w) = (0.0, 0.0, 1.0);
        for (i, g) in grads.iter().enumerate() {
            let t = (i + 1) as f64;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            w -= match flavor {
                Flavor::Caffe => lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t)) * m / (v.sqrt() + eps),
                Flavor::Pytorch => lr / (1.0 - b1.powf(t)) * m / (v.sqrt() / (1.0 - b2.powf(t)).sqrt() + eps),
            };
            close(step(&mut s, &p, *g, lr), w);
        }
    }
}

#[test]
fn adagrad_rmsprop_adadelta() {
    let grads = [0.5, -0.2, 0.3];
    let (lr, eps) = (0.1, 1e-8);
    // AdaGrad
    let c = cfg(SolverType::AdaGrad);
    let p = param(1.0, ParamMult::default());
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    let (mut h, mut w) = (0.0, 1.0f64);
    for g in grads {
        h += g * g;
        w -= lr * g / (f64::sqrt(h) + eps);
        close(step(&mut s, &p, g, lr), w);
    }
    // RMSProp
    let c = cfg(SolverType::RMSProp);
    let p = param(1.0, ParamMult::default());
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    let (mut ms, mut w) = (0.0, 1.0f64);
    for g in grads {
        ms = 0.99 * ms + 0.01 * g * g;
        w -= lr * g / (f64::sqrt(ms) + eps);
        close(step(&mut s, &p, g, lr), w);
    }
    // AdaDelta with momentum 0.95, delta 1e-6
    let mut c = cfg(SolverType::AdaDelta);
    c.momentum = 0.95;
    c.delta = 1e-6;
    let p = param(1.0, ParamMult::default());
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    let (mut eg, mut ex, mut w) = (0.0, 0.0, 1.0f64);
    for g in grads {
        eg = 0.95 * eg + 0.05 * g * g;
        let u = g * ((ex + 1e-6) / (eg + 1e-6)).sqrt();
        ex = 0.95 * ex + 0.05 * u * u;
        w -= 1.0 * u;
        close(step(&mut s, &p, g, 1.0), w);
    }
}

#[test]
fn weight_decay_l2_l1_with_mults_and_clipping() {
    let mut c = cfg(SolverType::SGD);
    c.weight_decay = 0.1;
    // L2: g' = g + 0.1 * decay_mult * w; lr_mult 2 doubles the rate.
    let p = param(2.0, ParamMult { lr_mult: 2.0, decay_mult: 0.5 });
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    close(step(&mut s, &p, 1.0, 0.1), 2.0 - 0.2 * (1.0 + 0.05 * 2.0));
    // L1: g' = g + 0.1 * sign(w)
    c.regularization_type = Regularization::L1;
    let p = param(-2.0, ParamMult::default());
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    close(step(&mut s, &p, 1.0, 0.1), -2.0 - 0.1 * (1.0 - 0.1));
    // clip_gradients scales the global norm down to the limit.
    let mut c = cfg(SolverType::SGD);
    c.clip_gradients = 0.5;
    let p = param(0.0, ParamMult::default());
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    close(step(&mut s, &p, 4.0, 1.0), -0.5);
}

#[test]
fn lr_policies() {
    let mut c = cfg(SolverType::SGD);
    c.base_lr = 0.01;
    c.gamma = Some(0.5);
    c.power = Some(2.0);
    c.stepsize = Some(10);
    c.stepvalue = vec![5, 20];
    let at = |c: &SolverConfig, p: LrPolicy, it: i64| {
        let mut c = c.clone();
        c.lr_policy = p;
        lr::rate(&c, it, 0)
    };
    close(at(&c, LrPolicy::Fixed, 37), 0.01);
    close(at(&c, LrPolicy::Step, 9), 0.01);
    close(at(&c, LrPolicy::Step, 10), 0.005);
    close(at(&c, LrPolicy::Step, 25), 0.0025);
    close(at(&c, LrPolicy::Exp, 3), 0.01 * 0.125);
    close(at(&c, LrPolicy::Inv, 4), 0.01 * (1.0f64 + 0.5 * 4.0).powf(-2.0));
    close(at(&c, LrPolicy::Multistep, 4), 0.01);
    close(at(&c, LrPolicy::Multistep, 5), 0.005);
    close(at(&c, LrPolicy::Multistep, 20), 0.0025);
    close(at(&c, LrPolicy::Poly, 50), 0.01 * 0.25);
    close(at(&c, LrPolicy::Sigmoid, 10), 0.005);
    close(at(&c, LrPolicy::Sigmoid, 12), 0.01 / (1.0 + (-0.5f64 * 2.0).exp()));
    close(at(&c, LrPolicy::Cosine, 0), 0.01);
    close(at(&c, LrPolicy::Cosine, 50), 0.005);
    close(at(&c, LrPolicy::Cosine, 100), 0.0);
    let mut p = c.clone();
    p.lr_policy = LrPolicy::Plateau;
    close(lr::rate(&p, 7, 2), 0.01 * 0.25);
    // Warm-up ramps any policy linearly over the first warmup_iter iterations.
    let mut w = c.clone();
    w.warmup_iter = 4;
    close(lr::rate(&w, 0, 0), 0.0025);
    close(lr::rate(&w, 3, 0), 0.01);
    close(lr::rate(&w, 4, 0), 0.01);
}

#[test]
fn buffers_get_no_history_and_no_update_even_with_weight_decay() {
    let mut c = cfg(SolverType::Adam);
    c.weight_decay = 0.1;
    let w = param(1.0, ParamMult::default());
    let stats = Param {
        name: "bn.running_mean".into(),
        tensor: Tensor::from_slice(&[3.0f64]),
        mult: ParamMult::default(),
        learn: false,
    };
    let params = [w, stats];
    let mut s = Solver::new(&c, &params);
    assert_eq!(s.history[1].len(), 0, "no Adam moments for a buffer");
    (&params[0].tensor * 2.0).sum(Kind::Double).backward();
    s.step(&params, 0.1);
    assert!(params[0].tensor.double_value(&[0]) < 1.0, "the weight moved");
    assert_eq!(params[1].tensor.double_value(&[0]), 3.0, "the statistics did not");
    // The norm skips the buffer (it has no gradient at all) and sees the zeroed grad.
    assert_eq!(Solver::grad_norm(&params), 0.0);
}

#[test]
fn adamw_decays_the_weights_not_the_gradient() {
    // torch.optim.AdamW: w *= 1 - lr wd (times each blob's decay_mult), then Adam's step
    // on the plain gradient. Adam with the same weight_decay adds wd w to the gradient,
    // which its normalisation then scales away: the two must differ.
    let (b1, b2, eps, lr, wd) = (0.9f64, 0.999f64, 1e-8f64, 0.01f64, 0.5f64);
    let grads = [0.5, -0.2, 0.3];
    let mut c = cfg(SolverType::AdamW);
    c.momentum = 0.9;
    c.flavor = Flavor::Pytorch;
    c.weight_decay = wd;
    let mult = ParamMult { decay_mult: 2.0, ..ParamMult::default() };
    let p = param(1.0, mult);
    let mut s = Solver::new(&c, std::slice::from_ref(&p));
    assert_eq!(s.history[0].len(), 2, "AdamW keeps Adam's two moments");
    let (mut m, mut v, mut w) = (0.0, 0.0, 1.0);
    for (i, g) in grads.iter().enumerate() {
        let t = (i + 1) as f64;
        w *= 1.0 - lr * wd * 2.0;
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        w -= lr / (1.0 - b1.powf(t)) * m / (v.sqrt() / (1.0 - b2.powf(t)).sqrt() + eps);
        close(step(&mut s, &p, *g, lr), w);
    }
    c.solver_type = SolverType::Adam;
    let q = param(1.0, mult);
    let mut s = Solver::new(&c, std::slice::from_ref(&q));
    for g in grads {
        step(&mut s, &q, g, lr);
    }
    let adam = q.tensor.double_value(&[0]);
    assert!((adam - w).abs() > 1e-3, "Adam's coupled L2 ({adam}) should differ from AdamW ({w})");
}

#[test]
fn adamw_refuses_l1_regularization() {
    let mut c = cfg(SolverType::AdamW);
    c.regularization_type = Regularization::L1;
    let e = c.validate().unwrap_err();
    assert!(e.contains("AdamW") && e.contains("L1"), "{e}");
    c.solver_type = SolverType::Adam;
    assert!(c.validate().is_ok());
}

#[test]
fn moving_average_of_the_weights_with_tensorflows_warm_up() {
    let mut c = cfg(SolverType::SGD);
    c.ema_decay = 0.5;
    let buf = Param {
        name: "b".into(),
        tensor: Tensor::from_slice(&[3.0f64]),
        mult: ParamMult::default(),
        learn: false,
    };
    let params = [param(1.0, ParamMult::default()), buf];
    let mut s = Solver::new(&c, &params);
    let avg = |s: &Solver| s.ema.as_ref().unwrap().shadow[0].as_ref().unwrap().double_value(&[0]);
    assert!(s.ema.as_ref().unwrap().shadow[1].is_none(), "buffers are not averaged");
    // w: 1 -> 0.9 -> 0.8 -> 0.7; decay min(0.5, (1+n)/(10+n)): 0.1, 2/11, 0.25.
    let mut e = 1.0;
    for (w, d) in [(0.9, 0.1), (0.8, 2.0 / 11.0), (0.7, 0.25)] {
        (&params[0].tensor * 1.0).sum(Kind::Double).backward();
        s.step(&params, 0.1);
        close(params[0].tensor.double_value(&[0]), w);
        e = d * e + (1.0 - d) * w;
        close(avg(&s), e);
    }
    // Later updates use the configured decay.
    close(s.ema.as_ref().unwrap().decay_at(1000), 0.5);
    // A swap puts the average into the net; a second swap undoes it.
    s.swap_ema(&params);
    close(params[0].tensor.double_value(&[0]), e);
    close(avg(&s), 0.7);
    s.swap_ema(&params);
    close(params[0].tensor.double_value(&[0]), 0.7);
    close(params[1].tensor.double_value(&[0]), 3.0);
    // Off by default.
    assert!(Solver::new(&cfg(SolverType::SGD), &params).ema.is_none());
}
