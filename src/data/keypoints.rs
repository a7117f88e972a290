//! Keypoint sets, described rather than coded (as MMPose's dataset metadata): the
//! names in target order, the mirror pairs a horizontal flip swaps, the two points
//! whose distance normalises NME, and the NME above which a face counts as a failure.
//! Presets cover the common sets; `data.keypoints` may also define one inline.
//!
//! Sources of the presets: Kaggle's column order (kaggle15); the 300-W / iBUG layout
//! with the 29 pairs of landmarks68's README, equal to MMPose's `300w.py` (ibug68);
//! MMPose's `wflw.py` and `cofw.py` (wflw98, cofw29). Normalisers are the outer eye
//! corners (MMPose's and HRNet's inter-ocular NME); failure thresholds 8% for 300-W,
//! 10% for WFLW and COFW, as the field reports them.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// A keypoint set, checked: every mirror pair in range, each point in at most one.
#[derive(Debug, Clone, PartialEq)]
pub struct KeypointSet {
    /// Names in target order (`p0`, `p1`, ... where none are given).
    pub names: Vec<String>,
    /// Index k of a mirrored face is keypoint `flip[k]` of the original.
    pub flip: Vec<usize>,
    /// NME's reference distance: |p_a - p_b| of the ground truth.
    pub normaliser: Option<[usize; 2]>,
    /// A face with NME above this (a fraction: 0.08 = 8%) is a failure.
    pub failure: f64,
}

/// `data.keypoints`: a preset name, or the set itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum KeypointsConfig {
    Preset(String),
    Inline(InlineKeypoints),
}

// By hand rather than `untagged`, whose error for a mistyped key is only "did not
// match any variant": a name is a preset, a mapping an inline set with its own errors.
impl<'de> Deserialize<'de> for KeypointsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(KeypointsConfig::Preset(s)),
            v @ Value::Mapping(_) => serde_yaml::from_value(v).map(KeypointsConfig::Inline).map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "keypoints: expected a preset name ({}) or a mapping (count, names, mirror, normaliser, failure), got {other:?}",
                PRESETS.join(", ")
            ))),
        }
    }
}

impl Default for KeypointsConfig {
    fn default() -> Self {
        KeypointsConfig::Preset("kaggle15".into())
    }
}

impl KeypointsConfig {
    pub fn is_default(&self) -> bool {
        *self == KeypointsConfig::default()
    }
}

/// An inline keypoint set (`data.keypoints: {count: 5, mirror: [[0, 1], [3, 4]], ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineKeypoints {
    /// Start from a preset and change what is given here (e.g. its failure threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Number of keypoints (may be left out when `names` or `preset` gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Pairs of 0-based indices a horizontal flip swaps; unpaired points stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Vec<[usize; 2]>>,
    /// The two points whose distance normalises NME (e.g. the outer eye corners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normaliser: Option<[usize; 2]>,
    /// Failure threshold of NME, as a fraction (0.08 = 8%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<f64>,
}

pub const PRESETS: &[&str] = &["kaggle15", "ibug68", "wflw98", "cofw29"];

/// Kaggle's 15 keypoints in its column order; each has an `_x` and a `_y` column.
/// "left" is the person's left (the image's right).
pub const KAGGLE15: [&str; 15] = [
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
];

const KAGGLE15_PAIRS: &[[usize; 2]] = &[[0, 1], [2, 4], [3, 5], [6, 8], [7, 9], [11, 12]];

const IBUG68_PAIRS: &[[usize; 2]] = &[
    [0, 16],
    [1, 15],
    [2, 14],
    [3, 13],
    [4, 12],
    [5, 11],
    [6, 10],
    [7, 9],
    [17, 26],
    [18, 25],
    [19, 24],
    [20, 23],
    [21, 22],
    [31, 35],
    [32, 34],
    [36, 45],
    [37, 44],
    [38, 43],
    [39, 42],
    [40, 47],
    [41, 46],
    [48, 54],
    [49, 53],
    [50, 52],
    [55, 59],
    [56, 58],
    [60, 64],
    [61, 63],
    [65, 67],
];

const WFLW98_PAIRS: &[[usize; 2]] = &[
    [0, 32],
    [1, 31],
    [2, 30],
    [3, 29],
    [4, 28],
    [5, 27],
    [6, 26],
    [7, 25],
    [8, 24],
    [9, 23],
    [10, 22],
    [11, 21],
    [12, 20],
    [13, 19],
    [14, 18],
    [15, 17],
    [33, 46],
    [34, 45],
    [35, 44],
    [36, 43],
    [37, 42],
    [38, 50],
    [39, 49],
    [40, 48],
    [41, 47],
    [55, 59],
    [56, 58],
    [60, 72],
    [61, 71],
    [62, 70],
    [63, 69],
    [64, 68],
    [65, 75],
    [66, 74],
    [67, 73],
    [76, 82],
    [77, 81],
    [78, 80],
    [83, 87],
    [84, 86],
    [88, 92],
    [89, 91],
    [93, 95],
    [96, 97],
];

const COFW29_PAIRS: &[[usize; 2]] =
    &[[0, 1], [2, 3], [4, 6], [5, 7], [8, 9], [10, 11], [12, 14], [13, 15], [16, 17], [18, 19], [22, 23]];

/// (count, names, pairs, normaliser, failure) of a preset.
fn preset(
    name: &str,
) -> Option<(usize, Option<&'static [&'static str]>, &'static [[usize; 2]], [usize; 2], f64)> {
    Some(match name {
        // Kaggle's outer eye corners (3, 5), the inter-ocular distance of the other sets.
        "kaggle15" => (15, Some(&KAGGLE15[..]), KAGGLE15_PAIRS, [3, 5], 0.08),
        "ibug68" => (68, None, IBUG68_PAIRS, [36, 45], 0.08),
        "wflw98" => (98, None, WFLW98_PAIRS, [60, 72], 0.10),
        "cofw29" => (29, None, COFW29_PAIRS, [8, 9], 0.10),
        _ => return None,
    })
}

impl KeypointSet {
    pub fn kaggle15() -> KeypointSet {
        KeypointSet::from_config(&KeypointsConfig::default()).expect("the kaggle15 preset is valid")
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Number of regression targets: x and y of each keypoint.
    pub fn targets(&self) -> usize {
        2 * self.len()
    }

    /// The mirror pairs (a < b), from the flip permutation.
    pub fn pairs(&self) -> Vec<[usize; 2]> {
        self.flip.iter().enumerate().filter(|(a, b)| a < *b).map(|(a, b)| [a, *b]).collect()
    }

    /// Which side of the face keypoint k is on for drawing: 0 first of a pair, 1 the
    /// second, 2 on the midline (mirrors onto itself).
    pub fn side(&self, k: usize) -> u8 {
        match self.flip[k] {
            f if f == k => 2,
            f if k < f => 0,
            _ => 1,
        }
    }

    pub fn from_config(cfg: &KeypointsConfig) -> Result<KeypointSet, String> {
        let inline = match cfg {
            KeypointsConfig::Preset(p) => InlineKeypoints {
                preset: Some(p.clone()),
                count: None,
                names: None,
                mirror: None,
                normaliser: None,
                failure: None,
            },
            KeypointsConfig::Inline(i) => i.clone(),
        };
        let base = match &inline.preset {
            Some(p) => Some(preset(p).ok_or_else(|| {
                let hint = crate::config::schema::did_you_mean(p, PRESETS)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                format!("data.keypoints: unknown preset `{p}`{hint}; presets: {}", PRESETS.join(", "))
            })?),
            None => None,
        };
        let count = inline
            .count
            .or(inline.names.as_ref().map(Vec::len))
            .or(base.map(|b| b.0))
            .ok_or("data.keypoints: give a preset, a `count` or the `names` of the keypoints")?;
        if count == 0 {
            return Err("data.keypoints: count must be at least 1".into());
        }
        let names: Vec<String> = match (&inline.names, base.and_then(|b| b.1)) {
            (Some(n), _) => n.clone(),
            (None, Some(n)) if n.len() == count => n.iter().map(|s| s.to_string()).collect(),
            _ => (0..count).map(|k| format!("p{k}")).collect(),
        };
        if names.len() != count {
            return Err(format!("data.keypoints: {} names for count {count}", names.len()));
        }
        let pairs: Vec<[usize; 2]> = match (&inline.mirror, base) {
            (Some(m), _) => m.clone(),
            (None, Some(b)) if b.0 == count => b.2.to_vec(),
            _ => Vec::new(),
        };
        let mut flip: Vec<usize> = (0..count).collect();
        for &[a, b] in &pairs {
            if a >= count || b >= count {
                return Err(format!(
                    "data.keypoints.mirror: pair [{a}, {b}] is out of range (keypoints are 0 to {})",
                    count - 1
                ));
            }
            if a == b {
                return Err(format!("data.keypoints.mirror: pair [{a}, {b}] mirrors a point onto itself; leave such points out"));
            }
            for p in [a, b] {
                if flip[p] != p {
                    return Err(format!(
                        "data.keypoints.mirror: point {p} is in two pairs; a mirror pair swaps two points and each point has at most one partner"
                    ));
                }
            }
            flip.swap(a, b);
        }
        let normaliser = match (inline.normaliser, base) {
            (Some(n), _) => Some(n),
            (None, Some(b)) if b.0 == count => Some(b.3),
            _ => None,
        };
        if let Some([a, b]) = normaliser {
            if a >= count || b >= count || a == b {
                return Err(format!(
                    "data.keypoints.normaliser: [{a}, {b}] must be two different keypoints of 0 to {}",
                    count - 1
                ));
            }
        }
        let failure = inline.failure.or(base.map(|b| b.4)).unwrap_or(0.08);
        if !(failure > 0.0 && failure <= 1.0) {
            return Err(format!(
                "data.keypoints.failure is a fraction of the normaliser in (0, 1], got {failure}"
            ));
        }
        Ok(KeypointSet { names, flip, normaliser, failure })
    }

    /// The set as resolved config (every field explicit).
    pub fn to_value(&self) -> Value {
        serde_yaml::to_value(InlineKeypoints {
            preset: None,
            count: Some(self.len()),
            names: Some(self.names.clone()),
            mirror: Some(self.pairs()),
            normaliser: self.normaliser,
            failure: Some(self.failure),
        })
        .expect("plain data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(yaml: &str) -> Result<KeypointSet, String> {
        KeypointSet::from_config(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn presets_have_their_sizes_and_symmetric_pairs() {
        for (p, n, pairs) in [("kaggle15", 15, 6), ("ibug68", 68, 29), ("wflw98", 98, 44), ("cofw29", 29, 11)]
        {
            let k = inline(p).unwrap();
            assert_eq!((k.len(), k.pairs().len()), (n, pairs), "{p}");
            // A flip twice is the identity: the pairs are symmetric.
            assert!(k.flip.iter().enumerate().all(|(i, &f)| k.flip[f] == i), "{p}");
        }
        let k = KeypointSet::kaggle15();
        assert_eq!(k.flip, [1, 0, 4, 5, 2, 3, 8, 9, 6, 7, 10, 12, 11, 13, 14]);
        assert_eq!(k.normaliser, Some([3, 5]));
        let ibug = inline("ibug68").unwrap();
        assert_eq!((ibug.normaliser, ibug.failure, ibug.names[36].as_str()), (Some([36, 45]), 0.08, "p36"));
        assert_eq!(ibug.flip[36], 45);
        assert_eq!(inline("wflw98").unwrap().failure, 0.10);
    }

    #[test]
    fn inline_sets_and_bad_ones() {
        let k = inline("{count: 5, mirror: [[0, 1], [3, 4]], normaliser: [0, 1]}").unwrap();
        assert_eq!(k.flip, [1, 0, 2, 4, 3]);
        assert_eq!((k.side(0), k.side(1), k.side(2)), (0, 1, 2));
        let k = inline("{preset: ibug68, failure: 0.1}").unwrap();
        assert_eq!((k.len(), k.failure, k.pairs().len()), (68, 0.1, 29));
        let e = inline("{count: 5, mirror: [[0, 5]]}").unwrap_err();
        assert!(e.contains("out of range") && e.contains("0 to 4"), "{e}");
        let e = inline("{count: 5, mirror: [[0, 1], [1, 2]]}").unwrap_err();
        assert!(e.contains("point 1 is in two pairs"), "{e}");
        let e = inline("ibug86").unwrap_err();
        assert!(e.contains("unknown preset `ibug86`") && e.contains("ibug68"), "{e}");
        assert!(inline("{names: [a, b], count: 3}").unwrap_err().contains("2 names for count 3"));
        assert!(inline("{count: 4, normaliser: [1, 1]}").unwrap_err().contains("two different"));
        let e = serde_yaml::from_str::<KeypointsConfig>("{count: 4, mirrors: []}").unwrap_err().to_string();
        assert!(e.contains("unknown field `mirrors`") && e.contains("mirror"), "{e}");
    }
}
