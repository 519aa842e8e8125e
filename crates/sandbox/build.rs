//! Generates the protobuf message table the API server decodes and encodes
//! `application/vnd.kubernetes.protobuf` bodies with.
//!
//! The message definitions (field tags, wire types, nested message types) come from the
//! source of kube-rs's `k8s-pb` crate, which prost-build generated from Kubernetes'
//! `generated.proto` files. Those files name each field after its Go JSON name, but prost
//! renamed them to snake_case (`podIP` became `pod_ip`), so the exact JSON names come from
//! `k8s-openapi`'s `Deserialize` impls, matched per type by a normalised name. Both crates'
//! sources are located with `cargo metadata`, as resolved for this package.
//!
//! The output, `$OUT_DIR/protobuf_messages.rs`, is data only: `MESSAGES` (sorted by full
//! name), each with its fields sorted by tag, and `API_VERSIONS`, mapping an `apiVersion`
//! to the k8s-pb module holding its kinds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use heck::ToLowerCamelCase as _;
use serde_json::Value;
use syn::visit::Visit;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=Cargo.toml");
    let k8s_pb = dependency_root("k8s-pb");
    let k8s_openapi = dependency_root("k8s-openapi");

    let mut messages = BTreeMap::new();
    let mut api_versions = BTreeMap::new();
    for file in rust_files(&k8s_pb.join("src")) {
        let module = module_path(&k8s_pb.join("src"), &file);
        read_k8s_pb_module(&file, &module, &mut messages, &mut api_versions);
    }
    let json_names = openapi_json_names(&k8s_openapi);

    let index: HashMap<&str, usize> = messages
        .keys()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    // The fields of a message embedded inline are named in the parent's k8s-openapi type
    // (VolumeSource's `downwardAPI` in Volume's); k8s-openapi has no type of their own.
    let mut json_names = json_names;
    for (name, fields) in &messages {
        let (module, type_name) = name.rsplit_once('.').expect("qualified name");
        let Some(parent_names) = json_names
            .get(&format!("{module}.{}", normalise(type_name)))
            .cloned()
        else {
            continue;
        };
        for field in fields {
            if let Kind::Message(embedded) = &field.kind
                && is_inline(field, &parent_names, &messages)
            {
                let (module, type_name) = embedded.rsplit_once('.').expect("qualified name");
                json_names
                    .entry(format!("{module}.{}", normalise(type_name)))
                    .or_insert_with(|| parent_names.clone());
            }
        }
    }

    let mut out = String::new();
    out.push_str("/// Every k8s-pb message, sorted by full name.\n");
    out.push_str("pub(super) static MESSAGES: &[MessageDef] = &[\n");
    for (name, fields) in &messages {
        let (module, type_name) = name.rsplit_once('.').expect("qualified name");
        let names = json_names.get(&format!("{module}.{}", normalise(type_name)));
        writeln!(out, "    MessageDef {{ name: {name:?}, fields: &[").unwrap();
        let mut fields = fields.clone();
        fields.sort_by_key(|field: &FieldSpec| field.tag);
        for field in fields {
            let json = names.and_then(|names| {
                names
                    .iter()
                    .find(|json| normalise(json) == normalise(&field.rust_name))
            });
            let inline = names.is_some_and(|names| is_inline(&field, names, &messages));
            let json = json
                .cloned()
                .unwrap_or_else(|| field.rust_name.to_lower_camel_case());
            let label = if inline { Label::Inline } else { field.label };
            let kind = match &field.kind {
                Kind::Scalar(scalar) => format!("Kind::{scalar}"),
                Kind::Message(message) => {
                    let i = index
                        .get(message.as_str())
                        .unwrap_or_else(|| panic!("{name}.{}: no message {message}", field.tag));
                    format!("Kind::Message({i})")
                }
            };
            writeln!(
                out,
                "        FieldDef {{ tag: {}, json: {json:?}, label: Label::{:?}, kind: {kind} }},",
                field.tag, label
            )
            .unwrap();
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n\n");
    out.push_str("/// The k8s-pb module of each `apiVersion`, sorted.\n");
    out.push_str("pub(super) static API_VERSIONS: &[(&str, &str)] = &[\n");
    for (api_version, module) in &api_versions {
        writeln!(out, "    ({api_version:?}, {module:?}),").unwrap();
    }
    out.push_str("];\n");

    let path =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("protobuf_messages.rs");
    std::fs::write(&path, out).expect("write the message table");
}

/// Whether a field is a Go struct embedded with `json:",inline"` (LocalObjectReference in
/// SecretKeySelector, VolumeSource in Volume): a message field in protobuf whose own fields
/// are the parent's in JSON, where the parent's k8s-openapi type has no name for it.
/// Embedded structs may embed others in turn (Rule in RuleWithOperations in
/// NamedRuleWithOperations), to this depth.
fn is_inline(
    field: &FieldSpec,
    parent_names: &[String],
    messages: &BTreeMap<String, Vec<FieldSpec>>,
) -> bool {
    is_inline_within(field, parent_names, messages, 3)
}

fn is_inline_within(
    field: &FieldSpec,
    parent_names: &[String],
    messages: &BTreeMap<String, Vec<FieldSpec>>,
    depth: usize,
) -> bool {
    let known = |rust_name: &str| {
        parent_names
            .iter()
            .any(|json| normalise(json) == normalise(rust_name))
    };
    match (&field.kind, field.label) {
        (Kind::Message(embedded), Label::Optional) if depth > 0 && !known(&field.rust_name) => {
            messages[embedded].iter().all(|inner| {
                known(&inner.rust_name)
                    || is_inline_within(inner, parent_names, messages, depth - 1)
            })
        }
        _ => false,
    }
}

/// The source directory of the named dependency, as `cargo metadata` resolves it for this package.
fn dependency_root(name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"))
        .join("Cargo.toml");
    // Cargo downloads only the crates the target platform needs, so an unfiltered resolve would
    // ask for other platforms' crates. The resolve still covers the whole workspace's
    // dev-dependencies, which a fresh machine building only `tusk-cli` (`scripts/dev`) has not
    // downloaded yet: then cargo fetches them, as the locked versions from the same registry the
    // build itself uses.
    let target = std::env::var("TARGET").expect("TARGET");
    let metadata = |offline: bool| {
        let mut command = Command::new(&cargo);
        command.args(["metadata", "--format-version", "1", "--locked"]);
        if offline {
            command.arg("--offline");
        }
        command
            .args(["--filter-platform", &target, "--manifest-path"])
            .arg(&manifest)
            .output()
            .expect("run cargo metadata")
    };
    let mut output = metadata(true);
    if !output.status.success() {
        output = metadata(false);
    }
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let package_name = std::env::var("CARGO_PKG_NAME").expect("CARGO_PKG_NAME");
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes");
    let packages = metadata["packages"].as_array().expect("packages");
    let package_of = |id: &str| packages.iter().find(|package| package["id"] == id);
    let this = nodes
        .iter()
        .find(|node| {
            package_of(node["id"].as_str().unwrap_or("")).is_some_and(|p| p["name"] == package_name)
        })
        .expect("this package in the resolve graph");
    let dependency = this["deps"]
        .as_array()
        .expect("deps")
        .iter()
        .filter_map(|dep| package_of(dep["pkg"].as_str()?))
        .find(|package| package["name"] == name)
        .unwrap_or_else(|| panic!("{package_name} does not depend on {name}"));
    let manifest_path = dependency["manifest_path"].as_str().expect("manifest_path");
    let root = Path::new(manifest_path)
        .parent()
        .expect("crate root")
        .to_path_buf();
    println!("cargo::rerun-if-changed={}", root.display());
    root
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// `src/api/core/v1/mod.rs` -> `["api", "core", "v1"]`: the module a source file defines.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    if last != "mod.rs" && last != "lib.rs" {
        parts.push(last.trim_end_matches(".rs").to_owned());
    }
    parts
}

#[derive(Clone)]
enum Kind {
    Scalar(&'static str),
    Message(String),
}

#[derive(Clone, Copy, Debug)]
enum Label {
    Optional,
    Repeated,
    Map,
    Inline,
}

#[derive(Clone)]
struct FieldSpec {
    tag: u32,
    rust_name: String,
    label: Label,
    kind: Kind,
}

fn read_k8s_pb_module(
    file: &Path,
    module: &[String],
    messages: &mut BTreeMap<String, Vec<FieldSpec>>,
    api_versions: &mut BTreeMap<String, String>,
) {
    let text = std::fs::read_to_string(file).expect("read k8s-pb source");
    let syntax = syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
    for item in syntax.items {
        match item {
            syn::Item::Struct(item) if derives_message(&item.attrs) => {
                let name = format!("{}.{}", module.join("."), item.ident);
                let fields = item
                    .fields
                    .iter()
                    .filter_map(|field| field_spec(module, field))
                    .collect();
                messages.insert(name, fields);
            }
            syn::Item::Impl(item)
                if item.trait_.as_ref().is_some_and(|(_, path, _)| {
                    path.segments.last().is_some_and(|s| s.ident == "Resource")
                }) =>
            {
                for impl_item in &item.items {
                    if let syn::ImplItem::Const(constant) = impl_item
                        && constant.ident == "API_VERSION"
                        && let syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(value),
                            ..
                        }) = &constant.expr
                    {
                        api_versions.insert(value.value(), module.join("."));
                    }
                }
            }
            _ => {}
        }
    }
}

fn derives_message(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("derive")
            && attr
                .parse_args_with(
                    syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
                )
                .is_ok_and(|paths| {
                    paths.iter().any(|path| {
                        path.segments.len() == 2
                            && path.segments[0].ident == "prost"
                            && path.segments[1].ident == "Message"
                    })
                })
    })
}

/// A field's tag, label and type from its `#[prost(...)]` attribute and Rust type.
fn field_spec(module: &[String], field: &syn::Field) -> Option<FieldSpec> {
    let attr = field
        .attrs
        .iter()
        .find(|attr| attr.path().is_ident("prost"))?;
    let mut tag = None;
    let mut label = Label::Optional;
    let mut scalar = None;
    attr.parse_nested_meta(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        let value = if meta.input.peek(syn::Token![=]) {
            Some(meta.value()?.parse::<syn::LitStr>()?.value())
        } else {
            None
        };
        match (key.as_str(), value) {
            ("tag", Some(value)) => tag = Some(value.parse().expect("numeric tag")),
            ("repeated", None) => label = Label::Repeated,
            ("btree_map" | "map" | "hash_map", Some(value)) => {
                label = Label::Map;
                let (key_type, value_type) = value.split_once(',').expect("map key, value");
                assert_eq!(key_type.trim(), "string", "k8s maps have string keys");
                scalar = Some(value_type.trim().to_owned());
            }
            ("bytes", _) => scalar = Some("bytes".to_owned()),
            ("optional" | "boxed" | "packed", _) => {}
            (other, None) => scalar = Some(other.to_owned()),
            (other, Some(_)) => panic!("unexpected prost attribute {other}"),
        }
        Ok(())
    })
    .expect("parse #[prost(...)]");
    let scalar = scalar.expect("a prost field type");
    let kind = match scalar.as_str() {
        "message" => Kind::Message(message_type(module, &field.ty)),
        "string" => Kind::Scalar("String"),
        "bytes" => Kind::Scalar("Bytes"),
        "bool" => Kind::Scalar("Bool"),
        "int32" => Kind::Scalar("Int32"),
        "int64" => Kind::Scalar("Int64"),
        "double" => Kind::Scalar("Double"),
        other => panic!("k8s-pb field type {other} is not supported"),
    };
    let rust_name = field.ident.as_ref().expect("named field").to_string();
    Some(FieldSpec {
        tag: tag.expect("a prost tag"),
        rust_name: rust_name.trim_start_matches("r#").to_owned(),
        label,
        kind,
    })
}

/// The full name of the message a field holds: the innermost type argument of
/// `Option`/`Vec`/`Box`/`BTreeMap`, resolved against the module (`super::`, `crate::`).
fn message_type(module: &[String], ty: &syn::Type) -> String {
    let syn::Type::Path(path) = ty else {
        panic!("unexpected field type");
    };
    let last = path.path.segments.last().expect("type name");
    let wrapper =
        ["Option", "Vec", "Box", "BTreeMap", "HashMap"].contains(&last.ident.to_string().as_str());
    if wrapper && let syn::PathArguments::AngleBracketed(args) = &last.arguments {
        let inner = args
            .args
            .iter()
            .filter_map(|arg| match arg {
                syn::GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .next_back()
            .expect("a type argument");
        return message_type(module, inner);
    }
    let mut resolved: Vec<String> = module.to_vec();
    for segment in &path.path.segments {
        match segment.ident.to_string().as_str() {
            "super" => {
                resolved.pop();
            }
            "crate" => resolved.clear(),
            other => resolved.push(other.to_owned()),
        }
    }
    resolved.join(".")
}

/// `{module}.{normalised type name}` -> the JSON field names of that type in k8s-openapi, read
/// from the match arms (`"podIP" => Field::Key_pod_ip`) of its `Deserialize` impl.
fn openapi_json_names(root: &Path) -> HashMap<String, Vec<String>> {
    let src = root.join("src");
    // The newest Kubernetes version: fields are only ever added.
    let newest = std::fs::read_dir(&src)
        .expect("read k8s-openapi src")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            let minor: u32 = name.strip_prefix("v1_")?.parse().ok()?;
            Some((minor, name))
        })
        .max()
        .expect("a v1_* module in k8s-openapi")
        .1;
    let versioned = src.join(newest);
    let mut names = HashMap::new();
    for file in rust_files(&versioned) {
        let mut module = module_path(&versioned, &file);
        module.pop(); // the file of one type, e.g. `pod_status`
        let text = std::fs::read_to_string(&file).expect("read k8s-openapi source");
        let Ok(syntax) = syn::parse_file(&text) else {
            continue;
        };
        for item in syntax.items {
            let syn::Item::Impl(item) = item else {
                continue;
            };
            let is_deserialize = item.trait_.as_ref().is_some_and(|(_, path, _)| {
                path.segments
                    .last()
                    .is_some_and(|s| s.ident == "Deserialize")
            });
            let syn::Type::Path(self_ty) = &*item.self_ty else {
                continue;
            };
            if !is_deserialize {
                continue;
            }
            let type_name = self_ty
                .path
                .segments
                .last()
                .expect("type name")
                .ident
                .to_string();
            let mut arms = FieldArms::default();
            arms.visit_item_impl(&item);
            names.insert(
                format!("{}.{}", module.join("."), normalise(&type_name)),
                arms.names,
            );
        }
    }
    names
}

/// Collects `"jsonName" => Field::Key_...` match arms.
#[derive(Default)]
struct FieldArms {
    names: Vec<String>,
}

impl<'ast> Visit<'ast> for FieldArms {
    fn visit_arm(&mut self, arm: &'ast syn::Arm) {
        if let syn::Pat::Lit(syn::ExprLit {
            lit: syn::Lit::Str(name),
            ..
        }) = &arm.pat
            && let syn::Expr::Path(path) = &*arm.body
            && path
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident.to_string().starts_with("Key_"))
        {
            self.names.push(name.value());
        }
        syn::visit::visit_arm(self, arm);
    }
}

/// Lower case without separators: `pod_ip`, `podIP` and `PodIP` all become `podip`,
/// `$ref` becomes `ref`, `x-kubernetes-list-type` becomes `xkuberneteslisttype`.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}
