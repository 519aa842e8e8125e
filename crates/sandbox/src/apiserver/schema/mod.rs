//! Structural schemas of CustomResourceDefinitions: pruning, defaulting and validation, including CEL rules.
//!
//! A CRD version's `openAPIV3Schema` is compiled once into a [`CompiledSchema`] (regular
//! expressions and CEL programs parsed up front), then used for every write of that kind. The
//! behaviour follows apiextensions-apiserver: OpenAPI value validation worded as go-openapi words
//! it (field paths such as `spec.conditions.0.type`), CEL rules reported with apimachinery field
//! paths (`spec.parameters`), transition rules only where an old value is correlated, and
//! validation ratcheting (an unchanged value is never newly refused).

pub mod cost;
mod node;
#[cfg(test)]
mod tests;

use serde_json::Value;

use node::{Node, Segment};

/// The kind of a validation failure, as apimachinery's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorReason {
    /// The value is not acceptable.
    Invalid,
    /// A required value is missing.
    Required,
    /// The value is not one of the supported values.
    NotSupported,
    /// The value is not allowed here.
    Forbidden,
    /// The value is too long.
    TooLong,
    /// The list or map has too many elements.
    TooMany,
    /// The value appears twice where it must be unique.
    Duplicate,
    /// The value has the wrong type.
    TypeInvalid,
}

impl FieldErrorReason {
    /// The `details.causes[].reason` string kube-apiserver sends for this kind of failure.
    pub fn as_k8s_cause_type(&self) -> &'static str {
        match self {
            FieldErrorReason::Invalid => "FieldValueInvalid",
            FieldErrorReason::Required => "FieldValueRequired",
            FieldErrorReason::NotSupported => "FieldValueNotSupported",
            FieldErrorReason::Forbidden => "FieldValueForbidden",
            FieldErrorReason::TooLong => "FieldValueTooLong",
            FieldErrorReason::TooMany => "FieldValueTooMany",
            FieldErrorReason::Duplicate => "FieldValueDuplicate",
            FieldErrorReason::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    fn from_cel_reason(reason: Option<&str>) -> Self {
        match reason {
            Some("FieldValueRequired") => FieldErrorReason::Required,
            Some("FieldValueForbidden") => FieldErrorReason::Forbidden,
            Some("FieldValueDuplicate") => FieldErrorReason::Duplicate,
            _ => FieldErrorReason::Invalid,
        }
    }
}

/// One validation failure: one entry of a 422 Status's `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path as kube-apiserver reports it, such as `spec.memorySize`.
    pub field: String,
    /// The kind of failure.
    pub reason: FieldErrorReason,
    /// The cause's message, such as
    /// `Invalid value: 0: spec.memorySize in body should be greater than or equal to 1`.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Why a CRD's schema was refused. The Display text names the schema location as the
/// CustomResourceDefinition validation does (`spec.validation.openAPIV3Schema.properties[spec]...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The schema is not structural (a missing type, properties next to additionalProperties...).
    #[error("{field}: {message}")]
    NotStructural {
        /// Where in the schema.
        field: String,
        /// What is wrong, worded as kube-apiserver does.
        message: String,
    },
    /// A `pattern` is not a valid regular expression.
    #[error("{field}: Invalid value: {pattern:?}: {message}")]
    InvalidPattern {
        /// Where in the schema.
        field: String,
        /// The pattern.
        pattern: String,
        /// The regex compiler's complaint.
        message: String,
    },
    /// An `x-kubernetes-validations` rule (or its messageExpression) does not compile.
    #[error("{field}: Invalid value: {rule:?}: compilation failed: {message}")]
    CelCompilation {
        /// Where in the schema, such as `...properties[spec].x-kubernetes-validations[0].rule`.
        field: String,
        /// The rule's expression.
        rule: String,
        /// The compiler's complaint.
        message: String,
    },
}

/// One CRD version's `openAPIV3Schema`, compiled once.
pub struct CompiledSchema {
    root: Node,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema").finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Compiles a schema, refusing what kube-apiserver refuses in a CRD: non-structural
    /// schemas, invalid patterns and CEL rules that do not compile.
    pub fn new(open_api_v3_schema: &Value) -> Result<Self, SchemaError> {
        let root = Node::compile_root(open_api_v3_schema)?;
        Ok(Self { root })
    }

    /// Drops the fields the schema does not know, as kube-apiserver prunes on every write, and
    /// returns their paths (such as `spec.foo` or `spec.list[0].bar`) for `fieldValidation`.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        let mut path = Vec::new();
        self.root.prune(obj, &mut path, &mut pruned, true);
        pruned
    }

    /// Fills in the schema's `default`s. A default is applied where the field is absent (or
    /// null and not nullable) and its parent object exists; defaults inside a defaulted value
    /// are applied too.
    pub fn default(&self, obj: &mut Value) {
        self.root.apply_defaults(obj, true);
    }

    /// Validates an object (already pruned and defaulted) against the schema and its CEL rules.
    /// `old` is the stored object on an update, None on a create.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut path: Vec<Segment> = Vec::new();
        self.root.validate(obj, old, &mut path, &mut errors, true);
        errors
    }
}
