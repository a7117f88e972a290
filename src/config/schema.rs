//! The config structs are the single source of truth for what keys exist. This module
//! reads a struct's field names straight from its `Deserialize` impl, so validation
//! of `--set` keys, "did you mean" hints and the docs test all use the same list.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Field names of a `#[derive(Deserialize)]` struct, in declaration order.
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldGrabber(&mut fields));
    fields
}

struct FieldGrabber<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldGrabber<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields captured"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

/// The closest candidate to `key` by edit distance, if it is plausibly a typo.
pub fn did_you_mean<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(key, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "unknown key `x` (did you mean `y`?); valid keys: a, b, c"
pub fn unknown_key_message(key: &str, where_: &str, candidates: &[&str]) -> String {
    let hint = did_you_mean(key, candidates).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
    format!("unknown key `{key}` in {where_}{hint}; valid keys: {}", candidates.join(", "))
}

thread_local! {
    static EVERY_KEY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Serialise with every key, defaults included (`fkpnet config`): a run's config.yaml
/// leaves out keys at their defaults (data.augment when off, test-time views, ...)
/// so that configs written before a key existed still compare equal.
pub fn with_every_key<T>(f: impl FnOnce() -> T) -> T {
    EVERY_KEY.with(|k| k.set(true));
    let out = f();
    EVERY_KEY.with(|k| k.set(false));
    out
}

fn every_key() -> bool {
    EVERY_KEY.with(|k| k.get())
}

pub fn skip_none<T>(v: &Option<T>) -> bool {
    !every_key() && v.is_none()
}

pub fn skip_empty<T>(v: &[T]) -> bool {
    !every_key() && v.is_empty()
}

pub fn skip_default<T: Default + PartialEq>(v: &T) -> bool {
    !every_key() && *v == T::default()
}

pub fn skip_true(v: &bool) -> bool {
    !every_key() && *v
}

/// A serde error message as a person would want it: unknown keys and values with a
/// "did you mean" and the valid ones, Rust's type names as words.
pub fn explain(msg: &str) -> String {
    static RE: std::sync::OnceLock<[regex::Regex; 2]> = std::sync::OnceLock::new();
    let [field, variant] = RE.get_or_init(|| {
        [
            regex::Regex::new(r"unknown field `([^`]*)`, expected (?:one of )?(.*)$").unwrap(),
            regex::Regex::new(r"unknown variant `([^`]*)`, expected (?:one of )?(.*)$").unwrap(),
        ]
    });
    let list = |s: &str| -> Vec<String> {
        s.split(['`', ','])
            .map(|p| p.trim().trim_start_matches("or ").trim())
            .filter(|p| !p.is_empty() && *p != "or")
            .map(String::from)
            .collect()
    };
    let (start, rest) = msg.split_at(msg.find(" at line ").unwrap_or(msg.len()));
    let out = if let Some(c) = field.captures(start) {
        let valid = list(&c[2]);
        let v: Vec<&str> = valid.iter().map(String::as_str).collect();
        format!("{}{}", &start[..c.get(0).unwrap().start()], unknown_key_message(&c[1], "this mapping", &v))
            .replace(" in this mapping", "")
    } else if let Some(c) = variant.captures(start) {
        let valid = list(&c[2]);
        let v: Vec<&str> = valid.iter().map(String::as_str).collect();
        let lower: Vec<String> = v.iter().map(|s| s.to_lowercase()).collect();
        let hint = did_you_mean(&c[1].to_lowercase(), &lower.iter().map(String::as_str).collect::<Vec<_>>())
            .and_then(|l| lower.iter().position(|x| x == l))
            .map(|i| format!(" (did you mean `{}`?)", v[i]))
            .unwrap_or_default();
        format!(
            "{}unknown value `{}`{hint}; valid: {}",
            &start[..c.get(0).unwrap().start()],
            &c[1],
            v.join(", ")
        )
    } else {
        start.to_string()
    };
    let words = [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a whole number"),
        ("expected i32", "expected an integer"),
        ("expected u32", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
    ];
    let out = words.iter().fold(out, |s, (a, b)| s.replace(a, b));
    format!("{out}{rest}")
}

/// A YAML error with its place: `file:line:col: message`, the line quoted with a
/// caret under the column, and a word where a tab is the trouble (YAML indents with
/// spaces only).
pub fn yaml_error(file: &str, text: Option<&str>, e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    let Some((loc, text)) = e.location().zip(text) else {
        return format!("{file}: {}", explain(&msg));
    };
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    let src = text.lines().nth(loc.line().saturating_sub(1)).unwrap_or("");
    let col = loc.column().max(1);
    let at = src.chars().nth(col - 1);
    let shown: String = src.chars().map(|c| if c == '\t' { '→' } else { c }).collect();
    let caret: String = " ".repeat(col - 1) + "^";
    let tab = if at == Some('\t') || (msg.contains("cannot start any token") && src.contains('\t')) {
        "\n  a tab (shown as →): YAML indents with spaces only; replace it with spaces"
    } else {
        ""
    };
    format!(
        "{file}:{}:{col}: {}\n{:>5} | {shown}\n      | {caret}{tab}",
        loc.line(),
        explain(&msg),
        loc.line()
    )
}

/// Whole-number floats (`1e3`, `64.0`) as integers, so integer keys take them; the
/// number keys take integers anyway.
pub fn integral_floats(v: &mut serde_yaml::Value) {
    use serde_yaml::Value;
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    *v = Value::Number((f as i64).into());
                }
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(integral_floats),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, x)| integral_floats(x)),
        Value::Tagged(t) => integral_floats(&mut t.value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_become_readable() {
        let m = explain(
            "conv: unknown field `kernal_size`, expected one of `num_output`, `kernel_size`, `stride`",
        );
        assert_eq!(
            m,
            "conv: unknown key `kernal_size` (did you mean `kernel_size`?); valid keys: num_output, kernel_size, stride"
        );
        let m = explain(
            "type: unknown variant `adam`, expected one of `SGD`, `Adam`, `AdamW` at line 3 column 7",
        );
        assert_eq!(
            m,
            "type: unknown value `adam` (did you mean `Adam`?); valid: SGD, Adam, AdamW at line 3 column 7"
        );
        assert_eq!(
            explain("invalid type: string \"abc\", expected i64"),
            "invalid type: string \"abc\", expected an integer"
        );
        let m = explain("unknown variant `zzzzzz`, expected `alpha` or `beta`");
        assert_eq!(m, "unknown value `zzzzzz`; valid: alpha, beta");
    }

    #[test]
    fn whole_floats_become_integers() {
        let mut v: serde_yaml::Value = serde_yaml::from_str("{a: 1e3, b: 0.5, c: [2.0, 3]}").unwrap();
        integral_floats(&mut v);
        assert_eq!(v, serde_yaml::from_str::<serde_yaml::Value>("{a: 1000, b: 0.5, c: [2, 3]}").unwrap());
    }
}
