//! The built-in face generator (`data.train: synthetic`): grey 96x96 faces drawn from
//! a canonical face (outline, eyes with pupils, brows, nose, mouth) under a random
//! similarity transform, with random proportions, brightness and noise. The 15
//! keypoints are exact, so a net can be trained end to end with no Kaggle files.

use super::{Faces, SIDE, TARGETS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Canonical keypoints in face units (x right on the image, y down), Kaggle's order.
/// The person's left is on the image's right, so left_* have x > 0.
fn canonical(r: &mut ChaCha8Rng) -> [(f32, f32); 15] {
    let eye = r.random_range(0.30..0.42f32); // eye centre distance from the midline
    let half_eye = r.random_range(0.13..0.18f32);
    let eye_y = r.random_range(-0.24..-0.12f32);
    let brow_y = eye_y - r.random_range(0.16..0.26f32);
    let nose_y = r.random_range(0.08..0.20f32);
    let mouth_y = r.random_range(0.40..0.52f32);
    let mouth_w = r.random_range(0.20..0.34f32);
    let lip = r.random_range(0.04..0.10f32);
    [
        (eye, eye_y),
        (-eye, eye_y),
        (eye - half_eye, eye_y),
        (eye + half_eye, eye_y),
        (-eye + half_eye, eye_y),
        (-eye - half_eye, eye_y),
        (eye - half_eye - 0.02, brow_y),
        (eye + half_eye + 0.06, brow_y + 0.03),
        (-eye + half_eye + 0.02, brow_y),
        (-eye - half_eye - 0.06, brow_y + 0.03),
        (0.0, nose_y),
        (mouth_w, mouth_y),
        (-mouth_w, mouth_y),
        (0.0, mouth_y - lip),
        (0.0, mouth_y + lip),
    ]
}

fn seg_dist(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / (dx * dx + dy * dy).max(1e-9)).clamp(0.0, 1.0);
    ((p.0 - a.0 - t * dx).powi(2) + (p.1 - a.1 - t * dy).powi(2)).sqrt()
}

/// Soft inside-test on a signed distance `d` (< 0 inside): 1 inside, 0 outside,
/// a linear ramp `edge` wide across the boundary (anti-aliasing).
fn inside(d: f32, edge: f32) -> f32 {
    (0.5 - d / edge).clamp(0.0, 1.0)
}

/// Draw one face; returns its pixels and its 30 keypoint coordinates in pixels.
fn face(r: &mut ChaCha8Rng) -> (Vec<u8>, [f32; TARGETS]) {
    let k = canonical(r);
    let scale = r.random_range(30.0..40.0f32); // pixels per face unit
    let angle = r.random_range(-0.3..0.3f32);
    let (cx, cy) = (48.0 + r.random_range(-5.0..5.0f32), 46.0 + r.random_range(-5.0..5.0f32));
    let (s, c) = angle.sin_cos();
    let to_px = |(u, v): (f32, f32)| (cx + scale * (c * u - s * v), cy + scale * (s * u + c * v));
    let to_face = |x: f32, y: f32| {
        let (dx, dy) = ((x - cx) / scale, (y - cy) / scale);
        (c * dx + s * dy, -s * dx + c * dy)
    };
    let bg = r.random_range(0.05..0.45f32);
    let bg_grad = r.random_range(-0.003..0.003f32);
    let skin = r.random_range(0.5..0.9f32);
    let dark = r.random_range(0.05..0.3f32);
    let noise = r.random_range(0.0..0.06f32);
    let (fw, fh) = (r.random_range(0.68..0.82f32), r.random_range(0.95..1.1f32));
    let px_unit = 1.0 / scale; // one pixel in face units, for soft edges

    let mouth_c = ((k[11].0 + k[12].0) / 2.0, (k[13].1 + k[14].1) / 2.0);
    let mouth_a = (k[11].0 - k[12].0).abs() / 2.0;
    let mouth_b = (k[14].1 - k[13].1).abs() / 2.0;
    let mut pixels = Vec::with_capacity(SIDE * SIDE);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let p = to_face(x as f32, y as f32);
            let mut v = bg + bg_grad * (x as f32 + y as f32);
            // Face outline: an ellipse.
            let e = ((p.0 / fw).powi(2) + (p.1 / fh).powi(2)).sqrt();
            let on_face = inside((e - 1.0) * fw, px_unit * 2.0);
            v = v * (1.0 - on_face) + skin * on_face;
            // Eyes: dark almond between the corners, darker pupil at the centre.
            for (ctr, a, b) in [(k[0], k[3].0 - k[2].0, 0.06f32), (k[1], k[4].0 - k[5].0, 0.06)] {
                let a = a.abs() / 2.0;
                let d = (((p.0 - ctr.0) / a).powi(2) + ((p.1 - ctr.1) / b).powi(2)).sqrt();
                let w = inside((d - 1.0) * b, px_unit);
                v = v * (1.0 - w) + (skin * 0.45) * w;
                let pupil = inside(((p.0 - ctr.0).powi(2) + (p.1 - ctr.1).powi(2)).sqrt() - 0.045, px_unit);
                v = v * (1.0 - pupil) + dark * pupil;
            }
            // Brows: thick dark strokes between their ends.
            for (a, b) in [(k[6], k[7]), (k[8], k[9])] {
                let w = inside(seg_dist(p, a, b) - 0.035, px_unit);
                v = v * (1.0 - w) + (skin * 0.35) * w;
            }
            // Nose: a ridge down to a darker tip.
            let ridge = inside(seg_dist(p, (0.0, k[0].1 + 0.05), k[10]) - 0.015, px_unit) * 0.15;
            let tip =
                inside(((p.0 - k[10].0).powi(2) + (p.1 - k[10].1).powi(2)).sqrt() - 0.05, px_unit) * 0.3;
            v *= 1.0 - ridge.max(tip);
            // Mouth: a dark ellipse spanning the corners and the lips.
            let d = (((p.0 - mouth_c.0) / mouth_a).powi(2) + ((p.1 - mouth_c.1) / mouth_b).powi(2)).sqrt();
            let w = inside((d - 1.0) * mouth_b, px_unit);
            v = v * (1.0 - w) + (skin * 0.3) * w;
            // Sensor noise.
            let n: f32 = r.random_range(-1.0..1.0f32) + r.random_range(-1.0..1.0f32);
            v += noise * n;
            pixels.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    let mut kp = [0f32; TARGETS];
    for (i, p) in k.iter().enumerate() {
        let (x, y) = to_px(*p);
        kp[2 * i] = x;
        kp[2 * i + 1] = y;
    }
    (pixels, kp)
}

/// `n` faces from `seed`: the same seed gives the same faces on every machine.
pub fn generate(n: usize, seed: u64) -> Faces {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut faces = Faces::kaggle();
    for _ in 0..n {
        let (p, k) = face(&mut r);
        faces.pixels.extend(p);
        faces.keypoints.extend(k);
    }
    faces
}
