//! The solver's `test:` section: the views a face is seen at when the val split,
//! `fkpnet test`, `predict` and `submit` evaluate (test-time augmentation).

use crate::data::augment::View;
use serde::{Deserialize, Serialize};

/// How the val split (and `fkpnet test`, `predict`, `submit`) evaluates.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    /// Average each prediction with the mirrored prediction of the mirrored face.
    #[serde(default)]
    pub flip: bool,
    /// Also predict on the face shifted this many pixels left, right, up and down, move
    /// each prediction back and average them all (0 = off).
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_default")]
    pub shift: f64,
    /// Also predict on the face rotated this many degrees each way (0 = off).
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_default")]
    pub rotate: f64,
    /// Also predict on the face zoomed in and out by this fraction (0.05 = 0.95x and
    /// 1.05x; 0 = off).
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_default")]
    pub scale: f64,
}

impl TestConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.shift >= 0.0 && self.shift <= 24.0) {
            return Err(format!("test.shift must be between 0 and 24 pixels, got {}", self.shift));
        }
        if !(self.rotate >= 0.0 && self.rotate <= 45.0) {
            return Err(format!("test.rotate must be between 0 and 45 degrees, got {}", self.rotate));
        }
        if !(self.scale >= 0.0 && self.scale <= 0.5) {
            return Err(format!("test.scale must be between 0 and 0.5, got {}", self.scale));
        }
        Ok(())
    }

    /// The views a face is seen at, the face as it is first: each of shift, rotate
    /// and scale that is on adds its two or four views.
    pub fn views(&self) -> Vec<View> {
        let mut views = vec![View::IDENTITY];
        let (s, r, z) = (self.shift, self.rotate, self.scale);
        if s > 0.0 {
            for (dx, dy) in [(s, 0.0), (-s, 0.0), (0.0, s), (0.0, -s)] {
                views.push(View { dx, dy, ..View::IDENTITY });
            }
        }
        if r > 0.0 {
            views.extend([r, -r].map(|degrees| View { degrees, ..View::IDENTITY }));
        }
        if z > 0.0 {
            views.extend([1.0 + z, 1.0 - z].map(|scale| View { scale, ..View::IDENTITY }));
        }
        views
    }
}
