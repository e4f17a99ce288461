//! The shape of a generated CRD schema that `kubectl explain` can read on every served version.
//!
//! An API server before 1.23 publishes only OpenAPI v2, and turns every schema marked `nullable`
//! into an untyped one without `properties` or `items`: `kubectl explain` then stops at that field
//! and prints its description for everything beneath it. The operator never writes `null` (every
//! optional field is left out when empty), so the schemas it publishes carry no `nullable` at all.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// `crd` with no schema of any version marked `nullable`, so that OpenAPI v2 keeps every field's
/// type and children (see the module documentation).
pub fn explainable(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    if let Some(versions) = value
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                not_nullable(schema);
            }
        }
    }
    serde_json::from_value(value).expect("the CRD deserializes again")
}

/// Removes `nullable` from `schema` and every schema beneath it (properties, items, additional
/// properties, combinators), never from a property that happens to be named `nullable`.
fn not_nullable(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    object.remove("nullable");
    if let Some(properties) = object.get_mut("properties").and_then(Value::as_object_mut) {
        properties.values_mut().for_each(not_nullable);
    }
    for key in ["items", "additionalProperties", "not"] {
        match object.get_mut(key) {
            Some(Value::Array(schemas)) => schemas.iter_mut().for_each(not_nullable),
            Some(one @ Value::Object(_)) => not_nullable(one),
            _ => {}
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(schemas) = object.get_mut(key).and_then(Value::as_array_mut) {
            schemas.iter_mut().for_each(not_nullable);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nullable_goes_everywhere_but_a_property_named_nullable_stays() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": "things.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Thing", "plural": "things"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "status": {"type": "object", "nullable": true, "properties": {
                            "nullable": {"type": "string", "nullable": true},
                            "list": {"type": "array", "items":
                                {"type": "object", "nullable": true, "properties": {}}}
                        }}
                    }}}}]}
        }))
        .unwrap();
        let value = serde_json::to_value(explainable(crd)).unwrap();
        let status =
            &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
        assert_eq!(status.get("nullable"), None);
        assert_eq!(status["properties"]["nullable"]["type"], "string");
        assert_eq!(status["properties"]["nullable"].get("nullable"), None);
        assert_eq!(status["properties"]["list"]["items"].get("nullable"), None);
    }
}
