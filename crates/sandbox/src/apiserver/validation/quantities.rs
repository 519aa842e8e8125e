//! Resource quantities decoded as kube-apiserver decodes them: a built-in object whose
//! quantity (`resources.requests.memory`, `spec.resources.requests.storage`,
//! `emptyDir.sizeLimit`...) does not parse cannot be decoded, and the write is refused with 400
//! before any validation; one that parses is stored in the canonical form kube-apiserver's
//! `Quantity` serializes to (`1024Mi` as `1Gi`, `0.5` as `500m`). Where quantities appear
//! comes from `k8s-openapi`'s schemas (every field of type `Quantity`), not from a list of
//! fields.
//!
//! The canonical form is written here rather than taken from a crate because it must match
//! apimachinery's `Quantity.CanonicalizeBytes` to the character, which the quantity crates on
//! crates.io do not promise.

use serde_json::{Map, Value};

use crate::apiserver::typed;

/// `resource.ErrFormatWrong`'s text.
const FORMAT_WRONG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// `resource.ErrSuffix`'s text.
const BAD_SUFFIX: &str = "unable to parse quantity's suffix";
/// The definition `k8s-openapi` gives quantities.
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// Decodes the quantities of a built-in object (of `group` and `kind`, in its storage form):
/// each one is rewritten in its canonical form, and the first malformed one is the error why
/// the object cannot be decoded.
pub(crate) fn decode(group: &str, kind: &str, object: &mut Value) -> Result<(), &'static str> {
    match typed::kind_schema_of(group, kind) {
        Some((root, definitions)) => decode_value(root, definitions, object),
        None => Ok(()),
    }
}

fn decode_value(
    schema: &Value,
    definitions: &Map<String, Value>,
    value: &mut Value,
) -> Result<(), &'static str> {
    let reference = schema.get("$ref").and_then(Value::as_str);
    if reference.and_then(|r| r.strip_prefix("#/$defs/")) == Some(QUANTITY) {
        let text = match value {
            Value::Null => return Ok(()),
            Value::String(text) => text.trim().to_string(),
            Value::Number(number) => number.to_string(),
            _ => return Err(FORMAT_WRONG),
        };
        if let Some(error) = parse_error(&text) {
            return Err(error);
        }
        *value = Value::String(canonical(&text).unwrap_or(text));
        return Ok(());
    }
    let schema = typed::resolve(schema, definitions);
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let map_values = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in fields.iter_mut() {
                let child_schema = match (properties, map_values) {
                    (Some(properties), _) => properties.get(key),
                    (None, Some(values)) => Some(values),
                    (None, None) => None,
                };
                if let Some(child_schema) = child_schema {
                    decode_value(child_schema, definitions, child)?;
                }
            }
            Ok(())
        }
        Value::Array(items) => match schema.get("items") {
            Some(item_schema) => items
                .iter_mut()
                .try_for_each(|item| decode_value(item_schema, definitions, item)),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// How a quantity is written: its suffix's family decides the family of its canonical form.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Format {
    /// `k`, `M`, `m`... or no suffix.
    DecimalSI,
    /// `Ki`, `Mi`, `Gi`...
    BinarySI,
    /// `e3`, `E-2`...
    DecimalExponent,
}

/// The decimal SI suffixes by power of ten.
const DECIMAL_SUFFIXES: [(i32, &str); 10] = [
    (-9, "n"),
    (-6, "u"),
    (-3, "m"),
    (0, ""),
    (3, "k"),
    (6, "M"),
    (9, "G"),
    (12, "T"),
    (15, "P"),
    (18, "E"),
];
/// The binary suffixes by power of 1024.
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// The canonical form of a quantity that parses, as `Quantity.String()` gives it: the value
/// rounded up to a whole number of nano units, then written with the largest suffix of its
/// family that keeps the number whole (binary quantities under 1024 or with a fraction are
/// written in decimal). None for values too large for this arithmetic (beyond what resource
/// requests use), which are stored as written.
fn canonical(text: &str) -> Option<String> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let (format, power_of_ten, power_of_two) = match suffix {
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let step = BINARY_SUFFIXES.iter().position(|s| *s == suffix)?;
            (Format::BinarySI, 0, 10 * u32::try_from(step).ok()?)
        }
        _ => match DECIMAL_SUFFIXES.iter().find(|(_, s)| *s == suffix) {
            Some((power, _)) => (Format::DecimalSI, *power, 0),
            None => (Format::DecimalExponent, suffix[1..].parse::<i32>().ok()?, 0),
        },
    };
    let digits = format!("{whole}{fraction}");
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    // The value is mantissa * 10^scale * 2^power_of_two units; in nano units, rounded up
    // (away from zero) as `ParseQuantity` rounds.
    let scale = power_of_ten - i32::try_from(fraction.len()).ok()? + 9;
    let numerator = mantissa
        .checked_mul(1i128.checked_shl(power_of_two)?)?
        .checked_mul(10i128.checked_pow(scale.max(0).unsigned_abs())?)?;
    let denominator = 10i128.checked_pow((-scale).max(0).unsigned_abs())?;
    let nanos = (numerator + denominator - 1) / denominator;
    if nanos == 0 {
        return Some("0".to_string());
    }
    let sign = if negative { "-" } else { "" };
    let units = nanos / NANOS_PER_UNIT;
    if format == Format::BinarySI && nanos % NANOS_PER_UNIT == 0 && units >= 1024 {
        let (mut amount, mut step) = (units, 0);
        while amount % 1024 == 0 && step < BINARY_SUFFIXES.len() - 1 {
            amount /= 1024;
            step += 1;
        }
        return Some(format!("{sign}{amount}{}", BINARY_SUFFIXES[step]));
    }
    let (mut amount, mut exponent): (i128, i32) = (nanos, -9);
    while amount % 10 == 0 {
        amount /= 10;
        exponent += 1;
    }
    // The exponent goes down to a multiple of three, the number grows to match.
    let excess = exponent.rem_euclid(3);
    amount *= 10i128.pow(excess.unsigned_abs());
    exponent -= excess;
    let suffix = if format == Format::DecimalExponent {
        if exponent == 0 {
            String::new()
        } else {
            format!("e{exponent}")
        }
    } else {
        DECIMAL_SUFFIXES
            .iter()
            .find(|(power, _)| *power == exponent)?
            .1
            .to_string()
    };
    Some(format!("{sign}{amount}{suffix}"))
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

    /// The pairs of apimachinery's `TestQuantityString` (a quantity written another way, and
    /// the canonical form it must come back as) and `TestQuantityParseEmit`, then what tusk's
    /// objects write.
    #[test]
    fn quantities_are_written_in_kube_apiservers_canonical_form() {
        for (written, stored) in [
            ("1024Mi", "1Gi"),
            ("307200Ki", "300Mi"),
            ("1025024Mi", "1001Gi"),
            ("1024Gi", "1Ti"),
            ("5000m", "5"),
            ("0.5", "500m"),
            ("1000M", "1G"),
            ("0.001T", "1G"),
            ("1000u", "1m"),
            ("1.08", "1080m"),
            ("1080000000n", "1080m"),
            (".001e12", "1e9"),
            ("0.001e0", "1e-3"),
            ("1000e-12", "1e-9"),
            ("00", "0"),
            ("1Ki", "1Ki"),
            (".001Ki", "1024m"),
            (".000001Ki", "1024u"),
            (".000000001Ki", "1024n"),
            (".000000000001Ki", "2n"),
            ("-1024Mi", "-1Gi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("1024", "1024"),
            ("2000", "2k"),
            ("+250m", "250m"),
            ("10Gi", "10Gi"),
        ] {
            assert_eq!(canonical(written).as_deref(), Some(stored), "{written}");
        }
    }

    #[test]
    fn quantities_of_a_pod_are_stored_canonical_and_malformed_ones_refused() {
        let mut pod = serde_json::json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"memory": "1024Mi", "cpu": 0.5},
            "limits": {"memory": "2048Mi", "cpu": "1000m"},
        }}]}});
        assert_eq!(decode("", "Pod", &mut pod), Ok(()));
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            serde_json::json!({"requests": {"memory": "1Gi", "cpu": "500m"},
                "limits": {"memory": "2Gi", "cpu": "1"}})
        );
        pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "2GB".into();
        assert_eq!(decode("", "Pod", &mut pod), Err(FORMAT_WRONG));
    }
}
