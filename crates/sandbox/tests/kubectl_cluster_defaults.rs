//! The objects every cluster has before anyone writes, through the real kubectl:
//! kube-apiserver's `default/kubernetes` Service with its Endpoints and EndpointSlice, and
//! kube-controller-manager's `kube-root-ca.crt` ConfigMap in every namespace; each is put
//! back when deleted or changed, as their controllers do.

mod common;

use std::time::Duration;

use common::kubectl::{kubectl, kubectl_ok};
use common::{eventually, poll_until};
use serde_json::Value;
use tusk_sandbox::Sandbox;

async fn get_json(sandbox: &Sandbox, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    let (ok, out, _) = kubectl(sandbox, &all).await;
    ok.then(|| serde_json::from_str(&out).expect("kubectl prints JSON"))
}

/// Polls `kubectl get -o json ARGS` until `check` holds of the object, for up to 10 seconds.
async fn get_when(
    sandbox: &Sandbox,
    args: &[&str],
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    poll_until(what, 10, || async {
        get_json(sandbox, args).await.filter(|object| check(object))
    })
    .await
}

/// kube-apiserver's kubernetes-service controller and endpoint reconciler: `default/kubernetes`
/// takes the first address of the service range, port 443 named `https` aimed at the API
/// server's port; its Endpoints and EndpointSlice list the API server; a deleted Service
/// comes back with the same address, and edited ports are restored; left alone, nothing is
/// rewritten.
#[tokio::test]
async fn the_kubernetes_service_points_at_the_api_server() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let port = i64::from(sandbox.addr().port());
    let has_port = |o: &Value| o.pointer("/spec/ports/0/port") == Some(&443.into());
    let service = get_when(
        &sandbox,
        &["service", "kubernetes"],
        "the Service appears",
        has_port,
    )
    .await;
    assert_eq!(service["spec"]["clusterIP"], "127.128.0.1", "{service}");
    assert_eq!(service["spec"]["type"], "ClusterIP", "{service}");
    assert_eq!(service["spec"]["ports"][0]["name"], "https", "{service}");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port, "{service}");
    assert_eq!(
        service["metadata"]["labels"]["component"], "apiserver",
        "{service}"
    );
    assert_eq!(
        service["metadata"]["labels"]["provider"], "kubernetes",
        "{service}"
    );
    assert!(service["spec"].get("selector").is_none(), "{service}");

    let slice = get_when(
        &sandbox,
        &["endpointslice", "kubernetes"],
        "the EndpointSlice appears",
        |o| o.pointer("/ports/0/port") == Some(&port.into()),
    )
    .await;
    assert_eq!(slice["addressType"], "IPv4", "{slice}");
    assert_eq!(
        slice["endpoints"][0]["addresses"][0], "127.0.0.1",
        "{slice}"
    );
    assert_eq!(slice["ports"][0]["name"], "https", "{slice}");
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"], "kubernetes",
        "{slice}"
    );
    let endpoints = get_when(
        &sandbox,
        &["endpoints", "kubernetes"],
        "the Endpoints appear",
        |o| o.pointer("/subsets/0/ports/0/port") == Some(&port.into()),
    )
    .await;
    assert_eq!(
        endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.0.1",
        "{endpoints}"
    );

    // Left alone, the publisher does not rewrite what it published.
    let before = service["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = get_json(&sandbox, &["service", "kubernetes"])
        .await
        .expect("the Service");
    assert_eq!(
        still["metadata"]["resourceVersion"], before,
        "no rewrite without a change"
    );

    kubectl_ok(
        &sandbox,
        &[
            "patch",
            "service",
            "kubernetes",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/ports/0/port","value":8443}]"#,
        ],
    )
    .await;
    get_when(
        &sandbox,
        &["service", "kubernetes"],
        "the port is restored",
        has_port,
    )
    .await;

    kubectl_ok(&sandbox, &["delete", "service", "kubernetes"]).await;
    let back = get_when(
        &sandbox,
        &["service", "kubernetes"],
        "the Service comes back",
        |o| o["metadata"]["uid"] != service["metadata"]["uid"],
    )
    .await;
    assert_eq!(back["spec"]["clusterIP"], "127.128.0.1", "{back}");
    sandbox.shutdown().await;
}

/// kube-controller-manager's root-CA publisher: every namespace, the first ones and each new
/// one, has `kube-root-ca.crt` holding the CA that signed the API server's certificate
/// (`ca.crt`) with the publisher's description; a deleted one comes back, and one whose data
/// was changed is restored to exactly the CA.
#[tokio::test]
async fn every_namespace_has_the_root_ca_config_map() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let ca = sandbox.ca_pem().to_string();
    let holds_ca = |o: &Value| {
        o.pointer("/data")
            .and_then(Value::as_object)
            .map(|data| data.len())
            == Some(1)
            && o.pointer("/data/ca.crt").and_then(Value::as_str) == Some(ca.as_str())
    };
    for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let map = get_when(
            &sandbox,
            &["configmap", "kube-root-ca.crt", "-n", namespace],
            "the CA is published in the first namespaces",
            &holds_ca,
        )
        .await;
        let description = map["metadata"]["annotations"]["kubernetes.io/description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            description
                .starts_with("Contains a CA bundle that can be used to verify the kube-apiserver"),
            "{map}"
        );
    }

    kubectl_ok(&sandbox, &["create", "namespace", "team"]).await;
    get_when(
        &sandbox,
        &["configmap", "kube-root-ca.crt", "-n", "team"],
        "a new namespace gets it",
        &holds_ca,
    )
    .await;

    kubectl_ok(
        &sandbox,
        &[
            "patch",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "team",
            "--type=merge",
            "-p",
            r#"{"data":{"extra":"x"}}"#,
        ],
    )
    .await;
    get_when(
        &sandbox,
        &["configmap", "kube-root-ca.crt", "-n", "team"],
        "an edit is undone",
        &holds_ca,
    )
    .await;

    let before = get_json(&sandbox, &["configmap", "kube-root-ca.crt", "-n", "team"])
        .await
        .expect("the map");
    kubectl_ok(
        &sandbox,
        &["delete", "configmap", "kube-root-ca.crt", "-n", "team"],
    )
    .await;
    get_when(
        &sandbox,
        &["configmap", "kube-root-ca.crt", "-n", "team"],
        "a deleted one comes back",
        |o| holds_ca(o) && o["metadata"]["uid"] != before["metadata"]["uid"],
    )
    .await;
    sandbox.shutdown().await;
}

/// kube-apiserver's bootstrap policy and kube-controller-manager's ClusterRole aggregation:
/// `view`, `edit` and `admin` carry aggregation rules over the `aggregate-to-*` labels, so
/// `view` reads pods but not Secrets, `edit` writes both, `admin` also manages Roles; a
/// ClusterRole a user labels `aggregate-to-edit` adds its rules to `edit` and `admin`.
#[tokio::test]
async fn view_edit_and_admin_aggregate_their_rules() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let view = get_when(
        &sandbox,
        &["clusterrole", "view"],
        "view is aggregated",
        |o| o["rules"].as_array().is_some_and(|rules| !rules.is_empty()),
    )
    .await;
    assert_eq!(
        view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true",
        "{view}"
    );
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true",
        "{view}"
    );

    for (role, user) in [("view", "viola"), ("edit", "edith"), ("admin", "adam")] {
        kubectl_ok(
            &sandbox,
            &[
                "create",
                "rolebinding",
                &format!("{user}-{role}"),
                &format!("--clusterrole={role}"),
                &format!("--user={user}"),
            ],
        )
        .await;
    }
    let can = |user: &'static str, verb: &'static str, resource: &'static str| {
        let sandbox = &sandbox;
        async move {
            let (_, out, _) = kubectl(
                sandbox,
                &["auth", "can-i", verb, resource, &format!("--as={user}")],
            )
            .await;
            out.trim().to_string()
        }
    };
    // The aggregation of edit and admin follows view's; wait for the top of the chain.
    eventually("admin is aggregated", 10, || async {
        can("adam", "create", "roles").await == "yes"
    })
    .await;
    let answers = [
        ("viola", "list", "pods", "yes"),
        ("viola", "get", "secrets", "no"),
        ("viola", "create", "deployments.apps", "no"),
        ("edith", "get", "secrets", "yes"),
        ("edith", "create", "deployments.apps", "yes"),
        ("edith", "create", "roles", "no"),
        ("adam", "list", "pods", "yes"),
        ("adam", "create", "rolebindings", "yes"),
    ];
    for (user, verb, resource, expected) in answers {
        assert_eq!(
            can(user, verb, resource).await,
            expected,
            "{user} {verb} {resource}"
        );
    }

    let extra = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"limits-edit","labels":{"rbac.authorization.k8s.io/aggregate-to-edit":"true"}},"rules":[{"apiGroups":[""],"resources":["limitranges"],"verbs":["create"]}]}"#;
    let path = std::env::temp_dir().join(format!("limits-edit-{}.json", std::process::id()));
    std::fs::write(&path, extra).expect("written");
    kubectl_ok(&sandbox, &["apply", "-f", path.to_str().expect("path")]).await;
    let _ = std::fs::remove_file(&path);
    eventually(
        "a ClusterRole labelled to aggregate into edit reaches admin",
        10,
        || async { can("adam", "create", "limitranges").await == "yes" },
    )
    .await;
    assert_eq!(can("edith", "create", "limitranges").await, "yes");
    assert_eq!(can("viola", "create", "limitranges").await, "no");
    sandbox.shutdown().await;
}
