//! Canonical JSON: object keys sorted, no insignificant whitespace.
//!
//! oci-spec keeps labels and annotations in `HashMap`s, whose iteration order
//! changes from run to run; digests must not, so every JSON blob kiln writes
//! goes through here.

use serde::Serialize;
use serde_json::Value;

/// Serializes `value` with object keys in byte order.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("oci types serialize to json");
    let mut out = Vec::with_capacity(512);
    write_value(&value, &mut out);
    out
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).expect("string serializes"));
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(v, out);
            }
            out.push(b']');
        }
        other => out.extend(serde_json::to_vec(other).expect("scalar serializes")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn sorts_keys_at_every_level() {
        let mut inner = HashMap::new();
        for k in ["z", "a", "m", "b", "y"] {
            inner.insert(k.to_owned(), 1);
        }
        let v = serde_json::json!({"b": [inner], "a": "x\"y"});
        assert_eq!(
            String::from_utf8(super::canonical_json(&v)).unwrap(),
            r#"{"a":"x\"y","b":[{"a":1,"b":1,"m":1,"y":1,"z":1}]}"#
        );
    }
}
