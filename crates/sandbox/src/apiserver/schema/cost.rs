//! The static cost of `x-kubernetes-validations` rules, estimated as kube-apiserver estimates it
//! before it accepts a CustomResourceDefinition.
//!
//! kube-apiserver gives each rule the CEL declaration of its schema node, in which every string,
//! list and map has a largest size: `maxLength` (times four, since a code point may take four
//! bytes), `maxItems` and `maxProperties`, or, where the schema sets no bound, what fits in a
//! 3 MiB request (the request size divided by the smallest serialized element). cel-go's cost
//! estimator then walks the checked expression, charging each function by the sizes of its
//! operands, with Kubernetes' own charges for its library functions. The rule's cost is multiplied
//! by how many times the rule can run (the product of the bounds of the enclosing lists and maps)
//! and refused above 10,000,000; the sum over the whole schema is refused above 100,000,000.
//!
//! The walk below follows cel-go's `checker/cost.go` and Kubernetes'
//! `apiextensions-apiserver/pkg/apiserver/schema/cel` and `apiserver/pkg/cel/library/cost.go`
//! step by step (including where they charge nothing), so that a rule accepted here is accepted
//! by a real API server and one refused here is refused there.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use serde_json::Value;

use super::{FieldError, FieldErrorReason};

/// The largest estimated cost of one rule, times the number of times it can run
/// (apiextensions' `StaticEstimatedCostLimit`).
pub const PER_RULE_COST_LIMIT: u64 = 10_000_000;
/// The largest estimated cost of all rules of one schema (`StaticEstimatedCRDCostLimit`).
pub const PER_SCHEMA_COST_LIMIT: u64 = 100_000_000;
/// kube-apiserver's largest request body, from which unbounded sizes are derived.
const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;

// cel-go's unit costs (`common/cost.go`).
const SELECT_AND_IDENT_COST: u64 = 1;
const LIST_CREATE_BASE_COST: u64 = 10;
const MAP_CREATE_BASE_COST: u64 = 30;
const STRUCT_CREATE_BASE_COST: u64 = 40;
const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
/// Kubernetes' `MaxNameFormatRegexSize`, the regex length charged by `format.validate`.
const MAX_NAME_FORMAT_REGEX_SIZE: f64 = 128.0;

/// A range of sizes or costs, saturating at `u64::MAX` as cel-go's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    min: u64,
    max: u64,
}

const UNKNOWN: Range = Range {
    min: 0,
    max: u64::MAX,
};

fn fixed(value: u64) -> Range {
    Range {
        min: value,
        max: value,
    }
}

fn times_factor(x: u64, factor: f64) -> u64 {
    let product = (x as f64 * factor).ceil();
    if product >= 18_446_744_073_709_551_616.0 {
        u64::MAX
    } else {
        product as u64
    }
}

impl Range {
    fn add(self, other: Range) -> Range {
        Range {
            min: self.min.saturating_add(other.min),
            max: self.max.saturating_add(other.max),
        }
    }

    fn multiply(self, other: Range) -> Range {
        Range {
            min: self.min.saturating_mul(other.min),
            max: self.max.saturating_mul(other.max),
        }
    }

    fn by_factor(self, factor: f64) -> Range {
        Range {
            min: times_factor(self.min, factor),
            max: times_factor(self.max, factor),
        }
    }

    fn union(self, other: Range) -> Range {
        Range {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

// ------------------------------------------------------------------ declarations

/// The CEL declaration of a schema node, with the bounds the estimator reads.
#[derive(Debug)]
struct Decl {
    kind: DeclKind,
    /// The largest size: bytes of a string, items of a list, properties of a map; 0 otherwise.
    max_elements: u64,
    /// The length of the smallest JSON text of a value, which bounds how many fit in a request.
    min_serialized_size: u64,
}

#[derive(Debug)]
enum DeclKind {
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    /// `x-kubernetes-int-or-string`: `dyn` to the type checker.
    IntOrString,
    List(Rc<Decl>),
    /// A map's keys are strings; this is its values' declaration.
    Map(Rc<Decl>),
    Object(BTreeMap<String, Rc<Decl>>),
}

fn simple(kind: DeclKind, max_elements: u64, min_serialized_size: u64) -> Rc<Decl> {
    Rc::new(Decl {
        kind,
        max_elements,
        min_serialized_size,
    })
}

fn bound(schema: &serde_json::Map<String, Value>, key: &str) -> Option<u64> {
    schema
        .get(key)
        .and_then(Value::as_i64)
        .map(|v| v.max(0) as u64)
}

fn is_embedded(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true)
}

/// A string's largest size in bytes when the schema gives no `maxLength`.
fn unbounded_string_size(format: Option<&str>) -> u64 {
    match format {
        Some("duration") | Some("date-time") => 32,
        Some("date") => 12,
        _ => MAX_REQUEST_SIZE_BYTES - 2,
    }
}

/// The declaration of a schema node (None where CEL cannot see the node, such as an untyped
/// preserved field). `resource_root` is true for the root and embedded resources, which get
/// `apiVersion`, `kind` and `metadata.name`/`generateName` (at most 253 and 252 characters)
/// declared when the schema does not declare them.
fn declaration(schema: &Value, resource_root: bool) -> Option<Rc<Decl>> {
    let map = schema.as_object()?;
    let max_length = bound(map, "maxLength");
    if map
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        let max = max_length
            .map(|l| l.saturating_mul(4))
            .unwrap_or(MAX_REQUEST_SIZE_BYTES - 2);
        return Some(simple(DeclKind::IntOrString, max, 1));
    }
    match map.get("type").and_then(Value::as_str).unwrap_or_default() {
        "array" => {
            let items_schema = map.get("items")?;
            let items = declaration(items_schema, is_embedded(items_schema))?;
            let max = bound(map, "maxItems")
                .unwrap_or((MAX_REQUEST_SIZE_BYTES - 2) / (items.min_serialized_size + 1));
            Some(simple(DeclKind::List(items), max, 2))
        }
        "object" => {
            if let Some(values_schema) = map.get("additionalProperties").filter(|a| a.is_object()) {
                let values = declaration(values_schema, is_embedded(values_schema))?;
                let max = bound(map, "maxProperties")
                    .unwrap_or((MAX_REQUEST_SIZE_BYTES - 2) / (values.min_serialized_size + 6));
                return Some(simple(DeclKind::Map(values), max, 2));
            }
            let with_meta;
            let map = if resource_root {
                with_meta = with_type_and_object_meta(map);
                &with_meta
            } else {
                map
            };
            Some(object_declaration(map))
        }
        "string" => {
            let format = map.get("format").and_then(Value::as_str);
            let unbounded = unbounded_string_size(format);
            Some(match format {
                Some("byte") => simple(DeclKind::Bytes, max_length.unwrap_or(unbounded), 2),
                Some("duration") => simple(DeclKind::Duration, unbounded, 3),
                Some("date") => simple(DeclKind::Timestamp, unbounded, 12),
                Some("date-time") => simple(DeclKind::Timestamp, unbounded, 21),
                _ => {
                    let longest_enum = map.get("enum").and_then(Value::as_array).map(|values| {
                        values
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|s| s.len() as u64)
                            .max()
                            .unwrap_or(0)
                    });
                    let max = match (max_length, longest_enum) {
                        (Some(length), _) => length.saturating_mul(4),
                        (None, Some(longest)) => longest,
                        (None, None) => unbounded,
                    };
                    simple(DeclKind::String, max, 2)
                }
            })
        }
        "boolean" => Some(simple(DeclKind::Bool, 0, 4)),
        "number" => Some(simple(DeclKind::Double, 0, 1)),
        "integer" => Some(simple(DeclKind::Int, 0, 1)),
        _ => None,
    }
}

fn object_declaration(map: &serde_json::Map<String, Value>) -> Rc<Decl> {
    let required: Vec<&str> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = BTreeMap::new();
    let mut min_serialized_size = 2;
    for (name, property) in map
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(field) = declaration(property, is_embedded(property)) {
            if required.contains(&name.as_str()) && property.get("default").is_none() {
                min_serialized_size += name.len() as u64 + field.min_serialized_size + 4;
            }
            fields.insert(name.clone(), field);
        }
    }
    Rc::new(Decl {
        kind: DeclKind::Object(fields),
        max_elements: 0,
        min_serialized_size,
    })
}

/// The root of a resource as CEL sees it: `apiVersion`, `kind` and `metadata` with its name
/// bounded by the name length limits, unless the schema declares them all already.
fn with_type_and_object_meta(
    map: &serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    let properties = map.get("properties").and_then(Value::as_object);
    let type_of = |path: &[&str]| -> Option<&str> {
        let mut node = properties?.get(path[0])?;
        for step in &path[1..] {
            node = node.get("properties")?.get(*step)?;
        }
        node.get("type").and_then(Value::as_str)
    };
    let declared = type_of(&["kind"]) == Some("string")
        && type_of(&["apiVersion"]) == Some("string")
        && type_of(&["metadata"]) == Some("object")
        && type_of(&["metadata", "name"]) == Some("string")
        && type_of(&["metadata", "generateName"]) == Some("string");
    if declared {
        return map.clone();
    }
    let capped = |name: &str, limit: u64| {
        let declared = properties
            .and_then(|p| p.get("metadata"))
            .and_then(|m| m.get("properties"))
            .and_then(|p| p.get(name))
            .and_then(|n| n.get("maxLength"))
            .and_then(Value::as_u64);
        let length = declared.map_or(limit, |d| d.min(limit));
        serde_json::json!({"type": "string", "maxLength": length})
    };
    let mut out = map.clone();
    let mut new_properties = properties.cloned().unwrap_or_default();
    new_properties.insert("kind".into(), serde_json::json!({"type": "string"}));
    new_properties.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
    new_properties.insert(
        "metadata".into(),
        serde_json::json!({"type": "object", "properties": {
            "name": capped("name", 253),
            "generateName": capped("generateName", 252),
        }}),
    );
    out.insert("properties".into(), Value::Object(new_properties));
    out
}

// ------------------------------------------------------------------ types

/// The type the checker gives an expression, as far as the cost estimate depends on it.
#[derive(Debug, Clone)]
enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Duration,
    Timestamp,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    Object(Rc<Decl>),
    Dyn,
}

impl Ty {
    fn of(decl: &Rc<Decl>) -> Ty {
        match &decl.kind {
            DeclKind::Bool => Ty::Bool,
            DeclKind::Int => Ty::Int,
            DeclKind::Double => Ty::Double,
            DeclKind::String => Ty::String,
            DeclKind::Bytes => Ty::Bytes,
            DeclKind::Duration => Ty::Duration,
            DeclKind::Timestamp => Ty::Timestamp,
            DeclKind::IntOrString => Ty::Dyn,
            DeclKind::List(items) => Ty::List(Box::new(Ty::of(items))),
            DeclKind::Map(values) => Ty::Map(Box::new(Ty::String), Box::new(Ty::of(values))),
            DeclKind::Object(_) => Ty::Object(decl.clone()),
        }
    }

    /// cel-go's `isScalar`: types whose values all have size 1.
    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Ty::Bool | Ty::Double | Ty::Duration | Ty::Int | Ty::Timestamp | Ty::Uint
        )
    }

    /// The first type parameter (a list's items, a map's keys), used for Kubernetes' list
    /// functions.
    fn first_parameter(&self) -> Option<Ty> {
        match self {
            Ty::List(items) => Some((**items).clone()),
            Ty::Map(keys, _) => Some((**keys).clone()),
            _ => None,
        }
    }

    fn is_dyn(&self) -> bool {
        matches!(self, Ty::Dyn)
    }
}

/// The more precise of two types, for operators whose result has their operands' type.
fn refined(a: &Ty, b: &Ty) -> Ty {
    match (a, b) {
        (Ty::List(x), Ty::List(y)) => Ty::List(Box::new(refined(x, y))),
        (Ty::Dyn, other) => other.clone(),
        (other, _) => other.clone(),
    }
}

// ------------------------------------------------------------------ the estimator

/// What cel-go knows of a container's entries when it built the container itself.
#[derive(Debug, Clone, Copy)]
struct EntrySize {
    is_list: bool,
    key: Range,
    value: Range,
}

impl EntrySize {
    fn union(self, other: EntrySize) -> EntrySize {
        EntrySize {
            is_list: self.is_list,
            key: self.key.union(other.key),
            value: self.value.union(other.value),
        }
    }
}

#[derive(Debug, Clone)]
struct Local {
    path: Vec<String>,
    size: Option<Range>,
    entry_size: Option<EntrySize>,
    ty: Ty,
}

/// An operand as a function's cost sees it.
#[derive(Debug, Clone)]
struct Operand {
    path: Vec<String>,
    ty: Ty,
    size: Option<Range>,
    literal_int: Option<i64>,
}

impl Operand {
    fn size_or_unknown(&self) -> Range {
        self.size.unwrap_or(UNKNOWN)
    }
}

struct Coster {
    /// The declaration of `self` (and `oldSelf`).
    root: Rc<Decl>,
    paths: HashMap<u64, Vec<String>>,
    sizes: HashMap<u64, Range>,
    entry_sizes: HashMap<u64, EntrySize>,
    types: HashMap<u64, Ty>,
    locals: HashMap<String, Vec<Local>>,
}

fn is_accumulator(name: &str) -> bool {
    name == "@result" || name == "__result__"
}

impl Coster {
    fn new(root: Rc<Decl>) -> Self {
        Coster {
            root,
            paths: HashMap::new(),
            sizes: HashMap::new(),
            entry_sizes: HashMap::new(),
            types: HashMap::new(),
            locals: HashMap::new(),
        }
    }

    fn ty(&self, e: &IdedExpr) -> Ty {
        self.types.get(&e.id).cloned().unwrap_or(Ty::Dyn)
    }

    fn local(&self, name: &str) -> Option<&Local> {
        self.locals.get(name).and_then(|stack| stack.last())
    }

    fn push_local(&mut self, name: &str, local: Local) {
        self.locals.entry(name.to_string()).or_default().push(local);
    }

    fn pop_local(&mut self, name: &str) {
        if let Some(stack) = self.locals.get_mut(name) {
            stack.pop();
        }
    }

    fn path(&self, e: &IdedExpr) -> Vec<String> {
        if let Expr::Ident(name) = &e.expr
            && let Some(local) = self.local(name)
        {
            return local.path.clone();
        }
        self.paths.get(&e.id).cloned().unwrap_or_default()
    }

    /// The schema's bound for the value at a path (the first step, `self`, is the root).
    fn estimate_size(&self, path: &[String]) -> Option<Range> {
        if path.is_empty() {
            return None;
        }
        let mut node = self.root.clone();
        for step in &path[1..] {
            node = match (step.as_str(), &node.kind) {
                ("@items" | "@values", DeclKind::List(inner) | DeclKind::Map(inner)) => {
                    inner.clone()
                }
                // A map's keys are declared as plain strings, without a bound of their own.
                ("@keys", DeclKind::Map(_)) => return Some(fixed(0)),
                (field, DeclKind::Object(fields)) => fields.get(field)?.clone(),
                _ => return None,
            };
        }
        Some(Range {
            min: 0,
            max: node.max_elements,
        })
    }

    fn compute_size(&mut self, e: &IdedExpr) -> Option<Range> {
        if let Some(size) = self.sizes.get(&e.id) {
            return Some(*size);
        }
        if let Some(size) = literal_size(e) {
            return Some(size);
        }
        if let Some(size) = self.estimate_size(&self.path(e)) {
            self.sizes.insert(e.id, size);
            return Some(size);
        }
        if self.ty(e).is_scalar() {
            return Some(fixed(1));
        }
        if let Expr::Ident(name) = &e.expr
            && let Some(size) = self.local(name).and_then(|l| l.size)
        {
            return Some(size);
        }
        None
    }

    fn size_or_unknown(&mut self, e: &IdedExpr) -> Range {
        self.compute_size(e).unwrap_or(UNKNOWN)
    }

    fn entry_size(&self, e: &IdedExpr) -> Option<EntrySize> {
        if let Some(size) = self.entry_sizes.get(&e.id) {
            return Some(*size);
        }
        if let Expr::Ident(name) = &e.expr {
            return self.local(name).and_then(|l| l.entry_size);
        }
        None
    }

    fn operand(&mut self, e: &IdedExpr) -> Operand {
        let mut path = self.path(e);
        if path.first().is_some_and(|p| is_accumulator(p)) {
            path.clear();
        }
        let literal_int = match &e.expr {
            Expr::Literal(LiteralValue::Int(i)) => Some(*i.inner()),
            _ => None,
        };
        Operand {
            path,
            ty: self.ty(e),
            size: self.compute_size(e),
            literal_int,
        }
    }

    fn cost(&mut self, e: &IdedExpr) -> Range {
        let (cost, ty) = match &e.expr {
            Expr::Literal(literal) => (fixed(0), literal_type(literal)),
            Expr::Ident(name) => self.cost_ident(e, name),
            Expr::Select(select) => {
                let operand_cost = self.cost(&select.operand);
                let operand_ty = self.ty(&select.operand);
                if select.test {
                    // Kubernetes keeps has() free (cel-go's PresenceTestHasCost(false)).
                    (operand_cost, Ty::Bool)
                } else {
                    let mut cost = operand_cost;
                    if matches!(operand_ty, Ty::Map(..) | Ty::Object(_)) {
                        cost = cost.add(fixed(SELECT_AND_IDENT_COST));
                    }
                    let mut path = self.path(&select.operand);
                    path.push(select.field.clone());
                    self.paths.insert(e.id, path);
                    let ty = match operand_ty {
                        Ty::Object(decl) => match &decl.kind {
                            DeclKind::Object(fields) => {
                                fields.get(&select.field).map(Ty::of).unwrap_or(Ty::Dyn)
                            }
                            _ => Ty::Dyn,
                        },
                        Ty::Map(_, values) => *values,
                        _ => Ty::Dyn,
                    };
                    (cost, ty)
                }
            }
            Expr::Call(_) => self.cost_call(e),
            Expr::List(list) => {
                let mut cost = fixed(0);
                let mut item_size = Range {
                    min: if list.elements.is_empty() {
                        0
                    } else {
                        u64::MAX
                    },
                    max: 0,
                };
                let mut item_ty = Ty::Dyn;
                for element in &list.elements {
                    cost = cost.add(self.cost(element));
                    item_size = item_size.union(self.size_or_unknown(element));
                    item_ty = refined(&item_ty, &self.ty(element));
                }
                self.entry_sizes.insert(
                    e.id,
                    EntrySize {
                        is_list: true,
                        key: fixed(1),
                        value: item_size,
                    },
                );
                (
                    cost.add(fixed(LIST_CREATE_BASE_COST)),
                    Ty::List(Box::new(item_ty)),
                )
            }
            Expr::Map(map) => {
                let mut cost = fixed(0);
                let empty = map.entries.is_empty();
                let start = Range {
                    min: if empty { 0 } else { u64::MAX },
                    max: 0,
                };
                let (mut key_size, mut value_size) = (start, start);
                let (mut key_ty, mut value_ty) = (Ty::Dyn, Ty::Dyn);
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr {
                        cost = cost.add(self.cost(&entry.key));
                        cost = cost.add(self.cost(&entry.value));
                        key_size = key_size.union(self.size_or_unknown(&entry.key));
                        value_size = value_size.union(self.size_or_unknown(&entry.value));
                        key_ty = refined(&key_ty, &self.ty(&entry.key));
                        value_ty = refined(&value_ty, &self.ty(&entry.value));
                    }
                }
                self.entry_sizes.insert(
                    e.id,
                    EntrySize {
                        is_list: false,
                        key: key_size,
                        value: value_size,
                    },
                );
                (
                    cost.add(fixed(MAP_CREATE_BASE_COST)),
                    Ty::Map(Box::new(key_ty), Box::new(value_ty)),
                )
            }
            Expr::Struct(object) => {
                let mut cost = fixed(0);
                for entry in &object.entries {
                    if let EntryExpr::StructField(field) = &entry.expr {
                        cost = cost.add(self.cost(&field.value));
                    }
                }
                (cost.add(fixed(STRUCT_CREATE_BASE_COST)), Ty::Dyn)
            }
            Expr::Comprehension(_) => self.cost_comprehension(e),
            Expr::Unspecified => (fixed(0), Ty::Dyn),
        };
        self.types.insert(e.id, ty);
        cost
    }

    fn cost_ident(&mut self, e: &IdedExpr, name: &str) -> (Range, Ty) {
        let ty = if let Some(local) = self.local(name) {
            let (path, ty) = (local.path.clone(), local.ty.clone());
            self.paths.insert(e.id, path);
            ty
        } else {
            self.paths.insert(e.id, vec![name.to_string()]);
            match name {
                "self" | "oldSelf" => Ty::of(&self.root),
                _ => Ty::Dyn,
            }
        };
        (fixed(SELECT_AND_IDENT_COST), ty)
    }

    fn cost_comprehension(&mut self, e: &IdedExpr) -> (Range, Ty) {
        let Expr::Comprehension(comp) = &e.expr else {
            return (fixed(0), Ty::Dyn);
        };
        let mut cost = self.cost(&comp.iter_range);
        cost = cost.add(self.cost(&comp.accu_init));
        let accu = Local {
            path: self.path(&comp.accu_init),
            size: self.compute_size(&comp.accu_init),
            entry_size: self.entry_size(&comp.accu_init),
            ty: self.ty(&comp.accu_init),
        };
        self.push_local(&comp.accu_var, accu);

        let range_entry = self.entry_size(&comp.iter_range);
        let range_ty = self.ty(&comp.iter_range);
        let range_path = self.path(&comp.iter_range);
        let is_list = match range_entry {
            Some(entry) => entry.is_list,
            None => matches!(range_ty, Ty::List(_)),
        };
        let (key_ty, value_ty) = match &range_ty {
            Ty::List(items) => (Ty::Int, (**items).clone()),
            Ty::Map(keys, values) => ((**keys).clone(), (**values).clone()),
            _ => (Ty::Dyn, Ty::Dyn),
        };
        let iter_local = |subpath: &str, size: Option<Range>, ty: Ty| {
            let mut path = range_path.clone();
            path.push(subpath.to_string());
            Local {
                path,
                size,
                entry_size: None,
                ty,
            }
        };
        match &comp.iter_var2 {
            Some(second) => {
                let key = iter_local(
                    if is_list { "@indices" } else { "@keys" },
                    range_entry.map(|r| r.key),
                    key_ty,
                );
                let value = iter_local(
                    if is_list { "@items" } else { "@values" },
                    range_entry.map(|r| r.value),
                    value_ty,
                );
                self.push_local(&comp.iter_var, key);
                self.push_local(second, value);
            }
            None => {
                let single = if is_list {
                    iter_local("@items", range_entry.map(|r| r.value), value_ty)
                } else {
                    iter_local("@keys", range_entry.map(|r| r.key), key_ty)
                };
                self.push_local(&comp.iter_var, single);
            }
        }
        let loop_cost = self.cost(&comp.loop_cond);
        let step_cost = self.cost(&comp.loop_step);
        let step_ty = self.ty(&comp.loop_step);
        self.pop_local(&comp.iter_var);
        if let Some(second) = &comp.iter_var2 {
            self.pop_local(second);
        }
        if let Some(accu) = self
            .locals
            .get_mut(&comp.accu_var)
            .and_then(|stack| stack.last_mut())
        {
            accu.ty = refined(&step_ty, &accu.ty);
        }
        cost = cost.add(self.cost(&comp.result));
        self.pop_local(&comp.accu_var);
        let range_count = self.size_or_unknown(&comp.iter_range);
        cost = cost.add(range_count.multiply(step_cost.add(loop_cost)));
        match &comp.accu_init.expr {
            Expr::Literal(_) => {
                if let Some(size) = self.compute_size(&comp.accu_init) {
                    self.sizes.insert(e.id, size);
                }
            }
            Expr::List(_) | Expr::Map(_) => {
                self.sizes.insert(e.id, range_count);
                if let Some(entry) = self.entry_size(&comp.loop_step) {
                    self.entry_sizes.insert(e.id, entry);
                }
            }
            _ => {}
        }
        (cost, self.ty(&comp.result))
    }

    fn cost_call(&mut self, e: &IdedExpr) -> (Range, Ty) {
        let Expr::Call(call) = &e.expr else {
            return (fixed(0), Ty::Dyn);
        };
        if call.func_name == "dyn" && call.target.is_none() && call.args.len() == 1 {
            let arg = &call.args[0];
            let cost = self.cost(arg).add(fixed(1));
            if let Some(size) = self.compute_size(arg) {
                self.sizes.insert(e.id, size);
            }
            if let Some(entry) = self.entry_size(arg) {
                self.entry_sizes.insert(e.id, entry);
            }
            return (cost, Ty::Dyn);
        }
        let mut arg_costs = Vec::with_capacity(call.args.len());
        let mut args = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            arg_costs.push(self.cost(arg));
            args.push(self.operand(arg));
        }
        let mut sum = fixed(0);
        let target = match &call.target {
            Some(target) => {
                sum = sum.add(self.cost(target));
                Some(self.operand(target))
            }
            None => None,
        };
        let overload = overload(&call.func_name, target.as_ref(), &args);
        let estimate = self.function_cost(
            e,
            &call.func_name,
            overload,
            target.as_ref(),
            &args,
            &arg_costs,
        );
        let mut result_size = estimate.result_size;
        match overload {
            Overload::IndexList | Overload::IndexMap => {
                let container = &call.args[0];
                result_size = self.entry_size(container).map(|entry| entry.value);
                let mut path = self.path(container);
                path.push(
                    if overload == Overload::IndexList {
                        "@items"
                    } else {
                        "@values"
                    }
                    .to_string(),
                );
                self.paths.insert(e.id, path);
            }
            _ => {}
        }
        let ty = result_type(&call.func_name, overload, target.as_ref(), &args);
        // The result type is needed to size a scalar result.
        self.types.insert(e.id, ty.clone());
        if result_size.is_none() {
            result_size = self.compute_size(e);
        }
        if let Some(size) = result_size {
            self.sizes.insert(e.id, size);
        }
        (sum.add(estimate.cost), ty)
    }

    /// cel-go's `functionCost`: Kubernetes' library charges first, then cel-go's own.
    fn function_cost(
        &mut self,
        e: &IdedExpr,
        function: &str,
        overload: Overload,
        target: Option<&Operand>,
        args: &[Operand],
        arg_costs: &[Range],
    ) -> CallEstimate {
        let arg_sum = arg_costs.iter().fold(fixed(0), |sum, c| sum.add(*c));
        if let Some(estimate) = self.library_cost(function, target, args) {
            return CallEstimate {
                cost: estimate.cost.add(arg_sum),
                result_size: estimate.result_size,
            };
        }
        let plain = |cost: Range| CallEstimate {
            cost: cost.add(arg_sum),
            result_size: None,
        };
        match overload {
            Overload::FormatString => {
                if let Some(target) = target {
                    return plain(
                        target
                            .size_or_unknown()
                            .by_factor(STRING_TRAVERSAL_COST_FACTOR),
                    );
                }
            }
            Overload::StringToBytes | Overload::BytesToString | Overload::QuoteString => {
                let size = args[0].size_or_unknown();
                let result = match overload {
                    Overload::StringToBytes => Range {
                        min: size.min,
                        max: size.max.saturating_mul(4),
                    },
                    Overload::BytesToString => Range {
                        min: size.min / 4,
                        max: size.max,
                    },
                    _ => Range {
                        min: size.min.saturating_add(2),
                        max: size.max.saturating_mul(2).saturating_add(2),
                    },
                };
                return CallEstimate {
                    cost: size.by_factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    result_size: Some(result),
                };
            }
            Overload::StartsOrEndsWith => {
                return plain(
                    args[0]
                        .size_or_unknown()
                        .by_factor(STRING_TRAVERSAL_COST_FACTOR),
                );
            }
            Overload::InList => return plain(args[1].size_or_unknown()),
            Overload::Matches => {
                if let Some(target) = target {
                    let string_cost = target
                        .size_or_unknown()
                        .add(fixed(1))
                        .by_factor(STRING_TRAVERSAL_COST_FACTOR);
                    let regex_cost = args[0]
                        .size_or_unknown()
                        .by_factor(REGEX_STRING_LENGTH_COST_FACTOR);
                    return plain(string_cost.multiply(regex_cost));
                }
            }
            Overload::Contains => {
                if let Some(target) = target {
                    let string_cost = target
                        .size_or_unknown()
                        .by_factor(STRING_TRAVERSAL_COST_FACTOR);
                    let substring_cost = args[0]
                        .size_or_unknown()
                        .by_factor(STRING_TRAVERSAL_COST_FACTOR);
                    return plain(string_cost.multiply(substring_cost));
                }
            }
            Overload::Logical => {
                // Only the left operand is sure to be evaluated.
                let (lhs, rhs) = (arg_costs[0], arg_costs[1]);
                return CallEstimate {
                    cost: Range {
                        min: lhs.min,
                        max: lhs.add(rhs).max,
                    },
                    result_size: None,
                };
            }
            Overload::Conditional => {
                let size = args[1].size_or_unknown().union(args[2].size_or_unknown());
                if let Expr::Call(call) = &e.expr {
                    let entries = (
                        self.entry_size(&call.args[1]),
                        self.entry_size(&call.args[2]),
                    );
                    if let (Some(a), Some(b)) = entries {
                        self.entry_sizes.insert(e.id, a.union(b));
                    }
                }
                return CallEstimate {
                    cost: arg_costs[0].add(arg_costs[1].union(arg_costs[2])),
                    result_size: Some(size),
                };
            }
            Overload::AddString | Overload::AddList => {
                let size = args[0].size_or_unknown().add(args[1].size_or_unknown());
                if let Expr::Call(call) = &e.expr {
                    let entries = (
                        self.entry_size(&call.args[0]),
                        self.entry_size(&call.args[1]),
                    );
                    if let (Some(a), Some(b)) = entries {
                        self.entry_sizes.insert(e.id, a.union(b));
                    }
                }
                let cost = if overload == Overload::AddList {
                    fixed(1)
                } else {
                    size.by_factor(STRING_TRAVERSAL_COST_FACTOR)
                };
                return CallEstimate {
                    cost: cost.add(arg_sum),
                    result_size: Some(size),
                };
            }
            Overload::SizedComparison => {
                let smallest_max = args[0]
                    .size_or_unknown()
                    .max
                    .min(args[1].size_or_unknown().max);
                let cost = Range {
                    min: u64::from(smallest_max > 0),
                    max: smallest_max,
                };
                return plain(cost.by_factor(STRING_TRAVERSAL_COST_FACTOR));
            }
            _ => {}
        }
        plain(fixed(1))
    }

    /// The size of an operand as Kubernetes' library estimator reads it.
    fn library_size(&self, operand: &Operand) -> Range {
        operand
            .size
            .or_else(|| self.estimate_size(&operand.path))
            .unwrap_or(UNKNOWN)
    }

    /// The size of a list's items, for Kubernetes' list and string functions.
    fn item_size(&self, list: &Operand) -> Option<(Ty, Range)> {
        let items = list.ty.first_parameter()?;
        let size = if list.path.is_empty() {
            UNKNOWN
        } else {
            let mut path = list.path.clone();
            path.push("@items".into());
            self.estimate_size(&path).unwrap_or(UNKNOWN)
        };
        Some((items, size))
    }

    /// Kubernetes' `library.CostEstimator.EstimateCallCost`, for the functions whose cost
    /// depends on sizes. None where it leaves the estimate to cel-go.
    fn library_cost(
        &self,
        function: &str,
        target: Option<&Operand>,
        args: &[Operand],
    ) -> Option<CallEstimate> {
        let traversal = |size: Range| size.by_factor(STRING_TRAVERSAL_COST_FACTOR);
        let with_result = |cost: Range, size: Range| {
            Some(CallEstimate {
                cost,
                result_size: Some(size),
            })
        };
        let cost_only = |cost: Range| {
            Some(CallEstimate {
                cost,
                result_size: None,
            })
        };
        match function {
            "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" | "includes" => {
                let target = target?;
                let mut element_cost = fixed(1);
                let size = self.library_size(target);
                if let Some((items, items_size)) = self.item_size(target) {
                    if matches!(items, Ty::String | Ty::Bytes) {
                        element_cost = element_cost.add(traversal(items_size));
                    }
                    cost_only(size.multiply(element_cost))
                } else if function == "includes" {
                    cost_only(size.multiply(element_cost))
                } else {
                    cost_only(traversal(size))
                }
            }
            "url" | "jsonpatch.escapeKey" if args.len() == 1 => {
                let size = self.library_size(&args[0]);
                with_result(traversal(size), size)
            }
            "lowerAscii" | "upperAscii" | "substring" | "trim" => {
                let size = self.library_size(target?);
                with_result(traversal(size), size)
            }
            "replace" if args.len() >= 2 => {
                let size = self.library_size(target?);
                let to_replace = self.library_size(&args[0]);
                let replace_with = self.library_size(&args[1]);
                let (mut count, mut retained) = (fixed(0), fixed(0));
                if to_replace.min == 0 {
                    count.max = size.max.saturating_add(1);
                    retained.max = size.max;
                } else if replace_with.max <= to_replace.min {
                    retained.max = size.max;
                } else {
                    count.max = size.max.div_ceil(to_replace.min);
                }
                if to_replace.max == 0 {
                    count.min = size.min.saturating_add(1);
                    retained.min = size.min;
                } else if to_replace.max <= replace_with.min {
                    retained.min = size.min;
                } else {
                    count.min = size.min.div_ceil(to_replace.max);
                }
                let result = count.multiply(replace_with).add(retained);
                with_result(size.by_factor(2.0 * STRING_TRAVERSAL_COST_FACTOR), result)
            }
            "split" => {
                let size = self.library_size(target?);
                let max = match args.get(1).and_then(|a| a.literal_int) {
                    Some(limit) => limit as u64,
                    None => size.max,
                };
                with_result(
                    size.by_factor(2.0 * STRING_TRAVERSAL_COST_FACTOR),
                    Range { min: 0, max },
                )
            }
            "join" => {
                let target = target?;
                let list_size = self.library_size(target);
                let mut size = fixed(0);
                if let Some((_, items_size)) = self.item_size(target) {
                    size = list_size.multiply(items_size);
                }
                if let Some(separator) = args.first() {
                    let separators = Range {
                        min: list_size.min.saturating_sub(1),
                        max: list_size.max.saturating_sub(1),
                    };
                    size = size.add(self.library_size(separator).multiply(separators));
                }
                with_result(traversal(size), size)
            }
            "find" | "findAll" if !args.is_empty() => {
                let size = self.library_size(target?);
                let string_cost = traversal(size.add(fixed(1)));
                let regex_cost = self
                    .library_size(&args[0])
                    .by_factor(REGEX_STRING_LENGTH_COST_FACTOR);
                with_result(
                    string_cost.multiply(regex_cost),
                    Range {
                        min: 0,
                        max: size.max,
                    },
                )
            }
            "cidr" | "isIP" | "isCIDR" | "ip" | "quantity" | "isQuantity" | "semver"
            | "isSemver"
                if !args.is_empty() =>
            {
                cost_only(traversal(self.library_size(&args[0])))
            }
            "ip.isCanonical" if !args.is_empty() => cost_only(
                self.library_size(&args[0])
                    .by_factor(2.0 * STRING_TRAVERSAL_COST_FACTOR),
            ),
            "validate" if !args.is_empty() => cost_only(
                traversal(self.library_size(&args[0]))
                    .by_factor(MAX_NAME_FORMAT_REGEX_SIZE * REGEX_STRING_LENGTH_COST_FACTOR),
            ),
            _ => None,
        }
    }
}

struct CallEstimate {
    cost: Range,
    result_size: Option<Range>,
}

/// The overloads whose cost cel-go computes from sizes; every other call costs 1 plus its
/// arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overload {
    FormatString,
    StringToBytes,
    BytesToString,
    QuoteString,
    StartsOrEndsWith,
    InList,
    Matches,
    Contains,
    Logical,
    Conditional,
    AddString,
    AddList,
    /// Equality, and ordering of strings and bytes: charged by the smaller operand.
    SizedComparison,
    IndexList,
    IndexMap,
    Other,
}

fn overload(function: &str, target: Option<&Operand>, args: &[Operand]) -> Overload {
    let arg_ty = |i: usize| args.get(i).map(|a| &a.ty);
    let is = |i: usize, pred: fn(&Ty) -> bool| arg_ty(i).is_some_and(pred);
    match function {
        operators::LOGICAL_AND | operators::LOGICAL_OR if args.len() == 2 => Overload::Logical,
        operators::CONDITIONAL if args.len() == 3 => Overload::Conditional,
        operators::EQUALS | operators::NOT_EQUALS if args.len() == 2 => Overload::SizedComparison,
        operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS
            if is(0, |t| matches!(t, Ty::String | Ty::Bytes)) =>
        {
            Overload::SizedComparison
        }
        operators::ADD if args.len() == 2 => {
            let any = |pred: fn(&Ty) -> bool| is(0, pred) || is(1, pred);
            if any(|t| matches!(t, Ty::List(_))) {
                Overload::AddList
            } else if any(|t| matches!(t, Ty::String | Ty::Bytes))
                || (is(0, Ty::is_dyn) && is(1, Ty::is_dyn))
            {
                Overload::AddString
            } else {
                Overload::Other
            }
        }
        operators::IN if args.len() == 2 => {
            if is(1, |t| matches!(t, Ty::Map(..))) {
                Overload::Other
            } else {
                Overload::InList
            }
        }
        operators::INDEX if args.len() == 2 => {
            if is(0, |t| matches!(t, Ty::List(_))) {
                Overload::IndexList
            } else {
                Overload::IndexMap
            }
        }
        "matches" if target.is_some() && args.len() == 1 => Overload::Matches,
        "contains" if target.is_some_and(|t| !matches!(t.ty, Ty::List(_) | Ty::Map(..))) => {
            Overload::Contains
        }
        "startsWith" | "endsWith" if target.is_some() && args.len() == 1 => {
            Overload::StartsOrEndsWith
        }
        "format" if target.is_some() => Overload::FormatString,
        "bytes" if target.is_none() && is(0, |t| matches!(t, Ty::String)) => {
            Overload::StringToBytes
        }
        "string" if target.is_none() && is(0, |t| matches!(t, Ty::Bytes)) => {
            Overload::BytesToString
        }
        "strings.quote" => Overload::QuoteString,
        _ => Overload::Other,
    }
}

fn result_type(
    function: &str,
    overload: Overload,
    target: Option<&Operand>,
    args: &[Operand],
) -> Ty {
    let arg_ty = |i: usize| args.get(i).map(|a| a.ty.clone()).unwrap_or(Ty::Dyn);
    match overload {
        Overload::IndexList | Overload::IndexMap => {
            return match arg_ty(0) {
                Ty::List(items) => *items,
                Ty::Map(_, values) => *values,
                _ => Ty::Dyn,
            };
        }
        Overload::Conditional => return refined(&arg_ty(1), &arg_ty(2)),
        Overload::AddList | Overload::AddString => return refined(&arg_ty(0), &arg_ty(1)),
        _ => {}
    }
    match function {
        operators::LOGICAL_AND
        | operators::LOGICAL_OR
        | operators::LOGICAL_NOT
        | operators::EQUALS
        | operators::NOT_EQUALS
        | operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS
        | operators::IN
        | operators::NOT_STRICTLY_FALSE
        | "matches"
        | "contains"
        | "startsWith"
        | "endsWith"
        | "isSorted"
        | "bool" => Ty::Bool,
        operators::ADD
        | operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO
        | operators::NEGATE => refined(&arg_ty(0), &arg_ty(1)),
        "size" | "int" | "indexOf" | "lastIndexOf" | "getHours" | "getMinutes" | "getSeconds"
        | "getMilliseconds" | "getDayOfMonth" | "getDayOfWeek" | "getDayOfYear" | "getMonth"
        | "getFullYear" | "getDate" => Ty::Int,
        "uint" => Ty::Uint,
        "double" => Ty::Double,
        "string" | "join" | "lowerAscii" | "upperAscii" | "trim" | "substring" | "replace"
        | "format" | "charAt" | "find" | "strings.quote" | "reverse" => Ty::String,
        "bytes" => Ty::Bytes,
        "duration" => Ty::Duration,
        "timestamp" => Ty::Timestamp,
        "split" | "findAll" => Ty::List(Box::new(Ty::String)),
        "sum" | "min" | "max" => target
            .and_then(|t| t.ty.first_parameter())
            .unwrap_or(Ty::Dyn),
        _ => Ty::Dyn,
    }
}

fn literal_type(literal: &LiteralValue) -> Ty {
    match literal {
        LiteralValue::Boolean(_) => Ty::Bool,
        LiteralValue::Bytes(_) => Ty::Bytes,
        LiteralValue::Double(_) => Ty::Double,
        LiteralValue::Int(_) => Ty::Int,
        LiteralValue::Null => Ty::Null,
        LiteralValue::String(_) => Ty::String,
        LiteralValue::UInt(_) => Ty::Uint,
    }
}

/// cel-go's `computeExprSize`: the size of a literal, list or map written in the expression.
fn literal_size(e: &IdedExpr) -> Option<Range> {
    let size = match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => s.inner().chars().count() as u64,
        Expr::Literal(LiteralValue::Bytes(b)) => b.inner().len() as u64,
        Expr::Literal(_) => 1,
        Expr::List(list) => list.elements.len() as u64,
        Expr::Map(map) => map.entries.len() as u64,
        _ => return None,
    };
    Some(fixed(size))
}

// ------------------------------------------------------------------ rules and schemas

/// The worst-case cost of one expression evaluated against a schema node, before it is
/// multiplied by the number of times the rule runs. None when the expression does not parse.
fn expression_cost(decl: &Rc<Decl>, expression: &str) -> Option<u64> {
    let parsed = cel::parser::Parser::new().parse(expression).ok()?;
    let mut coster = Coster::new(decl.clone());
    Some(coster.cost(&parsed).max)
}

/// The estimated cost of one rule of a schema, as kube-apiserver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCost {
    /// Where the expression is, such as
    /// `openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule`.
    pub field: String,
    /// The cost charged against the limits: a rule's worst-case cost times the number of times
    /// it can run; a messageExpression's worst-case cost alone, as kube-apiserver charges it.
    pub cost: u64,
}

/// The estimated costs of all rules of one schema.
#[derive(Debug, Clone, Default)]
pub struct SchemaCost {
    /// Every rule and messageExpression, in schema order.
    pub rules: Vec<RuleCost>,
    /// Where the schema is (the field path of `openAPIV3Schema`).
    location: String,
}

impl SchemaCost {
    /// The sum that kube-apiserver compares with [`PER_SCHEMA_COST_LIMIT`].
    pub fn total(&self) -> u64 {
        self.rules
            .iter()
            .fold(0u64, |sum, rule| sum.saturating_add(rule.cost))
    }

    /// The failures kube-apiserver reports for this schema: each rule or messageExpression over
    /// [`PER_RULE_COST_LIMIT`] (when `each_rule` is true; kube-apiserver does not hold a schema
    /// an update leaves unchanged to that limit again), then, when the total is over
    /// [`PER_SCHEMA_COST_LIMIT`], the (at most four) costliest expressions and the schema itself.
    pub fn violations(&self, each_rule: bool) -> Vec<FieldError> {
        let mut errors: Vec<FieldError> = self
            .rules
            .iter()
            .filter(|rule| each_rule && rule.cost > PER_RULE_COST_LIMIT)
            .map(|rule| {
                let what = if rule.field.ends_with(".messageExpression") {
                    "estimated messageExpression cost"
                } else {
                    "estimated rule cost"
                };
                forbidden(
                    &rule.field,
                    budget_message(what, rule.cost, PER_RULE_COST_LIMIT),
                )
            })
            .collect();
        let total = self.total();
        if total > PER_SCHEMA_COST_LIMIT {
            let mut expensive: Vec<&RuleCost> = self
                .rules
                .iter()
                .filter(|rule| rule.cost >= PER_SCHEMA_COST_LIMIT / 100)
                .collect();
            expensive.sort_by_key(|rule| std::cmp::Reverse(rule.cost));
            for rule in expensive.into_iter().take(4) {
                errors.push(forbidden(
                    &rule.field,
                    "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".into(),
                ));
            }
            errors.push(forbidden(
                &self.location,
                budget_message(
                    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                    total,
                    PER_SCHEMA_COST_LIMIT,
                ),
            ));
        }
        errors
    }
}

fn forbidden(field: &str, detail: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: FieldErrorReason::Forbidden,
        message: format!("Forbidden: {detail}"),
    }
}

/// kube-apiserver's wording of an over-budget cost, with the factor printed as Go prints it.
fn budget_message(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

/// Estimates every rule of a CRD version's `openAPIV3Schema`. `location` is the schema's field
/// path, such as `spec.validation.openAPIV3Schema`.
pub fn estimate(open_api_v3_schema: &Value, location: &str) -> SchemaCost {
    let mut report = SchemaCost {
        rules: Vec::new(),
        location: location.to_string(),
    };
    walk(open_api_v3_schema, location, Some(1), true, &mut report);
    report
}

/// How many values of a node's children one value of the node holds: a list's `maxItems`, a
/// map's `maxProperties`, 1 for an object; None when unbounded.
fn max_children(schema: &Value) -> Option<u64> {
    let map = schema.as_object()?;
    match map.get("type").and_then(Value::as_str) {
        Some("object") if map.contains_key("additionalProperties") => bound(map, "maxProperties"),
        Some("array") => bound(map, "maxItems"),
        _ => Some(1),
    }
}

fn walk(
    schema: &Value,
    location: &str,
    cardinality: Option<u64>,
    resource_root: bool,
    report: &mut SchemaCost,
) {
    let Some(map) = schema.as_object() else {
        return;
    };
    if let Some(rules) = map
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .filter(|rules| !rules.is_empty())
        && let Some(decl) = declaration(schema, resource_root || is_embedded(schema))
    {
        // Where the node's own bound is unknown, kube-apiserver assumes as many values as
        // fit in a request.
        let times = cardinality.unwrap_or(MAX_REQUEST_SIZE_BYTES / (decl.min_serialized_size + 1));
        for (i, rule) in rules.iter().enumerate() {
            let prefix = format!("{location}.x-kubernetes-validations[{i}]");
            let expression = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
            if !expression.trim().is_empty()
                && let Some(cost) = expression_cost(&decl, expression)
            {
                report.rules.push(RuleCost {
                    field: format!("{prefix}.rule"),
                    cost: cost.saturating_mul(times),
                });
            }
            let message = rule
                .get("messageExpression")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !message.is_empty()
                && let Some(cost) = expression_cost(&decl, message)
            {
                report.rules.push(RuleCost {
                    field: format!("{prefix}.messageExpression"),
                    cost,
                });
            }
        }
    }
    let child_cardinality =
        cardinality.and_then(|c| max_children(schema).map(|m| c.saturating_mul(m)));
    if let Some(properties) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            walk(
                child,
                &format!("{location}.properties[{name}]"),
                child_cardinality,
                false,
                report,
            );
        }
    }
    if let Some(child) = map.get("additionalProperties").filter(|a| a.is_object()) {
        walk(
            child,
            &format!("{location}.additionalProperties"),
            child_cardinality,
            false,
            report,
        );
    }
    if let Some(child) = map.get("items").filter(|i| i.is_object()) {
        walk(
            child,
            &format!("{location}.items"),
            child_cardinality,
            false,
            report,
        );
    }
}

#[cfg(test)]
#[path = "cost_tests.rs"]
mod tests;
