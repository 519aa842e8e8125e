//! RFC 6902 JSON patch, with the leniency kube-apiserver's library has: a `test` against an
//! absent location passes when the expected value is `null` (kube-runtime's finalizer helper
//! relies on it for `/metadata/finalizers`).

use serde_json::Value;

use super::PatchError;

/// Applies an RFC 6902 JSON patch. The object is left untouched when any operation fails.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::Malformed(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".into(),
        ));
    };
    let mut working = target.clone();
    for operation in operations {
        apply_operation(&mut working, operation)?;
    }
    *target = working;
    Ok(())
}

fn string_member<'a>(operation: &'a Value, name: &str, op: &str) -> Result<&'a str, PatchError> {
    operation
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| PatchError::Malformed(format!("{op} operation missing {name} field")))
}

fn value_member<'a>(operation: &'a Value, op: &str) -> Result<&'a Value, PatchError> {
    operation
        .get("value")
        .ok_or_else(|| PatchError::Malformed(format!("{op} operation missing value field")))
}

fn apply_operation(doc: &mut Value, operation: &Value) -> Result<(), PatchError> {
    let op = operation
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| PatchError::Malformed("operation missing op field".into()))?;
    let path = string_member(operation, "path", op)?;
    let tokens = parse_pointer(path)?;
    match op {
        "add" => add(doc, &tokens, value_member(operation, op)?.clone(), path),
        "remove" => remove(doc, &tokens, path).map(|_| ()),
        "replace" => {
            let value = value_member(operation, op)?.clone();
            let slot = resolve_mut(doc, &tokens).ok_or_else(|| {
                PatchError::OperationFailed(format!(
                    "replace operation does not apply: doc is missing key: {path}: missing value"
                ))
            })?;
            *slot = value;
            Ok(())
        }
        "move" => {
            let from = string_member(operation, "from", op)?;
            let from_tokens = parse_pointer(from)?;
            if tokens.len() > from_tokens.len() && tokens[..from_tokens.len()] == from_tokens[..] {
                return Err(PatchError::OperationFailed(format!(
                    "move operation does not apply: cannot move {from} into its own child {path}"
                )));
            }
            let value = remove(doc, &from_tokens, from)?;
            add(doc, &tokens, value, path)
        }
        "copy" => {
            let from = string_member(operation, "from", op)?;
            let value = resolve(doc, &parse_pointer(from)?).cloned().ok_or_else(|| {
                PatchError::OperationFailed(format!(
                    "copy operation does not apply: doc is missing from path: {from}: missing value"
                ))
            })?;
            add(doc, &tokens, value, path)
        }
        "test" => {
            let expected = value_member(operation, op)?;
            let actual = resolve(doc, &tokens).unwrap_or(&Value::Null);
            if actual == expected {
                Ok(())
            } else {
                Err(PatchError::TestFailed {
                    path: path.to_string(),
                })
            }
        }
        other => Err(PatchError::Malformed(format!("Unexpected kind: {other}"))),
    }
}

fn parse_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError::Malformed(format!(
            "invalid JSON pointer {path:?}: it must start with '/'"
        )));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    if allow_end && token == "-" {
        return Some(len);
    }
    if token.len() > 1 && token.starts_with('0') {
        return None;
    }
    let index: usize = token.parse().ok()?;
    let limit = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    (index <= limit && (allow_end || len > 0)).then_some(index)
}

fn resolve<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |current, token| match current {
        Value::Object(map) => map.get(token),
        Value::Array(items) => array_index(token, items.len(), false).and_then(|i| items.get(i)),
        _ => None,
    })
}

fn resolve_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(doc, |current, token| match current {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => {
            let len = items.len();
            array_index(token, len, false).and_then(move |i| items.get_mut(i))
        }
        _ => None,
    })
}

fn add(doc: &mut Value, tokens: &[String], value: Value, path: &str) -> Result<(), PatchError> {
    let Some((last, parent_tokens)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let missing = || {
        PatchError::OperationFailed(format!(
            "add operation does not apply: doc is missing path: {path:?}: missing value"
        ))
    };
    match resolve_mut(doc, parent_tokens).ok_or_else(missing)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = array_index(last, items.len(), true).ok_or_else(|| {
                PatchError::OperationFailed(format!(
                    "add operation does not apply: index out of bounds: {path}"
                ))
            })?;
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove(doc: &mut Value, tokens: &[String], path: &str) -> Result<Value, PatchError> {
    let missing = || {
        PatchError::OperationFailed(format!(
            "remove operation does not apply: doc is missing path: {path:?}: missing value"
        ))
    };
    let (last, parent_tokens) = tokens.split_last().ok_or_else(missing)?;
    match resolve_mut(doc, parent_tokens).ok_or_else(missing)? {
        Value::Object(map) => map.remove(last).ok_or_else(missing),
        Value::Array(items) => {
            let index = array_index(last, items.len(), false).ok_or_else(missing)?;
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}
