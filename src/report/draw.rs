//! Keypoints drawn onto images: the two sides of each mirror pair in two colours
//! (for Kaggle's set: the person's left in green, right in red), points on the
//! midline (nose tip, lips, chin) in blue.

use crate::data::KeypointSet;
use image::{Rgb, RgbImage};

fn colour(set: &KeypointSet, k: usize) -> Rgb<u8> {
    match set.side(k) {
        0 => Rgb([40, 220, 60]),
        1 => Rgb([235, 50, 50]),
        _ => Rgb([60, 120, 255]),
    }
}

/// Draw the keypoints of `set` (pixel coordinates of `img`; NaN = skip) as small discs.
pub fn keypoints(img: &mut RgbImage, kp: &[f32], set: &KeypointSet) {
    let r = (img.width().min(img.height()) as f32 / 60.0).max(1.2);
    for k in 0..set.len() {
        let (x, y) = (kp[2 * k], kp[2 * k + 1]);
        if x.is_nan() || y.is_nan() {
            continue;
        }
        let c = colour(set, k);
        let ri = r.ceil() as i64;
        for dy in -ri..=ri {
            for dx in -ri..=ri {
                if ((dx * dx + dy * dy) as f32) <= r * r {
                    let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
                    if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                        img.put_pixel(px as u32, py as u32, c);
                    }
                }
            }
        }
    }
}

/// A 96x96 grey face as an RGB image.
pub fn face_image(pixels: &[u8]) -> RgbImage {
    RgbImage::from_fn(96, 96, |x, y| {
        let v = pixels[(y * 96 + x) as usize];
        Rgb([v, v, v])
    })
}
