//! Label and field selectors, parsed and matched as kube-apiserver does.
//!
//! The grammar and the error wording follow apimachinery's `labels.Parse` and `fields.ParseSelector`:
//! requirements are separated by commas and all of them must hold.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Why a selector string was refused. The Display text is what kube-apiserver puts in its 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector's grammar was not respected (a missing value, an unclosed set...).
    #[error("unable to parse requirement: {0}")]
    LabelSyntax(String),
    /// A label key or value does not have the form Kubernetes allows.
    #[error("unable to parse requirement: {0}")]
    LabelInvalid(String),
    /// A field selector term is not `field=value`, `field==value` or `field!=value`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldSyntax {
        /// The whole selector.
        selector: String,
        /// The term that could not be read.
        term: String,
    },
}

/// The operators a label requirement may use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOperator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelRequirement {
    key: String,
    operator: LabelOperator,
    values: BTreeSet<String>,
}

impl LabelRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelOperator::Equals | LabelOperator::In => {
                value.is_some_and(|v| self.values.contains(v))
            }
            // As in apimachinery, `!=` and `notin` also match objects without the label at all.
            LabelOperator::NotEquals | LabelOperator::NotIn => {
                value.is_none_or(|v| !self.values.contains(v))
            }
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// A parsed `labelSelector` query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

/// Tokens of the label selector grammar, as apimachinery's lexer splits them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    Comma,
    Equals,
    DoubleEquals,
    NotEquals,
    Not,
    OpenParen,
    CloseParen,
    In,
    NotIn,
    Gt,
    Lt,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Identifier(s) => s.clone(),
            Token::Comma => ",".into(),
            Token::Equals => "=".into(),
            Token::DoubleEquals => "==".into(),
            Token::NotEquals => "!=".into(),
            Token::Not => "!".into(),
            Token::OpenParen => "(".into(),
            Token::CloseParen => ")".into(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
            Token::End => String::new(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Vec<Token> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if is_special(c) {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let (token, width) = match two.as_str() {
                "==" => (Token::DoubleEquals, 2),
                "!=" => (Token::NotEquals, 2),
                _ => match c {
                    '=' => (Token::Equals, 1),
                    '!' => (Token::Not, 1),
                    '(' => (Token::OpenParen, 1),
                    ')' => (Token::CloseParen, 1),
                    ',' => (Token::Comma, 1),
                    '>' => (Token::Gt, 1),
                    _ => (Token::Lt, 1),
                },
            };
            tokens.push(token);
            i += width;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier(word),
        });
    }
    tokens.push(Token::End);
    tokens
}

/// A qualified name: an optional DNS-subdomain prefix and a name of at most 63 characters.
fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty() && name.len() <= 63 && is_label_value_shape(name);
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(SelectorError::LabelInvalid(format!(
            "key: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )))
    }
}

fn is_label_value_shape(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn validate_label_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || (value.len() <= 63 && is_label_value_shape(value)) {
        Ok(())
    } else {
        Err(SelectorError::LabelInvalid(format!(
            "values[0][{key}]: Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )))
    }
}

struct LabelParser {
    tokens: Vec<Token>,
    position: usize,
}

impl LabelParser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.position).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.position < self.tokens.len() {
            self.position += 1;
        }
        token
    }

    fn unexpected(found: &Token, expected: &str) -> SelectorError {
        SelectorError::LabelSyntax(format!(
            "found '{}', expected: {expected}",
            found.describe()
        ))
    }

    fn requirement(&mut self) -> Result<LabelRequirement, SelectorError> {
        let negated = if *self.peek() == Token::Not {
            self.next();
            true
        } else {
            false
        };
        let key = match self.next() {
            Token::Identifier(key) => key,
            other => return Err(Self::unexpected(&other, "!, identifier")),
        };
        validate_label_key(&key)?;
        if negated {
            return Ok(LabelRequirement {
                key,
                operator: LabelOperator::DoesNotExist,
                values: BTreeSet::new(),
            });
        }
        let operator = match self.peek() {
            Token::Comma | Token::End => {
                return Ok(LabelRequirement {
                    key,
                    operator: LabelOperator::Exists,
                    values: BTreeSet::new(),
                });
            }
            Token::Equals | Token::DoubleEquals => LabelOperator::Equals,
            Token::NotEquals => LabelOperator::NotEquals,
            Token::In => LabelOperator::In,
            Token::NotIn => LabelOperator::NotIn,
            other => {
                return Err(Self::unexpected(other, "=, !=, ==, in, notin"));
            }
        };
        self.next();
        let values = match operator {
            LabelOperator::In | LabelOperator::NotIn => self.value_set()?,
            _ => match self.peek().clone() {
                Token::Identifier(value) => {
                    self.next();
                    BTreeSet::from([value])
                }
                // `key=` selects the empty value, as in apimachinery.
                Token::Comma | Token::End => BTreeSet::from([String::new()]),
                other => return Err(Self::unexpected(&other, "identifier")),
            },
        };
        for value in &values {
            validate_label_value(&key, value)?;
        }
        Ok(LabelRequirement {
            key,
            operator,
            values,
        })
    }

    fn value_set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Token::OpenParen => {}
            other => return Err(Self::unexpected(&other, "'('")),
        }
        let mut values = BTreeSet::new();
        let mut expecting_value = true;
        loop {
            match self.next() {
                Token::Identifier(value) if expecting_value => {
                    values.insert(value);
                    expecting_value = false;
                }
                Token::Comma => {
                    if expecting_value {
                        // `(a,,b)` and `(,a)` contain an empty value, which apimachinery allows.
                        values.insert(String::new());
                    }
                    expecting_value = true;
                }
                Token::CloseParen => {
                    if expecting_value {
                        values.insert(String::new());
                    }
                    return Ok(values);
                }
                other => return Err(Self::unexpected(&other, "',', ')' or identifier")),
            }
        }
    }
}

impl LabelSelector {
    /// Parses a `labelSelector` query parameter. The empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parser = LabelParser {
            tokens: lex(s),
            position: 0,
        };
        let mut requirements = Vec::new();
        if *parser.peek() == Token::End {
            return Ok(Self::everything());
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                Token::End => break,
                Token::Comma => {
                    if *parser.peek() == Token::End {
                        return Err(LabelParser::unexpected(&Token::End, "!, identifier"));
                    }
                }
                other => return Err(LabelParser::unexpected(&other, "','")),
            }
        }
        Ok(Self { requirements })
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object (its `metadata.labels`) is selected.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }

    /// The selector that selects every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether this selector selects every object.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    equal: bool,
    value: String,
}

/// A parsed `fieldSelector` query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// Splits on commas that are not escaped with a backslash, as apimachinery's field selector does.
fn split_unescaped(s: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if escaped {
        current.push('\\');
    }
    parts.push(current);
    parts
}

fn unescape_field_value(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    /// Parses a `fieldSelector` query parameter. The empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        for term in split_unescaped(s, ',') {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError::FieldSyntax {
                    selector: s.to_string(),
                    term,
                });
            };
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                equal,
                value: unescape_field_value(value),
            });
        }
        Ok(Self { requirements })
    }

    /// Whether the object is selected. A field the object lacks compares as the empty string.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(obj, &r.field);
            (actual == r.value) == r.equal
        })
    }

    /// The fields the requirements name, in order, so the server can refuse fields a kind
    /// does not support.
    pub fn fields(&self) -> Vec<&str> {
        self.requirements.iter().map(|r| r.field.as_str()).collect()
    }

    /// The requirements as (field, operator, value), the operator being `=` or `!=`, so the
    /// server can refuse fields a kind does not support ("field label not supported: ...").
    pub fn requirements(&self) -> Vec<(String, String, String)> {
        self.requirements
            .iter()
            .map(|r| {
                let op = if r.equal { "=" } else { "!=" };
                (r.field.clone(), op.to_string(), r.value.clone())
            })
            .collect()
    }
}

/// The string form of a dotted field path, as the field label conversion functions render it.
fn field_value(obj: &Value, path: &str) -> String {
    let mut current = obj;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_operators() {
        let app_web = labels(&[("app", "web"), ("tier", "front")]);
        let app_db = labels(&[("app", "db")]);
        for text in ["app=web", "app==web", " app = web "] {
            let s = LabelSelector::parse(text).unwrap();
            assert!(s.matches(&app_web), "{text}");
            assert!(!s.matches(&app_db), "{text}");
        }
        let not_web = LabelSelector::parse("app!=web").unwrap();
        assert!(!not_web.matches(&app_web));
        assert!(not_web.matches(&app_db));
        assert!(not_web.matches(&labels(&[])), "!= matches an absent label");
    }

    #[test]
    fn set_operators() {
        let s = LabelSelector::parse("app in (web, db),tier notin (back)").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(s.matches(&labels(&[("app", "db")])));
        assert!(!s.matches(&labels(&[("app", "cache")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "back")])));
    }

    #[test]
    fn existence_operators() {
        let exists = LabelSelector::parse("postgres.tusk.dev/cluster").unwrap();
        assert!(exists.matches(&labels(&[("postgres.tusk.dev/cluster", "a")])));
        assert!(!exists.matches(&labels(&[("other", "a")])));
        let absent = LabelSelector::parse("!postgres.tusk.dev/cluster,app=x").unwrap();
        assert!(absent.matches(&labels(&[("app", "x")])));
        assert!(!absent.matches(&labels(&[("app", "x"), ("postgres.tusk.dev/cluster", "")])));
    }

    #[test]
    fn empty_selects_everything() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.is_everything());
        assert!(s.matches(&labels(&[("a", "b")])));
        assert_eq!(s, LabelSelector::everything());
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let s = LabelSelector::parse("app=web").unwrap();
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!s.matches_object(&json!({"metadata": {}})));
    }

    #[test]
    fn syntax_errors_are_refused() {
        for text in [
            "app in web",
            "app in (web",
            "=web",
            "app=web,",
            "app web",
            "app>",
        ] {
            let err = LabelSelector::parse(text).unwrap_err();
            assert!(
                err.to_string().starts_with("unable to parse requirement: "),
                "{text}: {err}"
            );
        }
        let err = LabelSelector::parse("app in web").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to parse requirement: found 'web', expected: '('"
        );
    }

    #[test]
    fn invalid_keys_and_values_are_refused() {
        assert!(matches!(
            LabelSelector::parse("-bad=x"),
            Err(SelectorError::LabelInvalid(_))
        ));
        assert!(matches!(
            LabelSelector::parse("app=bad value"),
            Err(SelectorError::LabelSyntax(_))
        ));
        assert!(matches!(
            LabelSelector::parse("app=-x"),
            Err(SelectorError::LabelInvalid(_))
        ));
        let long = "a".repeat(64);
        assert!(LabelSelector::parse(&format!("app={long}")).is_err());
        assert!(LabelSelector::parse(&format!("{long}=x")).is_err());
    }

    #[test]
    fn field_selector_operators() {
        let event = json!({
            "metadata": {"name": "e1", "namespace": "ns"},
            "involvedObject": {"kind": "PostgresCluster", "name": "db"},
        });
        let s = FieldSelector::parse("involvedObject.kind=PostgresCluster,involvedObject.name==db")
            .unwrap();
        assert!(s.matches(&event));
        let s = FieldSelector::parse("metadata.namespace!=ns").unwrap();
        assert!(!s.matches(&event));
        let s = FieldSelector::parse("involvedObject.uid=").unwrap();
        assert!(
            s.matches(&event),
            "a missing field compares as the empty string"
        );
        let s = FieldSelector::parse("spec.nodeName!=").unwrap();
        assert!(!s.matches(&event));
        assert_eq!(
            FieldSelector::parse("metadata.name=a,status.phase!=Running")
                .unwrap()
                .requirements(),
            vec![
                ("metadata.name".into(), "=".into(), "a".into()),
                ("status.phase".into(), "!=".into(), "Running".into())
            ]
        );
        assert!(FieldSelector::parse("").unwrap().matches(&event));
    }

    #[test]
    fn field_selector_escapes_and_errors() {
        let s = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert!(s.matches(&json!({"metadata": {"name": "a,b"}})));
        let err = FieldSelector::parse("metadata.name").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
    }
}
