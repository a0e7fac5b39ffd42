//! Reading a payload's JSON in one pass without building a tree of values: the top-level
//! fields are kept as their JSON text (in order), and the few fields validation needs are read
//! as scalars. A payload of a million array elements then costs its own size, not the tens of
//! bytes per element a `serde_json::Value` tree costs.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Number;

/// One top-level field of a payload: its name and its value as JSON text.
pub type Field = (String, Box<RawValue>);

/// What a payload's JSON is at the top level.
pub(super) enum TopLevel {
    /// An object: its fields in the order received; a repeated name keeps its last value at
    /// the position of its first, as a JSON parser that preserves order does.
    Object(Vec<Field>),
    /// Anything else, by kind ("an array", "a string", ...).
    Other(&'static str),
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(KindVisitor(TopLevelFields))? {
            Kind::Object(fields) => TopLevel::Object(fields),
            Kind::Scalar(s) => TopLevel::Other(s.kind()),
        })
    }
}

/// A field validation reads: a scalar by value, a container by kind only (its contents are
/// skipped, not kept).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Null,
    Bool,
    Number(Number),
    String(String),
    Array,
    Object,
}

impl Scalar {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Number(_) => "a number",
            Scalar::String(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(KindVisitor(SkipObject))? {
            Kind::Object(()) => Ok(Scalar::Object),
            Kind::Scalar(s) => Ok(s),
        }
    }
}

/// An object read one level deep: its fields as scalars (the `metrics` object).
pub(super) enum Shallow {
    Object(HashMap<String, Scalar>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Shallow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(KindVisitor(ScalarFields))? {
            Kind::Object(fields) => Ok(Shallow::Object(fields)),
            Kind::Scalar(s) => Ok(Shallow::Other(s.kind())),
        }
    }
}

/// The first field name at any depth (objects inside arrays too) that holds a NUL character,
/// as a dotted path; `None` when there is none. Only called on a value whose JSON text spells a
/// NUL (`\u0000`), which is rare.
pub(super) fn name_with_nul(json: &RawValue) -> Option<String> {
    serde_json::from_str::<NulName>(json.get())
        .ok()
        .and_then(|n| n.0)
}

/// A JSON value read as either an object (what `O` makes of its fields) or a scalar.
enum Kind<T> {
    Object(T),
    Scalar(Scalar),
}

/// How an object's fields are read.
trait ObjectReader {
    type Output;
    fn read<'de, A: MapAccess<'de>>(&self, map: A) -> Result<Self::Output, A::Error>;
}

/// Every field as JSON text, repeated names merged.
struct TopLevelFields;

impl ObjectReader for TopLevelFields {
    type Output = Vec<Field>;
    fn read<'de, A: MapAccess<'de>>(&self, mut map: A) -> Result<Vec<Field>, A::Error> {
        let mut fields: Vec<Field> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let value: Box<RawValue> = map.next_value()?;
            match index.get(&name) {
                Some(&i) => fields[i].1 = value,
                None => {
                    index.insert(name.clone(), fields.len());
                    fields.push((name, value));
                }
            }
        }
        Ok(fields)
    }
}

/// Every field as a scalar (containers by kind).
struct ScalarFields;

impl ObjectReader for ScalarFields {
    type Output = HashMap<String, Scalar>;
    fn read<'de, A: MapAccess<'de>>(&self, mut map: A) -> Result<Self::Output, A::Error> {
        let mut fields = HashMap::new();
        while let Some(name) = map.next_key::<String>()? {
            fields.insert(name, map.next_value::<Scalar>()?);
        }
        Ok(fields)
    }
}

/// Nothing kept.
struct SkipObject;

impl ObjectReader for SkipObject {
    type Output = ();
    fn read<'de, A: MapAccess<'de>>(&self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

struct KindVisitor<O>(O);

impl<'de, O: ObjectReader> Visitor<'de> for KindVisitor<O> {
    type Value = Kind<O::Output>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Kind::Scalar(Scalar::Null))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Kind::Scalar(Scalar::Bool))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Kind::Scalar(Scalar::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Kind::Scalar(Scalar::Number(v.into())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // serde_json never hands over a non-finite number; should one come, it is not a number.
        Number::from_f64(v)
            .map(|n| Kind::Scalar(Scalar::Number(n)))
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Kind::Scalar(Scalar::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Kind::Scalar(Scalar::String(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Kind::Scalar(Scalar::Array))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.read(map).map(Kind::Object)
    }
}

/// Looks for a field name holding a NUL, at any depth; reads the whole value either way.
struct NulName(Option<String>);

impl<'de> Deserialize<'de> for NulName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NulNameVisitor).map(NulName)
    }
}

struct NulNameVisitor;

impl<'de> Visitor<'de> for NulNameVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(NulName(inner)) = seq.next_element()? {
            found = found.or(inner);
        }
        Ok(found)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(name) = map.next_key::<String>()? {
            let NulName(inner) = map.next_value_seed(NulNameSeed)?;
            if found.is_none() {
                found = if name.contains('\0') {
                    Some(name)
                } else {
                    inner.map(|path| format!("{name}.{path}"))
                };
            }
        }
        Ok(found)
    }
}

struct NulNameSeed;

impl<'de> DeserializeSeed<'de> for NulNameSeed {
    type Value = NulName;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<NulName, D::Error> {
        NulName::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(json: &str) -> Vec<(String, String)> {
        match serde_json::from_str::<TopLevel>(json).unwrap() {
            TopLevel::Object(fields) => fields
                .into_iter()
                .map(|(k, v)| (k, v.get().to_string()))
                .collect(),
            TopLevel::Other(kind) => panic!("{kind}"),
        }
    }

    #[test]
    fn top_level_fields_keep_order_text_and_the_last_of_a_repeated_name() {
        assert_eq!(
            top(r#"{"b": [1, {"x": 2}], "a": 1.50, "b": "again"}"#),
            [
                ("b".into(), r#""again""#.into()),
                ("a".into(), "1.50".into())
            ]
        );
    }

    #[test]
    fn other_top_levels_are_named_by_kind() {
        for (json, kind) in [
            ("[1,2]", "an array"),
            ("\"t\"", "a string"),
            ("3", "a number"),
            ("null", "null"),
            ("true", "a boolean"),
        ] {
            match serde_json::from_str::<TopLevel>(json).unwrap() {
                TopLevel::Other(k) => assert_eq!(k, kind),
                TopLevel::Object(_) => panic!("{json}"),
            }
        }
        assert!(serde_json::from_str::<TopLevel>("[1,").is_err());
        assert!(serde_json::from_str::<TopLevel>("{} x").is_err());
    }

    #[test]
    fn scalars_skip_the_contents_of_containers() {
        let s: Scalar = serde_json::from_str(r#"{"a": [1, 2, {"b": 3}]}"#).unwrap();
        assert_eq!(s, Scalar::Object);
        let s: Scalar = serde_json::from_str("[[], {}]").unwrap();
        assert_eq!(s, Scalar::Array);
        let s: Scalar = serde_json::from_str("-7").unwrap();
        assert_eq!(s, Scalar::Number((-7).into()));
    }

    #[test]
    fn nul_names_are_found_at_any_depth_with_their_path() {
        let at = |json: &str| name_with_nul(&RawValue::from_string(json.into()).unwrap());
        assert_eq!(at(r#"{"a": {"b\u0000": 1}}"#), Some("a.b\0".into()));
        assert_eq!(at(r#"[[{"c": [{"\u0000": 1}]}]]"#), Some("c.\0".into()));
        assert_eq!(at(r#"{"a": "value with \u0000"}"#), None);
        assert_eq!(
            at(r#"{"first\u0000": {"second\u0000": 1}}"#),
            Some("first\0".into())
        );
    }
}
