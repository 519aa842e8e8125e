//! Resource quantities decoded as kube-apiserver decodes them: a built-in object whose
//! quantity (`resources.requests.memory`, `spec.resources.requests.storage`,
//! `emptyDir.sizeLimit`...) does not parse cannot be decoded, and the write is refused with 400
//! before any validation. Where quantities appear comes from `k8s-openapi`'s schemas (every
//! field of type `Quantity`), not from a list of fields.

use serde_json::{Map, Value};

use crate::apiserver::typed;

/// `resource.ErrFormatWrong`'s text.
const FORMAT_WRONG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// `resource.ErrSuffix`'s text.
const BAD_SUFFIX: &str = "unable to parse quantity's suffix";
/// The definition `k8s-openapi` gives quantities.
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// Why a built-in object (of `group` and `kind`, in its storage form) cannot be decoded
/// because of a malformed quantity, or None when every quantity parses.
pub(crate) fn decode_error(group: &str, kind: &str, object: &Value) -> Option<&'static str> {
    let (root, definitions) = typed::kind_schema_of(group, kind)?;
    first_error(root, definitions, object)
}

fn first_error(
    schema: &Value,
    definitions: &Map<String, Value>,
    value: &Value,
) -> Option<&'static str> {
    let reference = schema.get("$ref").and_then(Value::as_str);
    if reference.and_then(|r| r.strip_prefix("#/$defs/")) == Some(QUANTITY) {
        return match value {
            Value::Null => None,
            Value::String(text) => parse_error(text.trim()),
            Value::Number(number) => parse_error(&number.to_string()),
            _ => Some(FORMAT_WRONG),
        };
    }
    let schema = typed::resolve(schema, definitions);
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let map_values = schema.get("additionalProperties").filter(|a| a.is_object());
            fields.iter().find_map(|(key, child)| {
                let child_schema = match (properties, map_values) {
                    (Some(properties), _) => properties.get(key)?,
                    (None, Some(values)) => values,
                    (None, None) => return None,
                };
                first_error(child_schema, definitions, child)
            })
        }
        Value::Array(items) => {
            let item_schema = schema.get("items")?;
            items
                .iter()
                .find_map(|item| first_error(item_schema, definitions, item))
        }
        _ => None,
    }
}

/// `resource.ParseQuantity`'s error for a quantity's text, or None when it parses: a signed
/// decimal number, then a suffix (`Ki`..`Ei`, `n`..`E`, or an exponent `e3`).
pub(crate) fn parse_error(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        return Some(FORMAT_WRONG);
    }
    let bytes = text.as_bytes();
    let mut pos = usize::from(matches!(bytes[0], b'+' | b'-'));
    let digits = |from: usize| {
        from + bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    pos = digits(pos);
    if bytes.get(pos) == Some(&b'.') {
        pos = digits(pos + 1);
    }
    let suffix_start = pos;
    pos += bytes[pos..]
        .iter()
        .take_while(|b| b"eEinumkKMGTP".contains(b))
        .count();
    if pos < bytes.len() && matches!(bytes[pos], b'+' | b'-') {
        pos += 1;
    }
    if digits(pos) != bytes.len() {
        return Some(FORMAT_WRONG);
    }
    let suffix = &text[suffix_start..];
    let known = matches!(
        suffix,
        "" | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
            | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|exponent| exponent.parse::<i64>().is_ok());
    (!known).then_some(BAD_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kube_apiserver_parses_them() {
        for valid in [
            "1", "0", "500m", "1.5Gi", "-2", "+3k", "1e3", "2E-2", ".5", "1.", "10Ei",
        ] {
            assert_eq!(parse_error(valid), None, "{valid}");
        }
        for malformed in ["", "lots", "1Gb", "1 Gi", "1e", "1.2.3"] {
            assert!(parse_error(malformed).is_some(), "{malformed}");
        }
        assert_eq!(parse_error("1Gb"), Some(FORMAT_WRONG));
        assert_eq!(parse_error("1GG"), Some(BAD_SUFFIX));
        assert_eq!(parse_error("1e"), Some(BAD_SUFFIX));
    }
}
