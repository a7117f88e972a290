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

/// Draw the keypoints of `set` (pixel coordinates of `img`; NaN = skip) as small discs,
/// sized to the face (`face`: its side in pixels), so that a face among many in a
/// large photo gets points its own size.
pub fn keypoints(img: &mut RgbImage, kp: &[f32], set: &KeypointSet, face: f32) {
    let r = (face / 60.0).max(1.2);
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

/// A face's pixels (CxHxW planes, grey or RGB) as an RGB image.
pub fn face_image(pixels: &[u8], [c, h, w]: [usize; 3]) -> RgbImage {
    let plane = h * w;
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        match c {
            3 => Rgb([pixels[i], pixels[plane + i], pixels[2 * plane + i]]),
            _ => Rgb([pixels[i]; 3]),
        }
    })
}

/// A square outline (the box a face was cut out of), clipped to the image.
pub fn square(img: &mut RgbImage, left: i64, top: i64, side: i64) {
    let c = Rgb([255, 210, 0]);
    let (w, h) = (img.width() as i64, img.height() as i64);
    let thick = (side / 150).max(1);
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            img.put_pixel(x as u32, y as u32, c);
        }
    };
    for t in 0..thick {
        for i in 0..side {
            put(left + i, top + t);
            put(left + i, top + side - 1 - t);
            put(left + t, top + i);
            put(left + side - 1 - t, top + i);
        }
    }
}
