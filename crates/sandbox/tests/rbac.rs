//! Authentication and RBAC over real HTTPS with the kube-rs client: ServiceAccount tokens from
//! the TokenRequest API, the `default` ServiceAccounts, and requests allowed or refused by
//! Roles, ClusterRoles and their bindings.

mod common;

use std::time::Duration;

use common::{api_error, client_with_token};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Error};
use serde_json::json;
use tusk_sandbox::Sandbox;

fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

async fn create_namespace(admin: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &parse(json!({"metadata": {"name": name}})),
        )
        .await
        .expect("namespace created");
}

async fn create_service_account(admin: &Client, namespace: &str, name: &str) -> ServiceAccount {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    accounts
        .create(
            &PostParams::default(),
            &parse(json!({"metadata": {"name": name}})),
        )
        .await
        .expect("service account created")
}

async fn request_token(admin: &Client, namespace: &str, name: &str) -> Result<TokenRequest, Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    accounts
        .create_token_request(
            name,
            &PostParams::default(),
            &parse(json!({"spec": {"audiences": []}})),
        )
        .await
}

async fn token_of(admin: &Client, namespace: &str, name: &str) -> String {
    request_token(admin, namespace, name)
        .await
        .expect("token issued")
        .status
        .and_then(|status| status.token)
        .expect("a token")
}

/// The Api of a tusk kind in `namespace`.
fn tusk_api_in(client: &Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("postgres.tusk.dev", "v1", kind);
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// The message of an API error, or panics if it is not one.
fn message(error: Error) -> (u16, String) {
    match error {
        Error::Api(status) => (status.code, status.message),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn bind_role(
    admin: &Client,
    namespace: &str,
    role: &str,
    rules: serde_json::Value,
    account: (&str, &str),
) {
    let roles: Api<Role> = Api::namespaced(admin.clone(), namespace);
    roles
        .create(
            &PostParams::default(),
            &parse(json!({"metadata": {"name": role}, "rules": rules})),
        )
        .await
        .expect("role created");
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), namespace);
    bindings
        .create(
            &PostParams::default(),
            &parse(json!({
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "ServiceAccount", "namespace": account.0, "name": account.1}],
            })),
        )
        .await
        .expect("role binding created");
}

#[tokio::test]
async fn every_namespace_gets_a_default_service_account() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let admin = sandbox.client().await.expect("client");
    create_namespace(&admin, "team-a").await;
    for namespace in ["default", "kube-system", "kube-public", "team-a"] {
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
        let mut found = None;
        for _ in 0..100 {
            found = accounts.get_opt("default").await.expect("get");
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(found.is_some(), "no default ServiceAccount in {namespace}");
    }
    // Deleted, it comes back, as kube-controller-manager recreates it.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "team-a");
    let first_uid = accounts.get("default").await.expect("get").metadata.uid;
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("deleted");
    let mut recreated = None;
    for _ in 0..100 {
        recreated = accounts.get_opt("default").await.expect("get");
        if recreated.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recreated = recreated.expect("default ServiceAccount recreated");
    assert_ne!(recreated.metadata.uid, first_uid);
}

#[tokio::test]
async fn token_request_issues_a_token_for_an_existing_account_only() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let admin = sandbox.client().await.expect("client");
    create_service_account(&admin, "default", "robot").await;
    let issued = request_token(&admin, "default", "robot")
        .await
        .expect("token issued");
    let status = issued.status.expect("status");
    assert!(status.token.is_some_and(|token| !token.is_empty()));
    let expires = status.expiration_timestamp.expect("expiration").0;
    let lifetime = expires.as_second() - jiff::Timestamp::now().as_second();
    assert!((3500..=3600).contains(&lifetime), "expires in {lifetime}s");
    assert_eq!(
        issued.spec.and_then(|spec| spec.audiences),
        Some(vec![
            "https://kubernetes.default.svc.cluster.local".to_string()
        ])
    );

    let missing = request_token(&admin, "default", "nobody")
        .await
        .expect_err("no such account");
    let (code, reason, _) = api_error(missing);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));

    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let too_short = accounts
        .create_token_request(
            "robot",
            &PostParams::default(),
            &parse(json!({"spec": {"audiences": [], "expirationSeconds": 60}})),
        )
        .await
        .expect_err("ten minutes at least");
    let (code, _, fields) = api_error(too_short);
    assert_eq!(code, 422);
    assert_eq!(fields, vec!["spec.expirationSeconds".to_string()]);
}

#[tokio::test]
async fn service_account_tokens_are_authorized_by_rbac() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let admin = sandbox.client().await.expect("client");
    create_namespace(&admin, "apps").await;
    create_service_account(&admin, "apps", "robot").await;
    let robot = client_with_token(&sandbox, &token_of(&admin, "apps", "robot").await).await;

    // Discovery and version are open to every authenticated user.
    robot.apiserver_version().await.expect("version");
    robot.list_api_groups().await.expect("discovery");

    // Nothing else, until a Role is bound.
    let maps: Api<ConfigMap> = Api::namespaced(robot.clone(), "apps");
    let (code, text) = message(
        maps.list(&ListParams::default())
            .await
            .expect_err("no role yet"),
    );
    assert_eq!(code, 403);
    assert_eq!(
        text,
        "configmaps is forbidden: User \"system:serviceaccount:apps:robot\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"apps\""
    );

    bind_role(
        &admin,
        "apps",
        "config-reader",
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["allowed"], "verbs": ["get"]},
        ]),
        ("apps", "robot"),
    )
    .await;
    // Allowed now: the namespace holds only the root-CA publisher's ConfigMap.
    let names: Vec<String> = maps
        .list(&ListParams::default())
        .await
        .expect("listed")
        .items
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    assert_eq!(names, ["kube-root-ca.crt"]);
    let (code, text) = message(
        maps.create(
            &PostParams::default(),
            &parse(json!({"metadata": {"name": "x"}})),
        )
        .await
        .expect_err("read only"),
    );
    assert_eq!(code, 403);
    assert!(
        text.contains("cannot create resource \"configmaps\""),
        "{text}"
    );

    // The same Role grants nothing in another namespace.
    let elsewhere: Api<ConfigMap> = Api::namespaced(robot.clone(), "default");
    let (code, text) = message(
        elsewhere
            .get("kube-root-ca.crt")
            .await
            .expect_err("other namespace"),
    );
    assert_eq!(code, 403);
    assert_eq!(
        text,
        "configmaps \"kube-root-ca.crt\" is forbidden: User \"system:serviceaccount:apps:robot\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );

    // resourceNames limit the rule to the named objects.
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), "apps");
    for name in ["allowed", "other"] {
        admin_secrets
            .create(
                &PostParams::default(),
                &parse(json!({"metadata": {"name": name}, "stringData": {"k": "v"}})),
            )
            .await
            .expect("secret created");
    }
    let secrets: Api<Secret> = Api::namespaced(robot.clone(), "apps");
    secrets.get("allowed").await.expect("named secret readable");
    assert_eq!(
        message(secrets.get("other").await.expect_err("not named")).0,
        403
    );
    assert_eq!(
        message(
            secrets
                .list(&ListParams::default())
                .await
                .expect_err("no list")
        )
        .0,
        403
    );

    // Cluster-scoped reads need a ClusterRoleBinding.
    let namespaces: Api<Namespace> = Api::all(robot.clone());
    let (code, text) = message(
        namespaces
            .list(&ListParams::default())
            .await
            .expect_err("cluster scope"),
    );
    assert_eq!(code, 403);
    assert!(
        text.ends_with(
            "cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
        ),
        "{text}"
    );
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    cluster_roles
        .create(
            &PostParams::default(),
            &parse(json!({"metadata": {"name": "namespace-lister"}, "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}]})),
        )
        .await
        .expect("cluster role created");
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    cluster_bindings
        .create(
            &PostParams::default(),
            &parse(json!({
                "metadata": {"name": "namespace-lister"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "namespace-lister"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:apps"}],
            })),
        )
        .await
        .expect("cluster role binding created");
    assert!(
        namespaces
            .list(&ListParams::default())
            .await
            .expect("listed")
            .items
            .len()
            >= 5
    );
}

#[tokio::test]
async fn server_side_apply_that_creates_needs_create_too() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let admin = sandbox.client().await.expect("client");
    create_service_account(&admin, "default", "patcher").await;
    bind_role(
        &admin,
        "default",
        "map-patcher",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}]),
        ("default", "patcher"),
    )
    .await;
    let patcher = client_with_token(&sandbox, &token_of(&admin, "default", "patcher").await).await;
    let maps: Api<ConfigMap> = Api::namespaced(patcher, "default");
    let apply = PatchParams::apply("test");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}});
    let (code, text) = message(
        maps.patch("applied", &apply, &Patch::Apply(&body))
            .await
            .expect_err("creating needs create"),
    );
    assert_eq!(code, 403);
    assert!(
        text.contains("cannot create resource \"configmaps\""),
        "{text}"
    );
    let admin_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    admin_maps
        .create(
            &PostParams::default(),
            &parse(json!({"metadata": {"name": "applied"}})),
        )
        .await
        .expect("created by the admin");
    let patched = maps
        .patch("applied", &apply, &Patch::Apply(&body))
        .await
        .expect("patching an existing object needs patch only");
    assert_eq!(patched.data.expect("data")["a"], "1");
}

#[tokio::test]
async fn a_deleted_service_accounts_token_is_refused() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let admin = sandbox.client().await.expect("client");
    create_service_account(&admin, "default", "short-lived").await;
    let client =
        client_with_token(&sandbox, &token_of(&admin, "default", "short-lived").await).await;
    client
        .apiserver_version()
        .await
        .expect("authenticated while the account exists");
    client
        .list_api_groups()
        .await
        .expect("discovery while the account exists");

    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    accounts
        .delete("short-lived", &DeleteParams::default())
        .await
        .expect("deleted");
    let (code, _) = message(client.list_api_groups().await.expect_err("refused"));
    assert_eq!(code, 401);
    // A new account of the same name is another identity: the old token stays refused.
    create_service_account(&admin, "default", "short-lived").await;
    assert_eq!(
        message(client.list_api_groups().await.expect_err("refused")).0,
        401
    );

    // A forged token is refused too.
    let forged = client_with_token(&sandbox, "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl").await;
    assert_eq!(
        message(forged.list_api_groups().await.expect_err("forged")).0,
        401
    );
}

#[tokio::test]
async fn nobody_grants_more_than_they_hold() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let admin = sandbox.client().await.expect("client");
    create_service_account(&admin, "default", "delegate").await;
    bind_role(
        &admin,
        "default",
        "delegate",
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create", "patch"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["bindable"]},
        ]),
        ("default", "delegate"),
    )
    .await;
    let delegate =
        client_with_token(&sandbox, &token_of(&admin, "default", "delegate").await).await;
    let roles: Api<Role> = Api::namespaced(delegate.clone(), "default");
    let role = |name: &str, resource: &str| -> Role {
        parse(
            json!({"metadata": {"name": name}, "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get"]}]}),
        )
    };
    roles
        .create(&PostParams::default(), &role("held", "configmaps"))
        .await
        .expect("granting what it holds");
    let (code, text) = message(
        roles
            .create(&PostParams::default(), &role("escalating", "secrets"))
            .await
            .expect_err("granting more"),
    );
    assert_eq!(code, 403);
    assert!(
        text.starts_with("roles.rbac.authorization.k8s.io \"escalating\" is forbidden: user \"system:serviceaccount:default:delegate\""),
        "{text}"
    );
    assert!(
        text.contains("attempting to grant RBAC permissions not currently held"),
        "{text}"
    );
    // Server-side apply is checked the same way.
    let apply = PatchParams::apply("delegate");
    roles
        .patch(
            "applied",
            &apply,
            &Patch::Apply(&role("applied", "configmaps")),
        )
        .await
        .expect("applying what it holds");
    let (code, _) = message(
        roles
            .patch(
                "applied",
                &apply,
                &Patch::Apply(&role("applied", "secrets")),
            )
            .await
            .expect_err("applying more"),
    );
    assert_eq!(code, 403);

    let bindings: Api<RoleBinding> = Api::namespaced(delegate, "default");
    let binding = |name: &str, kind: &str, role: &str| -> RoleBinding {
        parse(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "User", "name": "someone"}],
        }))
    };
    bindings
        .create(&PostParams::default(), &binding("held", "Role", "held"))
        .await
        .expect("binding a role whose rules it holds");
    let (code, _) = message(
        bindings
            .create(
                &PostParams::default(),
                &binding("admin", "ClusterRole", "cluster-admin"),
            )
            .await
            .expect_err("binding cluster-admin"),
    );
    assert_eq!(code, 403);
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    cluster_roles
        .create(
            &PostParams::default(),
            &parse(json!({"metadata": {"name": "bindable"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]})),
        )
        .await
        .expect("cluster role created");
    bindings
        .create(
            &PostParams::default(),
            &binding("bound", "ClusterRole", "bindable"),
        )
        .await
        .expect("the bind verb allows binding what it does not hold");
}

#[tokio::test]
async fn the_backup_job_role_in_deploy_lets_a_job_report_and_nothing_more() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let admin = sandbox.client().await.expect("client");
    common::install_crds(&admin).await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let manifest = |path: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(format!("{root}/{path}")).expect("manifest");
        serde_yaml_ng::from_str(&text).expect("YAML")
    };
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    cluster_roles
        .create(
            &PostParams::default(),
            &parse(manifest("deploy/backup-job-role.yaml")),
        )
        .await
        .expect("the shipped ClusterRole is accepted");
    create_namespace(&admin, "shop").await;
    create_namespace(&admin, "elsewhere").await;
    create_service_account(&admin, "shop", "tusk-backup").await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "shop");
    bindings
        .create(
            &PostParams::default(),
            &parse(json!({
                "metadata": {"name": "tusk-backup"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tusk-backup-job"},
                "subjects": [{"kind": "ServiceAccount", "name": "tusk-backup"}],
            })),
        )
        .await
        .expect("bound in shop");
    let clusters = tusk_api_in(&admin, "shop", "PostgresCluster", "postgresclusters");
    clusters
        .create(
            &PostParams::default(),
            &common::object(manifest("examples/elephant.yaml")),
        )
        .await
        .expect("elephant created");
    let requests = tusk_api_in(
        &admin,
        "shop",
        "PostgresBackupRequest",
        "postgresbackuprequests",
    );
    requests
        .create(
            &PostParams::default(),
            &common::object(manifest("examples/my-backup.yaml")),
        )
        .await
        .expect("request created");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "elsewhere");
    secrets
        .create(
            &PostParams::default(),
            &parse(json!({"metadata": {"name": "private"}, "data": {"k": "dg=="}})),
        )
        .await
        .expect("secret created");

    let job = client_with_token(&sandbox, &token_of(&admin, "shop", "tusk-backup").await).await;
    let own = tusk_api_in(
        &job,
        "shop",
        "PostgresBackupRequest",
        "postgresbackuprequests",
    );
    own.get("my-backup").await.expect("reads its request");
    let reported = own
        .patch_status(
            "my-backup",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"message": "copying"}})),
        )
        .await
        .expect("reports on its request");
    assert_eq!(reported.data["status"]["message"], "copying");
    // Only the status: the request itself is not the Job's to change.
    let (code, _) = message(
        own.patch(
            "my-backup",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect_err("not the spec"),
    );
    assert_eq!(code, 403);
    let other_secrets: Api<Secret> = Api::namespaced(job.clone(), "elsewhere");
    let (code, text) = message(
        other_secrets
            .get("private")
            .await
            .expect_err("other namespace"),
    );
    assert_eq!(code, 403);
    assert_eq!(
        text,
        "secrets \"private\" is forbidden: User \"system:serviceaccount:shop:tusk-backup\" cannot get resource \"secrets\" in API group \"\" in the namespace \"elsewhere\""
    );
    let job_clusters = tusk_api_in(&job, "shop", "PostgresCluster", "postgresclusters");
    let (code, text) = message(
        job_clusters
            .delete("elephant", &DeleteParams::default())
            .await
            .expect_err("not its to delete"),
    );
    assert_eq!(code, 403);
    assert!(
        text.contains(
            "cannot delete resource \"postgresclusters\" in API group \"postgres.tusk.dev\""
        ),
        "{text}"
    );
}
