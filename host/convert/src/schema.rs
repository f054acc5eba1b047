//! JSON-schema cleaning for tool parameters and structured output.
//!
//! Two targets (conversion.md §2.3):
//! * [`to_gemini`] — Gemini `parameters` take an OpenAPI 3 subset, not JSON Schema. We send
//!   `parameters` with the whitelist cleaning (`type, description, properties, required, enum,
//!   items, nullable`, uppercase types) rather than upstream's inconsistent "OpenAPI content
//!   under `parametersJsonSchema`". Local `$ref`s are inlined and `anyOf`/`oneOf` reduced to
//!   their first non-null branch so the information is not simply lost.
//! * [`to_json_schema`] — OpenAI, Responses and Claude take JSON Schema: drop `$schema`,
//!   lowercase `type` (Gemini sends `STRING`), turn `nullable: true` into a `"null"` type entry,
//!   keep everything else. The root is always an object schema (Claude requires it).

use serde_json::{Map, Value, json};

const MAX_DEPTH: usize = 32;

/// Gemini `parameters` for a function declaration; `None` for an object without properties
/// (Gemini rejects `OBJECT` schemas with empty `properties`, so such functions are declared
/// without parameters).
pub(crate) fn to_gemini_parameters(schema: &Value) -> Option<Value> {
    let cleaned = to_gemini(schema);
    let empty_object = cleaned.get("type").and_then(Value::as_str) == Some("OBJECT")
        && cleaned
            .get("properties")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
    if empty_object { None } else { Some(cleaned) }
}

/// Whitelist-cleans a JSON Schema into Gemini's OpenAPI subset.
pub(crate) fn to_gemini(schema: &Value) -> Value {
    gemini_node(schema, schema, 0)
}

fn resolve_ref<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut cur = node;
    for _ in 0..8 {
        let Some(r) = cur.get("$ref").and_then(Value::as_str) else {
            return cur;
        };
        let target = r
            .strip_prefix("#/$defs/")
            .and_then(|n| root.get("$defs").and_then(|d| d.get(n)))
            .or_else(|| {
                r.strip_prefix("#/definitions/")
                    .and_then(|n| root.get("definitions").and_then(|d| d.get(n)))
            });
        match target {
            Some(t) => cur = t,
            None => return cur,
        }
    }
    cur
}

fn gemini_node(root: &Value, node: &Value, depth: usize) -> Value {
    let node = resolve_ref(root, node);
    let Some(obj) = node.as_object() else {
        return json!({"type": "STRING"});
    };
    if depth > MAX_DEPTH {
        return json!({"type": "OBJECT"});
    }
    // anyOf/oneOf: keep the first non-null branch, remember nullability.
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = obj.get(key).and_then(Value::as_array) {
            let nullable = branches
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("null"));
            if let Some(first) = branches
                .iter()
                .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))
            {
                let mut out = gemini_node(root, first, depth + 1);
                if let Some(o) = out.as_object_mut() {
                    if nullable {
                        o.insert("nullable".into(), Value::Bool(true));
                    }
                    if let Some(d) = obj.get("description")
                        && !o.contains_key("description")
                    {
                        o.insert("description".into(), d.clone());
                    }
                }
                return out;
            }
        }
    }
    let mut out = Map::new();
    let mut nullable = obj
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ty = match obj.get("type") {
        Some(Value::String(t)) => Some(t.to_ascii_uppercase()),
        Some(Value::Array(ts)) => {
            if ts.iter().any(|t| t.as_str() == Some("null")) {
                nullable = true;
            }
            ts.iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .map(str::to_ascii_uppercase)
        }
        _ => None,
    };
    let ty = ty.or_else(|| {
        if obj.contains_key("properties") {
            Some("OBJECT".into())
        } else if obj.contains_key("items") {
            Some("ARRAY".into())
        } else if obj.contains_key("enum") || obj.contains_key("const") {
            Some("STRING".into())
        } else {
            None
        }
    });
    if let Some(t) = &ty {
        out.insert("type".into(), Value::String(t.clone()));
    }
    if let Some(d) = obj.get("description").filter(|d| d.is_string()) {
        out.insert("description".into(), d.clone());
    }
    if nullable {
        out.insert("nullable".into(), Value::Bool(true));
    }
    // Gemini enums are string-only.
    let enum_values = obj
        .get("enum")
        .and_then(Value::as_array)
        .cloned()
        .or_else(|| obj.get("const").map(|c| vec![c.clone()]));
    if let Some(values) = enum_values
        && ty.as_deref() == Some("STRING")
        && !values.is_empty()
        && values.iter().all(Value::is_string)
    {
        out.insert("enum".into(), Value::Array(values));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        let cleaned: Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), gemini_node(root, v, depth + 1)))
            .collect();
        if let Some(req) = obj.get("required").and_then(Value::as_array) {
            let req: Vec<Value> = req
                .iter()
                .filter(|r| r.as_str().is_some_and(|n| cleaned.contains_key(n)))
                .cloned()
                .collect();
            if !req.is_empty() {
                out.insert("required".into(), Value::Array(req));
            }
        }
        out.insert("properties".into(), Value::Object(cleaned));
    }
    if ty.as_deref() == Some("ARRAY") {
        let items = match obj.get("items") {
            Some(i @ Value::Object(_)) => gemini_node(root, i, depth + 1),
            // Tuple form: use the first item schema.
            Some(Value::Array(a)) if !a.is_empty() => gemini_node(root, &a[0], depth + 1),
            // Gemini requires `items` on arrays.
            _ => json!({"type": "STRING"}),
        };
        out.insert("items".into(), items);
    }
    Value::Object(out)
}

/// JSON Schema for OpenAI, Responses and Claude (root forced to an object schema).
pub(crate) fn to_json_schema(schema: &Value) -> Value {
    let mut out = json_node(schema, 0);
    match out.as_object_mut() {
        Some(o) => {
            if !o.contains_key("type") {
                o.insert("type".into(), Value::String("object".into()));
            }
            if o.get("type").and_then(Value::as_str) == Some("object")
                && !o.contains_key("properties")
            {
                o.insert("properties".into(), Value::Object(Map::new()));
            }
            out
        }
        None => json!({"type": "object", "properties": {}}),
    }
}

fn json_node(node: &Value, depth: usize) -> Value {
    let Some(obj) = node.as_object() else {
        return node.clone();
    };
    if depth > MAX_DEPTH {
        return node.clone();
    }
    let nullable = obj
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "$schema" | "nullable" => {}
            "type" => {
                let mut ty = match v {
                    Value::String(t) => Value::String(t.to_ascii_lowercase()),
                    Value::Array(ts) => Value::Array(
                        ts.iter()
                            .map(|t| match t {
                                Value::String(s) => Value::String(s.to_ascii_lowercase()),
                                o => o.clone(),
                            })
                            .collect(),
                    ),
                    o => o.clone(),
                };
                if nullable {
                    ty = match ty {
                        Value::String(t) if t != "null" => json!([t, "null"]),
                        Value::Array(mut ts) if !ts.iter().any(|t| t == "null") => {
                            ts.push(Value::String("null".into()));
                            Value::Array(ts)
                        }
                        o => o,
                    };
                }
                out.insert(k.clone(), ty);
            }
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                let m = match v.as_object() {
                    Some(m) => Value::Object(
                        m.iter()
                            .map(|(pk, pv)| (pk.clone(), json_node(pv, depth + 1)))
                            .collect(),
                    ),
                    None => v.clone(),
                };
                out.insert(k.clone(), m);
            }
            "items" | "additionalProperties" | "not" | "contains" => {
                out.insert(k.clone(), json_node(v, depth + 1));
            }
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                let a = match v.as_array() {
                    Some(a) => Value::Array(a.iter().map(|x| json_node(x, depth + 1)).collect()),
                    None => v.clone(),
                };
                out.insert(k.clone(), a);
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}
