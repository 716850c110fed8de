//! A small YAML writer for manifests: block style, keys in the order given,
//! every string double-quoted (so `"true"`, `"1"` and `"0755"` stay strings,
//! and no YAML 1.1 reader turns `no` into false).

use serde_json::Value;
use std::fmt::Write;

/// `documents` as one multi-document YAML stream (`---` between them).
pub fn to_yaml(documents: &[Value]) -> String {
    let mut out = String::new();
    for (i, document) in documents.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        block(&mut out, document, 0);
    }
    out
}

/// A scalar or empty collection on one line, or `None` for a nested block.
fn inline(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // JSON's string escapes are valid in YAML's double-quoted style.
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(a) if a.is_empty() => "[]".to_string(),
        Value::Object(o) if o.is_empty() => "{}".to_string(),
        _ => return None,
    })
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'))
        && k.starts_with(|c: char| c.is_ascii_alphabetic());
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

/// A mapping or sequence at `indent`, each entry on its own line.
fn block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                match inline(v) {
                    Some(text) => {
                        let _ = writeln!(out, "{pad}{}: {text}", key(k));
                    }
                    None => {
                        let _ = writeln!(out, "{pad}{}:", key(k));
                        // Sequences sit at the key's own indent, as kubectl writes them.
                        let inner = if v.is_array() { indent } else { indent + 2 };
                        block(out, v, inner);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match inline(item) {
                    Some(text) => {
                        let _ = writeln!(out, "{pad}- {text}");
                    }
                    None => {
                        // The first line of the nested block goes after "- ".
                        let mut nested = String::new();
                        block(&mut nested, item, indent + 2);
                        let _ = write!(out, "{pad}- {}", &nested[indent + 2..]);
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", inline(other).unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_maps_and_sequences() {
        // Keys in sorted order: serde_json keeps either that or insertion order.
        let doc = json!({
            "kind": "Job",
            "metadata": {"labels": {"app.kubernetes.io/name": "forloop"}},
            "n": 3,
            "spec": {"containers": [{"args": ["work", "--", "echo", "{}"], "name": "w"}], "empty": [], "none": {}},
            "yes": "true",
        });
        let text = to_yaml(&[doc, json!({"a": 1})]);
        let expected = r#"kind: "Job"
metadata:
  labels:
    app.kubernetes.io/name: "forloop"
n: 3
spec:
  containers:
  - args:
    - "work"
    - "--"
    - "echo"
    - "{}"
    name: "w"
  empty: []
  none: {}
yes: "true"
---
a: 1
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn awkward_strings_are_quoted_and_escaped() {
        let text = to_yaml(&[json!({"1st key": "no", "x": "a \"b\"\n$(c)"})]);
        assert_eq!(text, "\"1st key\": \"no\"\nx: \"a \\\"b\\\"\\n$(c)\"\n");
    }

    #[test]
    fn sequences_of_sequences() {
        let text = to_yaml(&[json!({"m": [[1, 2], {"k": [{"a": 1, "b": 2}]}]})]);
        assert_eq!(text, "m:\n- - 1\n  - 2\n- k:\n  - a: 1\n    b: 2\n");
    }
}
