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
