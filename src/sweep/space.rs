//! The search space: `--set KEY=V1,V2` axes and their grid, and the run names
//! they give.

use anyhow::{bail, Result};

/// One `--set KEY=V1,V2,...`: the key and its values (commas inside [], {} or () belong
/// to the value, so `--set stepvalue=[100,200],[300]` is two values and
/// `base_lr=loguniform(1e-4,1e-2)` one).
pub fn parse_axis(s: &str) -> Result<(String, Vec<String>)> {
    let Some((key, values)) = s.split_once('=') else {
        bail!("--set {s}: expected KEY=V1,V2,... (e.g. --set base_lr=1e-3,3e-4)");
    };
    let out = split_top_level(values);
    if key.trim().is_empty() || out.iter().any(|v| v.is_empty()) {
        bail!("--set {s}: expected KEY=V1,V2,... with no empty values");
    }
    Ok((key.trim().to_string(), out))
}

/// `a, [b,c], f(d,e)` -> `a`, `[b,c]`, `f(d,e)`: commas inside brackets belong to a value.
fn split_top_level(values: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in values.chars() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_string());
    out
}

/// Every combination, first axis slowest: each a list of `KEY=VALUE` overrides.
pub fn grid(axes: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for (key, values) in axes {
        out = out
            .into_iter()
            .flat_map(|sets: Vec<String>| {
                values.iter().map(move |v| {
                    let mut s = sets.clone();
                    s.push(format!("{key}={v}"));
                    s
                })
            })
            .collect();
    }
    out
}

/// `lenet_best-base_lr=3e-4-num_output=256`: the prefix and each key's last part.
/// With no swept keys, the prefix alone.
pub fn run_name(prefix: &str, sets: &[String]) -> String {
    if sets.is_empty() {
        return prefix.to_string();
    }
    let parts: Vec<String> = sets
        .iter()
        .map(|s| {
            let (k, v) = s.split_once('=').unwrap_or((s, ""));
            let k = k.rsplit('.').next().unwrap_or(k);
            let v: String = v
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || ".-+_".contains(c) { c } else { '_' })
                .collect();
            format!("{k}={v}")
        })
        .collect();
    format!("{prefix}-{}", parts.join("-"))
}

/// A distribution to sample a key from in a random search (`--trials N`), as Ray
/// Tune and Optuna name them.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    /// Integers from a to b, both included.
    Int(i64, i64),
    Choice(Vec<String>),
}

const DISTS: &str = "uniform(a,b), loguniform(a,b), int(a,b) or choice(v1,v2,...)";

impl Dist {
    /// `loguniform(1e-4,1e-2)` and friends; None for a plain value. A value shaped
    /// `name(...)` with an unknown name is an error, not a string to train with.
    pub fn parse(key: &str, value: &str) -> Result<Option<Dist>> {
        let Some((name, rest)) = value.split_once('(') else { return Ok(None) };
        let Some(inner) = rest.strip_suffix(')') else { return Ok(None) };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Ok(None);
        }
        let args = split_top_level(inner);
        let what = format!("--set {key}={value}");
        let two = |kind: &str| -> Result<(f64, f64)> {
            let [a, b] = args.as_slice() else { bail!("{what}: {kind} takes two numbers, {kind}(low,high)") };
            let num =
                |s: &str| s.parse::<f64>().map_err(|_| anyhow::anyhow!("{what}: `{s}` is not a number"));
            let (a, b) = (num(a)?, num(b)?);
            if !(a < b) {
                bail!("{what}: the range must have low < high (got {a} and {b})");
            }
            Ok((a, b))
        };
        Ok(Some(match name {
            "uniform" => {
                let (a, b) = two("uniform")?;
                Dist::Uniform(a, b)
            }
            "loguniform" => {
                let (a, b) = two("loguniform")?;
                if a <= 0.0 {
                    bail!("{what}: loguniform needs a positive low end (got {a}); use uniform for ranges through 0");
                }
                Dist::LogUniform(a, b)
            }
            "int" => {
                let (a, b) = two("int")?;
                if a.fract() != 0.0 || b.fract() != 0.0 {
                    bail!("{what}: int takes whole numbers, int(low,high)");
                }
                Dist::Int(a as i64, b as i64)
            }
            "choice" => {
                if args.len() < 2 || args.iter().any(|a| a.is_empty()) {
                    bail!("{what}: choice takes two or more values, choice(v1,v2,...)");
                }
                Dist::Choice(args)
            }
            other => {
                let hint =
                    crate::config::schema::did_you_mean(other, &["uniform", "loguniform", "int", "choice"])
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                bail!("{what}: unknown distribution `{other}`{hint}; known: {DISTS}")
            }
        }))
    }

    /// One draw, as the text of a value. Continuous draws are rounded to four
    /// significant digits, so the run name and the config say the same number.
    pub fn sample(&self, rng: &mut impl rand::Rng) -> String {
        let four = |x: f64| format!("{x:.3e}");
        match self {
            Dist::Uniform(a, b) => four(rng.random_range(*a..*b)),
            Dist::LogUniform(a, b) => four(rng.random_range(a.ln()..b.ln()).exp()),
            Dist::Int(a, b) => rng.random_range(*a..=*b).to_string(),
            Dist::Choice(v) => v[rng.random_range(0..v.len())].clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn draws(d: &Dist, seed: u64, n: usize) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| d.sample(&mut rng).parse::<f64>().unwrap()).collect()
    }

    #[test]
    fn distributions_parse_and_refuse_what_cannot_be_sampled() {
        assert_eq!(Dist::parse("k", "loguniform(1e-4, 1e-2)").unwrap(), Some(Dist::LogUniform(1e-4, 1e-2)));
        assert_eq!(Dist::parse("k", "int(2,5)").unwrap(), Some(Dist::Int(2, 5)));
        assert_eq!(
            Dist::parse("k", "choice(a,[1,2],c)").unwrap(),
            Some(Dist::Choice(vec!["a".into(), "[1,2]".into(), "c".into()]))
        );
        assert_eq!(Dist::parse("k", "3e-4").unwrap(), None);
        assert_eq!(Dist::parse("k", "[1,2]").unwrap(), None);
        let e = |v: &str| Dist::parse("base_lr", v).unwrap_err().to_string();
        assert!(e("loguniform(1e-2,1e-4)").contains("low < high"), "{}", e("loguniform(1e-2,1e-4)"));
        assert!(e("uniform(1,1)").contains("low < high"));
        assert!(e("loguniform(0,1)").contains("positive"));
        assert!(
            e("logunifrom(1,2)").contains("unknown distribution `logunifrom` (did you mean `loguniform`?)")
        );
        assert!(e("normal(0,1)").contains("known: uniform(a,b)"));
        assert!(e("int(1.5,3)").contains("whole numbers"));
        assert!(e("choice(a)").contains("two or more"));
        assert!(e("uniform(a,2)").contains("`a` is not a number"));
        // parse_axis keeps a distribution's commas in one value.
        assert_eq!(parse_axis("base_lr=loguniform(1e-4,1e-2)").unwrap().1, vec!["loguniform(1e-4,1e-2)"]);
    }

    #[test]
    fn samplers_are_seeded_in_range_and_log_uniform_on_a_log_scale() {
        let log = Dist::LogUniform(1e-4, 1e-2);
        let (a, b) = (draws(&log, 7, 2000), draws(&log, 7, 2000));
        assert_eq!(a, b, "the same seed draws the same values");
        assert_ne!(a, draws(&log, 8, 2000), "another seed draws others");
        assert!(a.iter().all(|&x| (1e-4..=1e-2).contains(&x)), "in range");
        // On a log scale: each decade holds half the draws; the median is near 1e-3
        // (a uniform draw's median would be near 5e-3).
        let low_decade = a.iter().filter(|&&x| x < 1e-3).count() as f64 / a.len() as f64;
        assert!((low_decade - 0.5).abs() < 0.05, "{low_decade}");
        let lin = draws(&Dist::Uniform(1e-4, 1e-2), 7, 2000);
        let below = lin.iter().filter(|&&x| x < 1e-3).count() as f64 / lin.len() as f64;
        assert!((below - 0.0909).abs() < 0.03, "uniform: {below}");
        let ints = draws(&Dist::Int(2, 4), 1, 300);
        assert!(ints.iter().all(|&x| x == 2.0 || x == 3.0 || x == 4.0));
        for v in [2.0, 3.0, 4.0] {
            assert!(ints.contains(&v), "both ends included: {v}");
        }
        // Four significant digits, so the name and the config agree.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let s = log.sample(&mut rng);
        assert!(s.split('e').next().unwrap().len() <= 5, "{s}");
    }
}
