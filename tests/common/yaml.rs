//! Renders a `serde_json::Value` as block-style YAML for pgcloak config files, and deep-merges
//! override values into defaults (an override of `null` removes the key).

use serde_json::Value;

/// Merges `overrides` into `base`: objects merge key by key, anything else replaces,
/// and `null` deletes the key.
pub fn merge(base: &mut Value, overrides: &Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(slot) = base.get_mut(key) {
                    merge(slot, value);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}

/// Renders `value` (an object at the top) as YAML.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        // A JSON string literal is a valid YAML double-quoted scalar.
        Value::String(s) => serde_json::to_string(s).unwrap(),
        Value::Object(map) if map.is_empty() => "{}".to_string(),
        Value::Array(items) if items.is_empty() => "[]".to_string(),
        other => other.to_string(),
    }
}

fn key_text(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if plain {
        key.to_string()
    } else {
        serde_json::to_string(key).unwrap()
    }
}

fn is_block(value: &Value) -> bool {
    matches!(value, Value::Object(m) if !m.is_empty())
        || matches!(value, Value::Array(a) if !a.is_empty())
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                if is_block(item) {
                    out.push_str(&format!("{pad}{}:\n", key_text(key)));
                    write_value(out, item, indent + 2);
                } else {
                    out.push_str(&format!("{pad}{}: {}\n", key_text(key), scalar(item)));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if is_block(item) {
                    out.push_str(&format!("{pad}-\n"));
                    write_value(out, item, indent + 2);
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[test]
fn yaml_renders_nested_maps_and_merges_overrides() {
    let mut base = serde_json::json!({"a": 1, "b": {"c": "x", "d": true}, "e": [1, "two"]});
    merge(&mut base, &serde_json::json!({"b": {"c": "y"}, "a": null}));
    assert_eq!(
        to_yaml(&base),
        "b:\n  c: \"y\"\n  d: true\ne:\n  - 1\n  - \"two\"\n"
    );
}
