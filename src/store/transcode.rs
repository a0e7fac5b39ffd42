//! JSON text to BSON in one streaming pass, value for value, with a size budget: integers stay
//! integers (32-bit when they fit, as other drivers store them), other numbers become doubles,
//! and a value that would not fit in a MongoDB document stops the conversion as soon as the
//! budget runs out instead of after it has been built whole.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use mongodb::bson::{RawArrayBuf, RawBson, RawDocumentBuf};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Why a value was not converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscodeError {
    /// Its BSON would take more than the budget.
    TooLarge,
    /// A field name holds a NUL, which BSON cannot store (validation refuses these first).
    NulInName,
    Json(String),
}

const TOO_LARGE: &str = "BSON budget exhausted";
const NUL_IN_NAME: &str = "a field name holds a NUL";

/// Converts one JSON value; `budget` is the number of BSON bytes it may still take and is
/// reduced by what it took (approximately: element headers are counted generously).
pub fn json_to_bson(json: &RawValue, budget: &Cell<usize>) -> Result<RawBson, TranscodeError> {
    let mut d = serde_json::Deserializer::from_str(json.get());
    // Deeply nested values are bounded by serde_json's own recursion limit (128).
    BsonSeed { budget }.deserialize(&mut d).map_err(|e| {
        let text = e.to_string();
        if text.starts_with(TOO_LARGE) {
            TranscodeError::TooLarge
        } else if text.starts_with(NUL_IN_NAME) {
            TranscodeError::NulInName
        } else {
            TranscodeError::Json(text)
        }
    })
}

/// The bytes an element takes besides its value: type, name (an array index has at most 7
/// digits below 10 million elements, and the budget stops far sooner) and terminator.
const ELEMENT_HEADER: usize = 10;

#[derive(Clone, Copy)]
struct BsonSeed<'b> {
    budget: &'b Cell<usize>,
}

impl BsonSeed<'_> {
    fn take<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.budget.get().checked_sub(bytes + ELEMENT_HEADER) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(TOO_LARGE)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for BsonSeed<'_> {
    type Value = RawBson;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawBson, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BsonSeed<'_> {
    type Value = RawBson;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawBson, E> {
        self.take(0)?;
        Ok(RawBson::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawBson, E> {
        self.take(1)?;
        Ok(RawBson::Boolean(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawBson, E> {
        Ok(match i32::try_from(v) {
            Ok(small) => {
                self.take(4)?;
                RawBson::Int32(small)
            }
            Err(_) => {
                self.take(8)?;
                RawBson::Int64(v)
            }
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawBson, E> {
        match i64::try_from(v) {
            Ok(signed) => self.visit_i64(signed),
            // Beyond 64-bit signed integers BSON has only doubles.
            Err(_) => self.visit_f64(v as f64),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawBson, E> {
        self.take(8)?;
        Ok(RawBson::Double(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBson, E> {
        self.take(v.len() + 5)?;
        Ok(RawBson::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawBson, E> {
        self.take(v.len() + 5)?;
        Ok(RawBson::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBson, A::Error> {
        self.take(5)?;
        let mut array = RawArrayBuf::new();
        while let Some(item) = seq.next_element_seed(self)? {
            array.push(item);
        }
        Ok(RawBson::Array(array))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBson, A::Error> {
        self.take(5)?;
        // A repeated name keeps its last value at the position of its first, as the JSON
        // parsers that preserve order do; BSON with a repeated name is ambiguous to readers.
        let mut fields: Vec<(String, RawBson)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        while let Some(name) = map.next_key::<String>()? {
            if name.contains('\0') {
                return Err(de::Error::custom(NUL_IN_NAME));
            }
            self.take(name.len())?;
            let value = map.next_value_seed(self)?;
            match index.get(&name) {
                Some(&i) => fields[i].1 = value,
                None => {
                    index.insert(name.clone(), fields.len());
                    fields.push((name, value));
                }
            }
        }
        let mut document = RawDocumentBuf::new();
        for (name, value) in fields {
            document.append(name, value);
        }
        Ok(RawBson::Document(document))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, Bson, Document};

    fn convert(json: &str, budget: usize) -> Result<RawBson, TranscodeError> {
        json_to_bson(
            &RawValue::from_string(json.to_string()).unwrap(),
            &Cell::new(budget),
        )
    }

    fn document(json: &str) -> Document {
        match convert(json, usize::MAX / 2).unwrap() {
            RawBson::Document(d) => d.to_document().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_keep_their_kind() {
        let d = document(
            r#"{"small": 3, "big": 5000000000, "neg": -2, "float": 2.5, "whole": 60.0,
                "huge": 18446744073709551615}"#,
        );
        assert_eq!(d.get("small"), Some(&Bson::Int32(3)));
        assert_eq!(d.get("big"), Some(&Bson::Int64(5_000_000_000)));
        assert_eq!(d.get("neg"), Some(&Bson::Int32(-2)));
        assert_eq!(d.get("float"), Some(&Bson::Double(2.5)));
        assert_eq!(d.get("whole"), Some(&Bson::Double(60.0)));
        assert_eq!(d.get("huge"), Some(&Bson::Double(18446744073709551615.0)));
    }

    #[test]
    fn structure_order_and_repeated_names() {
        let d = document(r#"{"b": [1, "two", null, true, {"c": []}], "a": {"x": 1, "x": 2}}"#);
        assert_eq!(
            d,
            doc! {"b": [1, "two", Bson::Null, true, {"c": []}], "a": {"x": 2}}
        );
        // Extended-JSON-looking names are data like any other.
        let d = document(r#"{"v": {"$oid": "not an id"}}"#);
        assert_eq!(d, doc! {"v": {"$oid": "not an id"}});
    }

    #[test]
    fn a_value_over_budget_stops_early_and_one_within_is_whole() {
        let zeros = format!("[{}0]", "0,".repeat(1_000_000));
        assert_eq!(convert(&zeros, 1 << 20), Err(TranscodeError::TooLarge));
        let within = convert(&zeros, 32 << 20).unwrap();
        match within {
            RawBson::Array(a) => assert_eq!(a.into_iter().count(), 1_000_001),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_budget_is_never_below_the_real_size() {
        let json = r#"{"name": "web01", "list": [1, 2.5, "x", {"k": null}], "n": 5000000000}"#;
        let budget = Cell::new(1 << 20);
        let bson = json_to_bson(&RawValue::from_string(json.into()).unwrap(), &budget).unwrap();
        let RawBson::Document(d) = bson else { panic!() };
        assert!((1 << 20) - budget.get() >= d.as_bytes().len());
    }

    #[test]
    fn names_with_nul_are_refused() {
        assert_eq!(
            convert(r#"{"a": {"b\u0000": 1}}"#, 1 << 20),
            Err(TranscodeError::NulInName)
        );
    }
}
