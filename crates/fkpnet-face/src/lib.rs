//! The image side of a face, shared by fkpnet and its libtorch-free predictor
//! fkpnet-infer: a square box in an image's pixels, the face cut out of it at the
//! net's input size (black where it leaves the image), keypoints mapped into the
//! crop and back, images read by their content, and faces found in photos (a face
//! detector, and the framing that turns its boxes into the crops a net was trained on).

mod detect;
mod framing;
pub use detect::{no_face_hint, Detection, FaceDetector, MIN_FACE, MIN_SCORE};
pub use framing::{matching, Framing};

use image::{DynamicImage, GenericImageView};
use serde::{Deserialize, Serialize};

/// A square box of whole pixels in an image: `side` pixels from (`left`, `top`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CropBox {
    pub left: i64,
    pub top: i64,
    pub side: i64,
}

impl CropBox {
    /// An image coordinate (0-based, pixel centres at whole numbers) in the crop's
    /// pixels when the crop is resized to `size` pixels a side.
    pub fn to_crop(&self, v: f32, origin: i64, size: usize) -> f32 {
        (v + 0.5 - origin as f32) * size as f32 / self.side as f32 - 0.5
    }

    /// The inverse of `to_crop`.
    pub fn to_image(&self, c: f32, origin: i64, size: usize) -> f32 {
        (c + 0.5) * self.side as f32 / size as f32 + origin as f32 - 0.5
    }

    /// Keypoints `[x0, y0, ...]` of the image in the crop's pixels (NaN stays NaN).
    pub fn points_to_crop(&self, points: &[f32], size: usize) -> Vec<f32> {
        points
            .chunks(2)
            .flat_map(|p| [self.to_crop(p[0], self.left, size), self.to_crop(p[1], self.top, size)])
            .collect()
    }

    /// Keypoints in the crop's pixels back in the image's.
    pub fn points_to_image(&self, points: &[f32], size: usize) -> Vec<f32> {
        points
            .chunks(2)
            .flat_map(|p| [self.to_image(p[0], self.left, size), self.to_image(p[1], self.top, size)])
            .collect()
    }
}

/// The square box of `side` pixels (grown by `margin`: 0.25 = 1.25 times) about the
/// centre (`cx`, `cy`), in whole pixels.
pub fn square(cx: f64, cy: f64, side: f64, margin: f64) -> CropBox {
    let side = (side * (1.0 + margin)).round().max(1.0);
    CropBox {
        left: (cx - side / 2.0).round() as i64,
        top: (cy - side / 2.0).round() as i64,
        side: side as i64,
    }
}

/// A whole `width` x `height` image as a square box: its longer side, centred.
pub fn whole(width: u32, height: u32, margin: f64) -> CropBox {
    square(width as f64 / 2.0, height as f64 / 2.0, width.max(height) as f64, margin)
}

/// A face box `[x, y, w, h]` as the square box about its centre, its longer side.
pub fn of_box(bbox: [f32; 4], margin: f64) -> Result<CropBox, String> {
    let [x, y, w, h] = bbox;
    if !(w > 0.0 && h > 0.0) {
        return Err(format!("the face box [{x}, {y}, {w}, {h}] has no area"));
    }
    Ok(square((x + w / 2.0) as f64, (y + h / 2.0) as f64, w.max(h) as f64, margin))
}

/// A face box a user gives for a `width` x `height` photo, as `of_box` grows it, or why it
/// cannot be one (it lies outside the photo, or has no area). `fkpnet predict --box` and
/// `fkpnet-infer --box` say the same.
pub fn user_box(width: u32, height: u32, bbox: [f32; 4], margin: f64) -> Result<CropBox, String> {
    let [x, y, w, h] = bbox;
    if x >= width as f32 || y >= height as f32 || x + w <= 0.0 || y + h <= 0.0 {
        return Err(format!("the box {x},{y},{w},{h} lies outside the {width}x{height} image"));
    }
    of_box(bbox, margin)
}

/// The box of `img` resized to `size` x `size`, as `channels` planes (1: grey, 3:
/// RGB) of row-major bytes; black outside the image.
pub fn cut(img: &DynamicImage, b: &CropBox, size: usize, channels: usize) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let side = b.side as u32;
    let inside = b.left >= 0 && b.top >= 0 && b.left + b.side <= w as i64 && b.top + b.side <= h as i64;
    let filter = image::imageops::FilterType::Triangle;
    let s = size as u32;
    let plane = size * size;
    if channels == 1 {
        let grey = img.to_luma8();
        let boxed = if inside {
            image::imageops::crop_imm(&grey, b.left as u32, b.top as u32, side, side).to_image()
        } else {
            let mut canvas = image::GrayImage::new(side, side);
            image::imageops::overlay(&mut canvas, &grey, -b.left, -b.top);
            canvas
        };
        image::imageops::resize(&boxed, s, s, filter).into_raw()
    } else {
        let rgb = img.to_rgb8();
        let boxed = if inside {
            image::imageops::crop_imm(&rgb, b.left as u32, b.top as u32, side, side).to_image()
        } else {
            let mut canvas = image::RgbImage::new(side, side);
            image::imageops::overlay(&mut canvas, &rgb, -b.left, -b.top);
            canvas
        };
        let small = image::imageops::resize(&boxed, s, s, filter).into_raw();
        // Interleaved RGB -> planes R, G, B (the net's CxHxW).
        let mut out = vec![0u8; 3 * plane];
        for (i, px) in small.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = px[c];
            }
        }
        out
    }
}

/// Read an image by its content, whatever its file name says.
pub fn open(path: &std::path::Path) -> anyhow::Result<DynamicImage> {
    use anyhow::Context;
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .map_err(|e| anyhow::anyhow!("{}: not a readable image ({e})", path.display()))?;
    if img.width() == 0 || img.height() == 0 {
        anyhow::bail!("{}: empty image", path.display());
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_map_into_the_crop_and_back() {
        let b = CropBox { left: 10, top: -20, side: 50 };
        // Pixel 10 (the box's first column) has its centre half a crop pixel in at 100/50 scale.
        let c = b.points_to_crop(&[10.0, -20.0, 34.5, 4.5], 100);
        assert_eq!(c, vec![0.5, 0.5, 49.5, 49.5]);
        assert_eq!(b.points_to_image(&c, 100), vec![10.0, -20.0, 34.5, 4.5]);
    }

    #[test]
    fn boxes_are_square_about_their_centre() {
        assert_eq!(whole(200, 100, 0.0), CropBox { left: 0, top: -50, side: 200 });
        assert_eq!(of_box([10.0, 20.0, 40.0, 30.0], 0.0).unwrap(), CropBox { left: 10, top: 15, side: 40 });
        assert_eq!(of_box([10.0, 20.0, 40.0, 30.0], 0.5).unwrap(), CropBox { left: 0, top: 5, side: 60 });
        assert!(of_box([0.0, 0.0, 0.0, 5.0], 0.0).unwrap_err().contains("no area"));
        assert_eq!(user_box(100, 80, [10.0, 20.0, 40.0, 30.0], 0.5), of_box([10.0, 20.0, 40.0, 30.0], 0.5));
        assert!(user_box(100, 80, [90.0, 70.0, 40.0, 30.0], 0.0).is_ok(), "partly inside is a face");
        for outside in
            [[100.0, 0.0, 5.0, 5.0], [0.0, 80.0, 5.0, 5.0], [-5.0, 0.0, 5.0, 5.0], [0.0, -9.0, 5.0, 9.0]]
        {
            let e = user_box(100, 80, outside, 0.0).unwrap_err();
            assert!(e.contains("lies outside the 100x80 image"), "{outside:?}: {e}");
        }
    }

    #[test]
    fn cut_pads_outside_the_image_and_keeps_colour_planes() {
        // A 4x2 image: left half red, right half blue.
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(4, 2, |x, _| {
            if x < 2 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        }));
        let b = whole(4, 2, 0.0);
        assert_eq!(b, CropBox { left: 0, top: -1, side: 4 });
        let px = cut(&img, &b, 4, 3);
        let (r, g, bl) = (&px[0..16], &px[16..32], &px[32..48]);
        assert_eq!(&r[0..4], &[0, 0, 0, 0], "the padded top row is black");
        assert_eq!(r[4], 255, "red plane, left half");
        assert_eq!(bl[7], 255, "blue plane, right half");
        assert!(g.iter().all(|&v| v == 0));
        assert_eq!(cut(&img, &b, 4, 1).len(), 16);
    }
}
