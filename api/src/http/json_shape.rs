//! The one leniency serde's derived structs have that the API's schema does not: they accept a
//! JSON array in place of an object, filling the fields in declaration order
//! (`{"rate_limit": [1, 2]}` would set `read_per_minute` to 1). `JsonBody` checks a body that
//! holds an array against the OpenAPI schema of its type before serde reads it: wherever the
//! schema says `object`, the value must be an object (or `null`). Everything else (types,
//! ranges, unknown fields) is serde's to refuse, with the field it names.

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde_json::Value;

/// The path of the first array found where `T`'s schema wants an object, if there is one.
pub fn array_for_object<T: Type>(body: &Value) -> Option<String> {
    let mut registry = Registry::new();
    T::register(&mut registry);
    walk(body, &T::schema_ref(), &registry, "body")
}

fn walk(value: &Value, schema: &MetaSchemaRef, registry: &Registry, path: &str) -> Option<String> {
    let schema: &MetaSchema = match schema {
        MetaSchemaRef::Inline(schema) => schema,
        MetaSchemaRef::Reference(name) => registry.schemas.get(name)?,
    };
    let nested = schema
        .all_of
        .iter()
        .chain(&schema.any_of)
        .chain(&schema.one_of);
    for part in nested {
        if let Some(found) = walk(value, part, registry, path) {
            return Some(found);
        }
    }
    match value {
        Value::Array(_) if schema.ty == "object" => Some(path.to_owned()),
        Value::Array(items) => {
            let item = schema.items.as_deref()?;
            items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, item, registry, &format!("{path}[{i}]")))
        }
        Value::Object(fields) => fields.iter().find_map(|(name, v)| {
            let field = schema
                .properties
                .iter()
                .find(|(declared, _)| declared == name)
                .map(|(_, s)| s)
                .or(schema.additional_properties.as_deref())?;
            walk(v, field, registry, &child(path, name))
        }),
        _ => None,
    }
}

fn child(path: &str, name: &str) -> String {
    if path == "body" {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::Object;
    use serde_json::json;

    use super::array_for_object;

    #[derive(Object)]
    struct Limits {
        read: Option<u32>,
    }

    #[derive(Object)]
    struct Body {
        name: String,
        limits: Option<Limits>,
        many: Vec<Limits>,
        tags: Vec<String>,
    }

    #[test]
    fn an_array_where_an_object_belongs_is_found_at_any_depth() {
        let found = |v| array_for_object::<Body>(&v);
        assert_eq!(found(json!([1, 2])), Some("body".into()));
        assert_eq!(found(json!({"limits": [1]})), Some("limits".into()));
        assert_eq!(found(json!({"many": [{}, [1]]})), Some("many[1]".into()));
        assert_eq!(found(json!({"tags": ["a"], "many": [{"read": 1}]})), None);
        assert_eq!(
            found(json!({"limits": null, "name": "x", "other": [1]})),
            None
        );
    }
}
