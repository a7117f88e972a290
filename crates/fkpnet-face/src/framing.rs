//! How a model's training faces sit in the detector's boxes. A net sees faces framed
//! as its training data framed them (Kaggle's 96x96 crops, a landmark extent grown by
//! a margin, a dataset's own face box), and a detector's box is none of these. So the
//! framing is measured once per model: the detector runs on training images, each
//! training crop is expressed in its face's detector box (centre offset and side, in
//! box sides), and the medians become the rule that turns a detection in a new photo
//! into the crop the net expects.

use crate::{square, CropBox, Detection};
use serde::{Deserialize, Serialize};

/// The training crop of a face relative to its detector box: centre `dx`, `dy` box
/// sides right and down of the box's centre, side `scale` box sides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framing {
    pub dx: f64,
    pub dy: f64,
    pub scale: f64,
}

impl Framing {
    /// The crop a net trained with this framing expects for a detected face.
    pub fn crop(&self, d: &Detection) -> CropBox {
        let (cx, cy) = d.centre();
        let s = d.side();
        square(cx + self.dx * s, cy + self.dy * s, self.scale * s, 0.0)
    }

    /// One training face's crop in its detector box's terms.
    pub fn of(d: &Detection, crop: &CropBox) -> Framing {
        let (cx, cy) = d.centre();
        let s = d.side();
        let half = crop.side as f64 / 2.0;
        Framing {
            dx: (crop.left as f64 + half - cx) / s,
            dy: (crop.top as f64 + half - cy) / s,
            scale: crop.side as f64 / s,
        }
    }

    /// The median of each of the faces' framings (robust to the odd misplaced box),
    /// or None for no faces.
    pub fn median(faces: &[Framing]) -> Option<Framing> {
        let med = |f: fn(&Framing) -> f64| {
            let mut v: Vec<f64> = faces.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        (!faces.is_empty()).then(|| Framing { dx: med(|f| f.dx), dy: med(|f| f.dy), scale: med(|f| f.scale) })
    }
}

/// The detection that is the face a training crop was cut for: its centre inside the
/// crop and its side between a quarter and twice the crop's (so a face in the
/// background is not taken for it); the nearest to the crop's centre.
pub fn matching(found: &[Detection], crop: &CropBox) -> Option<Detection> {
    let side = crop.side as f64;
    let (ccx, ccy) = (crop.left as f64 + side / 2.0, crop.top as f64 + side / 2.0);
    let dist = |d: &Detection| {
        let (cx, cy) = d.centre();
        (cx - ccx).hypot(cy - ccy)
    };
    found
        .iter()
        .filter(|d| {
            let (cx, cy) = d.centre();
            (cx - ccx).abs() <= side / 2.0
                && (cy - ccy).abs() <= side / 2.0
                && d.side() >= side / 4.0
                && d.side() <= side * 2.0
        })
        .min_by(|a, b| dist(a).total_cmp(&dist(b)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, side: f32) -> Detection {
        Detection { x, y, w: side, h: side, score: 10.0 }
    }

    #[test]
    fn a_framing_measured_on_one_face_reproduces_its_crop() {
        // A crop 120 px from (40, 50); the detector's box 100 px from (45, 40).
        let crop = CropBox { left: 40, top: 50, side: 120 };
        let d = det(45.0, 40.0, 100.0);
        let f = Framing::of(&d, &crop);
        assert_eq!(f, Framing { dx: 0.05, dy: 0.2, scale: 1.2 });
        assert_eq!(f.crop(&d), crop);
        // The same framing on a face twice the size elsewhere: twice the crop, same place in it.
        assert_eq!(f.crop(&det(300.0, 10.0, 200.0)), CropBox { left: 290, top: 30, side: 240 });
    }

    #[test]
    fn the_median_ignores_an_outlier_and_none_is_no_faces() {
        let f = |s| Framing { dx: 0.0, dy: 0.1, scale: s };
        assert_eq!(Framing::median(&[f(1.0), f(1.2), f(9.0)]).unwrap().scale, 1.2);
        assert_eq!(Framing::median(&[f(1.0), f(1.2)]).unwrap().scale, 1.1);
        assert!(Framing::median(&[]).is_none());
    }

    #[test]
    fn the_matching_detection_is_the_face_in_the_crop_not_one_beside_it() {
        let crop = CropBox { left: 100, top: 100, side: 100 };
        let face = det(110.0, 105.0, 90.0);
        let background = det(0.0, 0.0, 60.0);
        let tiny = det(145.0, 145.0, 10.0);
        assert_eq!(matching(&[background, tiny, face], &crop), Some(face));
        assert_eq!(matching(&[background, tiny], &crop), None);
    }
}
