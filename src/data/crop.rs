//! How a face gets into the net's input: a square box in the image's pixels (the
//! whole image, the annotation's face box, or the annotated keypoints' extent), grown
//! by a margin, cut out (black where it leaves the image) and resized to the input.
//! Keypoints map into the crop and back through the same box.

use crate::config::solver::{CropConfig, CropFrom};
pub use fkpnet_face::{cut, open, CropBox};

/// The crop of a `width` x `height` image: `cfg.from` gives the box (its longer side
/// makes it square, about its centre), `cfg.margin` grows it (0.25 = 1.25 times the
/// side). `points` are the face's keypoints, `bbox` its annotated box `[x, y, w, h]`.
pub fn crop_box(
    cfg: &CropConfig,
    width: u32,
    height: u32,
    points: &[f32],
    bbox: Option<[f32; 4]>,
) -> Result<CropBox, String> {
    let (cx, cy, side) = match cfg.from {
        CropFrom::Whole => (width as f64 / 2.0, height as f64 / 2.0, width.max(height) as f64),
        CropFrom::Box => {
            let [x, y, w, h] = bbox.ok_or(
                "crop from: box needs a face box in the annotations (COCO's bbox, or the csv columns \
                 center and scale); use from: landmarks or whole",
            )?;
            if !(w > 0.0 && h > 0.0) {
                return Err(format!("the face box [{x}, {y}, {w}, {h}] has no area"));
            }
            ((x + w / 2.0) as f64, (y + h / 2.0) as f64, w.max(h) as f64)
        }
        CropFrom::Landmarks => {
            let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
            for p in points.chunks(2).filter(|p| !p[0].is_nan() && !p[1].is_nan()) {
                for a in 0..2 {
                    lo[a] = lo[a].min(p[a]);
                    hi[a] = hi[a].max(p[a]);
                }
            }
            if lo[0] > hi[0] {
                return Err(
                    "crop from: landmarks needs annotated keypoints; an unlabelled face needs a box \
                     (--box, or from: whole)"
                        .into(),
                );
            }
            // Pixel extents: a point is a pixel wide.
            let (w, h) = ((hi[0] - lo[0] + 1.0) as f64, (hi[1] - lo[1] + 1.0) as f64);
            (((lo[0] + hi[0]) / 2.0 + 0.5) as f64, ((lo[1] + hi[1]) / 2.0 + 0.5) as f64, w.max(h))
        }
    };
    Ok(fkpnet_face::square(cx, cy, side, cfg.margin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(from: CropFrom, margin: f64) -> CropConfig {
        CropConfig { from, margin }
    }

    #[test]
    fn boxes_are_square_about_their_centre_and_grow_by_the_margin() {
        // A 200x100 image whole: the 200-pixel square centred on it (50 px above and below).
        let b = crop_box(&cfg(CropFrom::Whole, 0.0), 200, 100, &[], None).unwrap();
        assert_eq!(b, CropBox { left: 0, top: -50, side: 200 });
        // Keypoints spanning x 10..29, y 40..49: 20 px wide, centred on (20, 45); 1.5x.
        let pts = [10.0, 40.0, 29.0, 49.0, f32::NAN, f32::NAN];
        let b = crop_box(&cfg(CropFrom::Landmarks, 0.5), 200, 100, &pts, None).unwrap();
        assert_eq!(b, CropBox { left: 5, top: 30, side: 30 });
        let b = crop_box(&cfg(CropFrom::Box, 0.0), 200, 100, &[], Some([10.0, 20.0, 40.0, 30.0])).unwrap();
        assert_eq!(b, CropBox { left: 10, top: 15, side: 40 });
        assert!(crop_box(&cfg(CropFrom::Box, 0.0), 10, 10, &[], None)
            .unwrap_err()
            .contains("needs a face box"));
        let e = crop_box(&cfg(CropFrom::Landmarks, 0.0), 10, 10, &[f32::NAN; 4], None).unwrap_err();
        assert!(e.contains("--box"), "{e}");
    }
}
