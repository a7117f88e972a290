//! Training-time augmentation on a batch, on the training device, drawn from
//! libtorch's RNG (seeded per iteration, so runs and resumes are reproducible):
//! horizontal flips that also swap the person's left and right keypoints, small
//! shifts/scales/rotations with the keypoints moved along (a keypoint that leaves
//! the image is dropped from that batch's loss), brightness and contrast jitter.

use super::Spec;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Mirror half of the faces (keypoints mirrored and left/right swapped).
    #[serde(default)]
    pub flip: bool,
    /// Largest shift, in pixels, each way.
    #[serde(default)]
    pub shift: f64,
    /// Largest relative scale change (0.1 = 0.9x to 1.1x).
    #[serde(default)]
    pub scale: f64,
    /// Largest rotation, in degrees, each way.
    #[serde(default)]
    pub rotate: f64,
    /// Largest brightness offset (pixel values are 0..1).
    #[serde(default)]
    pub brightness: f64,
    /// Largest relative contrast change around the face's mean.
    #[serde(default)]
    pub contrast: f64,
    /// Largest relative saturation change of RGB faces (0.3: blended 0.7x to 1.3x away
    /// from their grey), colour jitter as torchvision's ColorJitter(saturation=...).
    #[serde(default)]
    pub saturation: f64,
    /// Probability that a face gets a random black rectangle (2-33% of the image,
    /// aspect 0.3-3.3, as torchvision's RandomErasing); its keypoints keep their labels,
    /// so the net learns to place hidden ones.
    #[serde(default)]
    pub erase: f64,
}

/// Mirror normalised targets `[N, 2K]`: x -> (W - 1) - x in pixels (pixel centres at
/// integers), i.e. x_n -> -x_n - 1/half, then swap the mirror pairs of the keypoint
/// set (left and right eye corners, ...; points on the midline stay).
pub fn flip_targets(y: &Tensor, spec: &Spec) -> Tensor {
    let flip = &spec.keypoints.flip;
    let cols: Vec<i64> = flip.iter().flat_map(|&k| [2 * k as i64, 2 * k as i64 + 1]).collect();
    let y = y.index_select(1, &Tensor::from_slice(&cols).to_device(y.device()));
    let k = flip.len() as i64;
    let sign = Tensor::from_slice(&[-1.0f32, 1.0]).repeat([k]).to_device(y.device());
    let shift = Tensor::from_slice(&[-1.0f32 / spec.half() as f32, 0.0]).repeat([k]).to_device(y.device());
    y * sign + shift
}

/// Targets are `(xy - half) / half` with pixel centres at whole numbers, while the
/// sampling grid puts -1 and 1 at the image's outer edges, so pixel i sits at
/// `(i + 0.5 - half) / half` there: a target plus this offset, 1 / side, is the same
/// point on the grid. Rotations and zooms turn about the grid's origin, so keypoints
/// must too.
fn grid_offset(half: f64) -> f64 {
    1.0 / (2.0 * half)
}

/// One view of a face: zoomed by `scale` about the image centre (1.1 = zoomed in
/// 10%), turned by `degrees` and moved `dx` pixels right and `dy` down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub scale: f64,
    pub degrees: f64,
    pub dx: f64,
    pub dy: f64,
}

impl View {
    pub const IDENTITY: View = View { scale: 1.0, degrees: 0.0, dx: 0.0, dy: 0.0 };
}

/// A per-face affine view: face i zoomed by `s[i]`, rotated by `r[i]` radians and
/// moved by `(tx[i], ty[i])` (grid units, 48 px = 1; output point p shows input point
/// `R(r) p / s + t`). The rotation is kept as its cosine and sine.
pub struct Affine {
    s: Tensor,
    cos: Tensor,
    sin: Tensor,
    tx: Tensor,
    ty: Tensor,
}

impl Affine {
    pub fn new(s: Tensor, r: Tensor, tx: Tensor, ty: Tensor) -> Affine {
        Affine { s, cos: r.cos(), sin: r.sin(), tx, ty }
    }

    /// The same view for every face of a batch of `n` whose input has half-side `half`.
    pub fn uniform(n: i64, device: tch::Device, v: View, half: f64) -> Affine {
        let full = |x: f64| Tensor::full([n], x, (Kind::Float, device));
        Affine::new(full(v.scale), full(v.degrees.to_radians()), full(-v.dx / half), full(-v.dy / half))
    }

    /// Resample faces `[N, C, H, W]` into the view: bilinear, border padding (a moved
    /// face continues its edge pixels). A whole-pixel move copies pixels exactly.
    pub fn faces(&self, x: &Tensor) -> Tensor {
        let (c, sn, s) = (&self.cos, &self.sin, &self.s);
        let theta = Tensor::stack(
            &[c / s, -sn / s, self.tx.shallow_clone(), sn / s, c / s, self.ty.shallow_clone()],
            1,
        )
        .view([-1, 2, 3])
        .to_kind(x.kind());
        let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
        x.grid_sampler(&grid, 0, 1, false)
    }

    /// Normalised targets `[N, 2K]` as they appear in the view: keypoint k (on the
    /// grid) moves to `s R(-r) (k - t)`.
    pub fn targets(&self, y: &Tensor, half: f64) -> Tensor {
        let (n, t) = (y.size()[0], y.size()[1]);
        let off = grid_offset(half);
        let col = |t: &Tensor| t.view([n, 1]);
        let kx = y.slice(1, 0, t, 2) + off - col(&self.tx);
        let ky = y.slice(1, 1, t, 2) + off - col(&self.ty);
        let (c, sn, s) = (col(&self.cos), col(&self.sin), col(&self.s));
        let nx = (&kx * &c + &ky * &sn) * &s - off;
        let ny = (-&kx * &sn + &ky * &c) * &s - off;
        Tensor::stack(&[&nx, &ny], 2).view([n, t])
    }

    /// Predictions made on the view `[N, 2K]` moved back into the original face: the
    /// inverse of `targets`, `k = R(r) q / s + t`.
    pub fn untargets(&self, q: &Tensor, half: f64) -> Tensor {
        let (n, t) = (q.size()[0], q.size()[1]);
        let off = grid_offset(half);
        let col = |t: &Tensor| t.view([n, 1]);
        let (c, sn, s) = (col(&self.cos), col(&self.sin), col(&self.s));
        let qx = (q.slice(1, 0, t, 2) + off) / &s;
        let qy = (q.slice(1, 1, t, 2) + off) / &s;
        let kx = &qx * &c - &qy * &sn + col(&self.tx) - off;
        let ky = &qx * &sn + &qy * &c + col(&self.ty) - off;
        Tensor::stack(&[&kx, &ky], 2).view([n, t])
    }
}

impl Augment {
    pub fn is_off(&self) -> bool {
        *self == Augment::default()
    }

    pub fn validate(&self) -> Result<(), String> {
        let nonneg = [
            ("shift", self.shift),
            ("scale", self.scale),
            ("rotate", self.rotate),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
            ("erase", self.erase),
        ];
        for (k, v) in nonneg {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("data.augment.{k} must be >= 0, got {v}"));
            }
        }
        if self.erase > 1.0 {
            return Err(format!("data.augment.erase is a probability (0 to 1), got {}", self.erase));
        }
        if self.scale >= 1.0 || self.contrast >= 1.0 || self.saturation > 1.0 {
            return Err("data.augment.scale and .contrast must be below 1, .saturation at most 1".into());
        }
        Ok(())
    }

    /// Augment a batch: images `[N, C, H, W]` in [0, 1], targets `[N, 2K]` normalised.
    pub fn apply(&self, x: &Tensor, y: &Tensor, spec: &Spec) -> (Tensor, Tensor) {
        let (n, t) = (x.size()[0], y.size()[1]);
        let half = spec.half();
        let dev = x.device();
        let opts = (Kind::Float, dev);
        let (mut x, mut y) = (x.shallow_clone(), y.shallow_clone());
        if self.flip {
            let m = Tensor::rand([n], opts).lt(0.5);
            let xm = m.view([n, 1, 1, 1]);
            x = x.flip([3]).where_self(&xm, &x);
            y = flip_targets(&y, spec).where_self(&m.view([n, 1]), &y);
        }
        if self.shift > 0.0 || self.scale > 0.0 || self.rotate > 0.0 {
            let u = |a: f64| (Tensor::rand([n], opts) * 2.0 - 1.0) * a;
            // Drawn in this order (zoom, angle, x, y) so a seed gives the batches it gave.
            let view = Affine::new(
                u(self.scale) + 1.0,
                u(self.rotate.to_radians()),
                u(self.shift / half),
                u(self.shift / half),
            );
            x = view.faces(&x);
            let out = view.targets(&y, half);
            // A keypoint that left the image no longer says where it is: drop it.
            let (nx, ny) = (out.slice(1, 0, t, 2), out.slice(1, 1, t, 2));
            let outside = nx.abs().gt(1.0).logical_or(&ny.abs().gt(1.0));
            let outside = Tensor::stack(&[&outside, &outside], 2).view([n, t]);
            y = out.masked_fill(&outside, f64::NAN);
        }
        if self.brightness > 0.0 || self.contrast > 0.0 {
            let c = (Tensor::rand([n, 1, 1, 1], opts) * 2.0 - 1.0) * self.contrast + 1.0;
            let b = (Tensor::rand([n, 1, 1, 1], opts) * 2.0 - 1.0) * self.brightness;
            let mean = x.mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
            x = ((&x - &mean) * c + mean + b).clamp(0.0, 1.0);
        }
        // Drawn after the others, so configs without it see the batches they saw.
        if self.saturation > 0.0 && x.size()[1] == 3 {
            let s = (Tensor::rand([n, 1, 1, 1], opts) * 2.0 - 1.0) * self.saturation + 1.0;
            let w = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).to_device(dev).view([1, 3, 1, 1]);
            let grey = (&x * w).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
            x = (&grey + (&x - &grey) * s).clamp(0.0, 1.0);
        }
        if self.erase > 0.0 {
            x = erase(&x, self.erase);
        }
        (x, y)
    }
}

/// Black out one random rectangle in a fraction `p` of the faces `[N, C, H, W]`: area
/// 2-33% of the image, log-uniform aspect 0.3-3.3, placed uniformly inside it
/// (torchvision's RandomErasing defaults; a side longer than the image is cut to it).
fn erase(x: &Tensor, p: f64) -> Tensor {
    let size = x.size();
    let (n, h, w) = (size[0], size[2] as f64, size[3] as f64);
    let opts = (Kind::Float, x.device());
    let col = |t: Tensor| t.view([n, 1, 1, 1]);
    let area = (Tensor::rand([n], opts) * 0.31 + 0.02) * (h * w);
    let aspect = (Tensor::rand([n], opts) * (3.3f64 / 0.3).ln() + 0.3f64.ln()).exp();
    let eh = (&area * &aspect).sqrt().clamp_max(h);
    let ew = (&area / &aspect).sqrt().clamp_max(w);
    let top = Tensor::rand([n], opts) * (-&eh + h);
    let left = Tensor::rand([n], opts) * (-&ew + w);
    let rows = Tensor::arange(size[2], opts).view([1, 1, -1, 1]);
    let cols = Tensor::arange(size[3], opts).view([1, 1, 1, -1]);
    let (top, left) = (col(top), col(left));
    let inside = rows.ge_tensor(&top).logical_and(&rows.lt_tensor(&(&top + col(eh))));
    let inside = inside.logical_and(&cols.ge_tensor(&left)).logical_and(&cols.lt_tensor(&(&left + col(ew))));
    let chosen = col(Tensor::rand([n], opts).lt(p));
    x.masked_fill(&inside.logical_and(&chosen), 0.0)
}
