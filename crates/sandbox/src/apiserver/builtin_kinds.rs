//! The built-in kinds the sandbox serves, each with its `k8s-openapi` type: one list, from
//! which the OpenAPI documents, the strict decoding of built-in objects and the protobuf tests
//! take the kinds' schemas. A unit test keeps it equal to the registry's built-ins.

use std::sync::LazyLock;

use k8s_openapi::Resource;
use k8s_openapi::api::{
    admissionregistration::v1 as admissionregistration, apps::v1 as apps,
    authentication::v1 as authentication, authorization::v1 as authorization,
    autoscaling::v2 as autoscaling, batch::v1 as batch, certificates::v1 as certificates,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;

/// A built-in kind and its type's schema.
pub(crate) struct BuiltinKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Adds the type's schema (and those it refers to) to a generator and returns its
    /// definition name.
    pub add_to: fn(&mut SchemaGenerator) -> String,
    /// The type's JSON Schema on its own, with the definitions it refers to under `$defs`.
    pub root_schema: fn() -> Value,
}

impl BuiltinKind {
    fn of<T: Resource + JsonSchema>() -> Self {
        BuiltinKind {
            group: T::GROUP,
            version: T::VERSION,
            kind: T::KIND,
            add_to: |generator| {
                generator.subschema_for::<T>();
                T::schema_name().into_owned()
            },
            root_schema: || serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default(),
        }
    }

    /// `group/version`, or `version` for the core group.
    #[cfg(test)]
    pub(crate) fn api_version(&self) -> String {
        match self.group {
            "" => self.version.to_owned(),
            group => format!("{group}/{}", self.version),
        }
    }
}

/// Every built-in kind the sandbox serves.
pub(crate) static BUILTIN_KINDS: LazyLock<Vec<BuiltinKind>> = LazyLock::new(|| {
    vec![
        BuiltinKind::of::<core::Namespace>(),
        BuiltinKind::of::<core::Secret>(),
        BuiltinKind::of::<core::ConfigMap>(),
        BuiltinKind::of::<core::Service>(),
        BuiltinKind::of::<core::Pod>(),
        BuiltinKind::of::<core::PersistentVolumeClaim>(),
        BuiltinKind::of::<core::ServiceAccount>(),
        BuiltinKind::of::<core::Event>(),
        BuiltinKind::of::<core::Endpoints>(),
        BuiltinKind::of::<core::Node>(),
        BuiltinKind::of::<core::ReplicationController>(),
        BuiltinKind::of::<core::ResourceQuota>(),
        BuiltinKind::of::<core::LimitRange>(),
        BuiltinKind::of::<core::PersistentVolume>(),
        BuiltinKind::of::<apps::StatefulSet>(),
        BuiltinKind::of::<apps::Deployment>(),
        BuiltinKind::of::<apps::ReplicaSet>(),
        BuiltinKind::of::<apps::ControllerRevision>(),
        BuiltinKind::of::<apps::DaemonSet>(),
        BuiltinKind::of::<batch::Job>(),
        BuiltinKind::of::<batch::CronJob>(),
        BuiltinKind::of::<policy::PodDisruptionBudget>(),
        BuiltinKind::of::<rbac::Role>(),
        BuiltinKind::of::<rbac::RoleBinding>(),
        BuiltinKind::of::<rbac::ClusterRole>(),
        BuiltinKind::of::<rbac::ClusterRoleBinding>(),
        BuiltinKind::of::<networking::NetworkPolicy>(),
        BuiltinKind::of::<networking::Ingress>(),
        BuiltinKind::of::<networking::IngressClass>(),
        BuiltinKind::of::<coordination::Lease>(),
        BuiltinKind::of::<admissionregistration::ValidatingAdmissionPolicy>(),
        BuiltinKind::of::<admissionregistration::ValidatingAdmissionPolicyBinding>(),
        BuiltinKind::of::<admissionregistration::MutatingWebhookConfiguration>(),
        BuiltinKind::of::<admissionregistration::ValidatingWebhookConfiguration>(),
        BuiltinKind::of::<events::Event>(),
        BuiltinKind::of::<discovery::EndpointSlice>(),
        BuiltinKind::of::<apiextensions::CustomResourceDefinition>(),
        BuiltinKind::of::<storage::StorageClass>(),
        BuiltinKind::of::<scheduling::PriorityClass>(),
        BuiltinKind::of::<autoscaling::HorizontalPodAutoscaler>(),
        BuiltinKind::of::<certificates::CertificateSigningRequest>(),
        BuiltinKind::of::<apiregistration::APIService>(),
        BuiltinKind::of::<authentication::SelfSubjectReview>(),
        BuiltinKind::of::<authentication::TokenReview>(),
        BuiltinKind::of::<authorization::LocalSubjectAccessReview>(),
        BuiltinKind::of::<authorization::SelfSubjectAccessReview>(),
        BuiltinKind::of::<authorization::SelfSubjectRulesReview>(),
        BuiltinKind::of::<authorization::SubjectAccessReview>(),
    ]
});
