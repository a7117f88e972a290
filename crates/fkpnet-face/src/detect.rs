//! Faces found in a photo: SeetaFace's frontal face detector (Wu et al., a
//! funnel-structured cascade) through rustface, pure Rust, with its model built into
//! the binary (model/seeta_fd_frontal_v1.0.bin, BSD-2, as rustface 0.1.7 ships it),
//! so neither fkpnet nor fkpnet-infer needs a download or a native library to find a
//! face.

use image::DynamicImage;
use serde::{Deserialize, Serialize};

static MODEL: &[u8] = include_bytes!("../model/seeta_fd_frontal_v1.0.bin");

/// The detector's smallest face: SeetaFace's window is 20 px, and on a face this
/// small a keypoint net has nothing to see anyway.
pub const MIN_FACE: u32 = 20;

/// The least score for a face by default: SeetaFace's own demo threshold (on the
/// training frames of ../shared/data/landmarks68 it keeps 99% of the faces, with 16
/// other detections in 3,593 frames).
pub const MIN_SCORE: f64 = 2.0;

/// What a user can do about images without a face found (fkpnet predict and
/// fkpnet-infer say the same).
pub fn no_face_hint(min_score: f64) -> String {
    format!(
        "SeetaFace's frontal face detector, faces of {MIN_FACE} px and more, score {min_score} or more: \
         --min-score lowers it. Give a face's box with --box x,y,w,h, or --whole for images that \
         are already faces cut out as the model's training faces are"
    )
}

/// A face the detector found: its box in the image's pixels and its score (higher is
/// surer; SeetaFace's scores run from about 2 to 30 on real faces).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub score: f64,
}

impl Detection {
    pub fn centre(&self) -> (f64, f64) {
        ((self.x + self.w / 2.0) as f64, (self.y + self.h / 2.0) as f64)
    }

    /// The box's side (SeetaFace's boxes are square; the mean if one is not).
    pub fn side(&self) -> f64 {
        ((self.w + self.h) / 2.0) as f64
    }
}

pub struct FaceDetector {
    inner: Box<dyn rustface::Detector>,
}

impl Default for FaceDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl FaceDetector {
    /// SeetaFace's detector with the settings its authors' demo uses (score 2.0,
    /// pyramid 0.8, step 4), faces from `MIN_FACE` pixels up.
    pub fn new() -> Self {
        let model = rustface::read_model(std::io::Cursor::new(MODEL)).expect("the built-in model reads");
        let mut inner = rustface::create_detector_with_model(model);
        inner.set_min_face_size(MIN_FACE);
        inner.set_score_thresh(2.0);
        inner.set_pyramid_scale_factor(0.8);
        inner.set_slide_window_step(4, 4);
        FaceDetector { inner }
    }

    /// The faces in `img`, best score first. An image smaller than the detector's
    /// window has none.
    pub fn detect(&mut self, img: &DynamicImage) -> Vec<Detection> {
        let grey = img.to_luma8();
        if grey.width() < MIN_FACE || grey.height() < MIN_FACE {
            return Vec::new();
        }
        let data = rustface::ImageData::new(grey.as_raw(), grey.width(), grey.height());
        let mut found: Vec<Detection> = self
            .inner
            .detect(&data)
            .iter()
            .map(|f| {
                let b = f.bbox();
                Detection {
                    x: b.x() as f32,
                    y: b.y() as f32,
                    w: b.width() as f32,
                    h: b.height() as f32,
                    score: f.score(),
                }
            })
            .collect();
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
    }

    #[test]
    fn finds_the_annotated_face_of_a_frame_and_none_in_a_blank_or_tiny_image() {
        let dir = shared().join("landmarks68-mini/train");
        let text = std::fs::read_to_string(dir.join("keypoints.csv")).unwrap();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
        let pts: Vec<f32> = row[1..].iter().map(|v| v.parse().unwrap()).collect();
        let img = crate::open(&dir.join(row[0])).unwrap();
        let mut det = FaceDetector::new();
        let found = det.detect(&img);
        assert!(!found.is_empty(), "{}", row[0]);
        // The best face holds the annotated nose tip (point 30) and is about the
        // landmarks' size.
        let best = found[0];
        let (nx, ny) = (pts[60], pts[61]);
        assert!(
            nx > best.x && nx < best.x + best.w && ny > best.y && ny < best.y + best.h,
            "{best:?} {nx},{ny}"
        );
        let width = pts.chunks(2).map(|p| p[0]).fold(f32::MIN, f32::max)
            - pts.chunks(2).map(|p| p[0]).fold(f32::MAX, f32::min);
        assert!(best.w > 0.6 * width && best.w < 1.6 * width, "{best:?} vs landmarks {width} px wide");
        assert!(found.windows(2).all(|w| w[0].score >= w[1].score), "best first");
        let blank = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(200, 200, image::Luma([128])));
        assert!(det.detect(&blank).is_empty());
        let tiny = DynamicImage::ImageLuma8(image::GrayImage::new(10, 30));
        assert!(det.detect(&tiny).is_empty(), "smaller than the detector's window");
    }
}
