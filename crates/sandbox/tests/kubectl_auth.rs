//! `kubectl --as`, `auth can-i`, `auth can-i --list` and `auth whoami`, and the review APIs
//! behind them, against the sandbox: answered by its RBAC authorizer as kube-apiserver answers.

mod common;

use common::kubectl::{kubectl_as, kubectl_ok};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tusk_sandbox::Sandbox;

const NAMESPACE: &str = "tenant-a";
/// The account tenant-a's workloads run as, allowed to read ConfigMaps in tenant-a only.
const APP: &str = "system:serviceaccount:tenant-a:app";

/// A sandbox with namespace tenant-a, holding ServiceAccount `app` (which may get and list
/// ConfigMaps there) and ServiceAccount `intruder` (which may list Secrets there); returns a
/// token of `intruder`.
async fn tenant(sandbox: &Sandbox) -> String {
    for args in [
        &["create", "namespace", NAMESPACE][..],
        &["create", "serviceaccount", "app", "-n", NAMESPACE],
        &["create", "serviceaccount", "intruder", "-n", NAMESPACE],
        &[
            "create",
            "role",
            "read-config",
            "-n",
            NAMESPACE,
            "--verb=get,list",
            "--resource=configmaps",
        ],
        &[
            "create",
            "rolebinding",
            "app-reads-config",
            "-n",
            NAMESPACE,
            "--role=read-config",
            "--serviceaccount=tenant-a:app",
        ],
        &[
            "create",
            "role",
            "list-secrets",
            "-n",
            NAMESPACE,
            "--verb=list",
            "--resource=secrets",
        ],
        &[
            "create",
            "rolebinding",
            "intruder-lists-secrets",
            "-n",
            NAMESPACE,
            "--role=list-secrets",
            "--serviceaccount=tenant-a:intruder",
        ],
        &["create", "configmap", "settings", "-n", NAMESPACE],
    ] {
        kubectl_ok(sandbox, args).await;
    }
    kubectl_ok(sandbox, &["create", "token", "intruder", "-n", NAMESPACE])
        .await
        .trim()
        .to_string()
}

/// kube-apiserver's impersonation filter: each thing a request impersonates needs the
/// `impersonate` verb for the requester (on `serviceaccounts` in the account's namespace, on
/// `users`, on `groups`), else 403 before anything runs; once allowed, the request runs as the
/// impersonated user, under its RBAC and never the requester's.
#[tokio::test]
async fn impersonation_needs_the_impersonate_verb_and_then_runs_as_the_impersonated_user() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let intruder = tenant(&sandbox).await;
    let as_app = format!("--as={APP}");

    // Without the verb, naming another account, or the admin in system:masters, is refused.
    let (ok, _, stderr) = kubectl_as(
        &sandbox,
        Some(&intruder),
        &["get", "configmaps", "-n", NAMESPACE, &as_app],
    )
    .await;
    assert!(!ok, "impersonating without the verb must fail");
    assert!(
        stderr.contains(
            "serviceaccounts \"app\" is forbidden: User \"system:serviceaccount:tenant-a:intruder\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"tenant-a\""
        ),
        "{stderr}"
    );
    let (ok, _, stderr) = kubectl_as(
        &sandbox,
        Some(&intruder),
        &[
            "get",
            "secrets",
            "-A",
            "--as=kubernetes-admin",
            "--as-group=system:masters",
        ],
    )
    .await;
    assert!(!ok, "impersonating the admin without the verb must fail");
    assert!(
        stderr.contains("users \"kubernetes-admin\" is forbidden: User \"system:serviceaccount:tenant-a:intruder\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{stderr}"
    );

    // The cluster admin may impersonate anyone, and is then limited to that account's rights.
    let listed = kubectl_ok(&sandbox, &["get", "configmaps", "-n", NAMESPACE, &as_app]).await;
    assert!(listed.contains("settings"), "{listed}");
    let (ok, _, stderr) = kubectl_as(
        &sandbox,
        None,
        &["get", "secrets", "-n", NAMESPACE, &as_app],
    )
    .await;
    assert!(!ok, "the admin impersonating app must not see Secrets");
    assert!(
        stderr.contains("secrets is forbidden: User \"system:serviceaccount:tenant-a:app\" cannot list resource \"secrets\" in API group \"\" in the namespace \"tenant-a\""),
        "{stderr}"
    );
    let (ok, _, stderr) = kubectl_as(
        &sandbox,
        None,
        &["get", "configmaps", "-n", "default", &as_app],
    )
    .await;
    assert!(!ok, "app's Role holds in tenant-a only: {stderr}");

    // Granted `impersonate` on app alone, the intruder acts as app: it reads what app may read,
    // and loses its own right to list Secrets while it does.
    kubectl_ok(
        &sandbox,
        &[
            "create",
            "role",
            "be-app",
            "-n",
            NAMESPACE,
            "--verb=impersonate",
            "--resource=serviceaccounts",
            "--resource-name=app",
        ],
    )
    .await;
    kubectl_ok(
        &sandbox,
        &[
            "create",
            "rolebinding",
            "intruder-is-app",
            "-n",
            NAMESPACE,
            "--role=be-app",
            "--serviceaccount=tenant-a:intruder",
        ],
    )
    .await;
    let (ok, listed, stderr) = kubectl_as(
        &sandbox,
        Some(&intruder),
        &["get", "configmaps", "-n", NAMESPACE, &as_app],
    )
    .await;
    assert!(ok && listed.contains("settings"), "{stderr}");
    let (ok, _, _) = kubectl_as(
        &sandbox,
        Some(&intruder),
        &["get", "secrets", "-n", NAMESPACE],
    )
    .await;
    assert!(ok, "the intruder itself may list Secrets");
    let (ok, _, stderr) = kubectl_as(
        &sandbox,
        Some(&intruder),
        &["get", "secrets", "-n", NAMESPACE, &as_app],
    )
    .await;
    assert!(!ok, "as app, the intruder's own rights do not apply");
    assert!(
        stderr.contains(
            "User \"system:serviceaccount:tenant-a:app\" cannot list resource \"secrets\""
        ),
        "{stderr}"
    );
    // The grant names app: another account, or a group on top, still needs its own grant.
    let (ok, _, stderr) = kubectl_as(
        &sandbox,
        Some(&intruder),
        &[
            "get",
            "configmaps",
            "-n",
            NAMESPACE,
            "--as=system:serviceaccount:tenant-a:default",
        ],
    )
    .await;
    assert!(
        !ok && stderr.contains("serviceaccounts \"default\" is forbidden"),
        "{stderr}"
    );
    let (ok, _, stderr) = kubectl_as(
        &sandbox,
        Some(&intruder),
        &[
            "get",
            "configmaps",
            "-n",
            NAMESPACE,
            &as_app,
            "--as-group=system:masters",
        ],
    )
    .await;
    assert!(
        !ok && stderr.contains("groups \"system:masters\" is forbidden"),
        "{stderr}"
    );

    // Who the request runs as, as the server sees it: app's fixed groups when none are given.
    let whoami = kubectl_ok(&sandbox, &["auth", "whoami", &as_app, "-o", "json"]).await;
    let whoami: Value = serde_json::from_str(&whoami).expect("JSON");
    assert_eq!(whoami["status"]["userInfo"]["username"], APP);
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:tenant-a",
            "system:authenticated"
        ])
    );
    let whoami = kubectl_ok(
        &sandbox,
        &[
            "auth",
            "whoami",
            "--as=jane",
            "--as-group=developers",
            "--as-uid=1234",
            "-o",
            "json",
        ],
    )
    .await;
    let whoami: Value = serde_json::from_str(&whoami).expect("JSON");
    assert_eq!(
        whoami["status"]["userInfo"],
        json!({"username": "jane", "uid": "1234", "groups": ["developers", "system:authenticated"]})
    );
    sandbox.shutdown().await;
}

/// `kubectl auth can-i` (SelfSubjectAccessReview), `auth can-i --list`
/// (SelfSubjectRulesReview) and `auth whoami` (SelfSubjectReview): every authenticated user may
/// ask about itself (the `system:basic-user` ClusterRole), and the answers are the RBAC
/// authorizer's.
#[tokio::test]
async fn auth_can_i_and_whoami_answer_from_the_rbac_authorizer() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let intruder = tenant(&sandbox).await;
    let token = Some(intruder.as_str());
    let ask = |args: Vec<&'static str>| {
        let sandbox = &sandbox;
        async move {
            let args = [&["auth", "can-i"][..], &args].concat();
            let (ok, stdout, _) = kubectl_as(sandbox, token, &args).await;
            (ok, stdout.trim().to_string())
        }
    };
    assert_eq!(
        ask(vec!["list", "secrets", "-n", NAMESPACE]).await,
        (true, "yes".to_string())
    );
    assert_eq!(
        ask(vec!["delete", "secrets", "-n", NAMESPACE]).await,
        (false, "no".to_string())
    );
    assert_eq!(
        ask(vec!["list", "secrets", "-n", "default"]).await,
        (false, "no".to_string())
    );
    assert_eq!(
        ask(vec!["get", "/healthz"]).await,
        (true, "yes".to_string())
    );
    assert_eq!(
        ask(vec!["get", "/metrics"]).await,
        (false, "no".to_string())
    );

    let (ok, rules, stderr) = kubectl_as(
        &sandbox,
        token,
        &["auth", "can-i", "--list", "-n", NAMESPACE],
    )
    .await;
    assert!(ok, "{stderr}");
    let row = |resource: &str| {
        rules
            .lines()
            .find(|line| line.split_whitespace().next() == Some(resource))
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        row("secrets").as_deref(),
        Some("secrets [] [] [list]"),
        "{rules}"
    );
    assert_eq!(
        row("selfsubjectaccessreviews.authorization.k8s.io").as_deref(),
        Some("selfsubjectaccessreviews.authorization.k8s.io [] [] [create]"),
        "{rules}"
    );
    assert_eq!(
        row("configmaps"),
        None,
        "app's Role is not the intruder's: {rules}"
    );
    assert!(rules.contains("/healthz"), "{rules}");

    let whoami = kubectl_as(&sandbox, token, &["auth", "whoami", "-o", "json"]).await;
    let whoami: Value = serde_json::from_str(&whoami.1).expect("JSON");
    let info = &whoami["status"]["userInfo"];
    assert_eq!(info["username"], "system:serviceaccount:tenant-a:intruder");
    let account = kubectl_ok(
        &sandbox,
        &[
            "get",
            "serviceaccount",
            "intruder",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    )
    .await;
    assert_eq!(info["uid"], account.as_str(), "the account's uid");
    assert!(
        info["extra"]["authentication.kubernetes.io/credential-id"][0]
            .as_str()
            .is_some_and(|id| id.starts_with("JTI=")),
        "{info}"
    );

    // The admin is in system:masters, which RBAC never restricts.
    let admin = kubectl_ok(&sandbox, &["auth", "whoami"]).await;
    assert!(
        admin.contains("kubernetes-admin") && admin.contains("system:masters"),
        "{admin}"
    );
    let (ok, answer, _) = kubectl_as(&sandbox, None, &["auth", "can-i", "*", "*"]).await;
    assert!(ok && answer.trim() == "yes", "{answer}");
    sandbox.shutdown().await;
}

fn review_api(client: &kube::Client, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, "v1", kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// SubjectAccessReview and TokenReview: what an aggregated API server or a webhook asks
/// kube-apiserver. Asking about others needs its own grant (`system:auth-delegator`).
#[tokio::test]
async fn subject_access_and_token_reviews_answer_for_others_and_need_a_grant() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let intruder = tenant(&sandbox).await;
    let admin = sandbox.client().await.expect("client");
    let create = |api: Api<DynamicObject>, body: Value| async move {
        let object: DynamicObject = serde_json::from_value(body).expect("object");
        api.create(&PostParams::default(), &object).await
    };
    let access = review_api(
        &admin,
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
    );
    let review = |verb: &str, resource: &str, namespace: &str| {
        json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "metadata": {},
            "spec": {
                "user": APP,
                "groups": ["system:serviceaccounts", "system:serviceaccounts:tenant-a"],
                "resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace},
            },
        })
    };
    let answer = create(access.clone(), review("list", "configmaps", NAMESPACE))
        .await
        .expect("reviewed");
    assert_eq!(answer.data["status"]["allowed"], true);
    let answer = create(access.clone(), review("list", "configmaps", "default"))
        .await
        .expect("reviewed");
    assert_eq!(answer.data["status"]["allowed"], false);
    let (code, _, _) = common::api_error(
        create(
            access.clone(),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {}, "spec": {"user": APP}}),
        )
        .await
        .expect_err("no attributes"),
    );
    assert_eq!(code, 422);

    let tokens = review_api(
        &admin,
        "authentication.k8s.io",
        "TokenReview",
        "tokenreviews",
    );
    let token_review = |token: &str| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {}, "spec": {"token": token}});
    let answer = create(tokens.clone(), token_review(&intruder))
        .await
        .expect("reviewed");
    assert_eq!(answer.data["status"]["authenticated"], true);
    assert_eq!(
        answer.data["status"]["user"]["username"],
        "system:serviceaccount:tenant-a:intruder"
    );
    assert_eq!(
        answer.data["spec"]["token"], intruder,
        "kube-apiserver answers with the review as sent, its token included"
    );
    let forged = format!("{}x", intruder);
    let answer = create(tokens.clone(), token_review(&forged))
        .await
        .expect("reviewed");
    assert_eq!(answer.data["status"]["authenticated"], false);

    // The intruder may not ask about others.
    let intruder_client = common::client_with_token(&sandbox, &intruder).await;
    let denied = create(
        review_api(
            &intruder_client,
            "authorization.k8s.io",
            "SubjectAccessReview",
            "subjectaccessreviews",
        ),
        review("list", "configmaps", NAMESPACE),
    )
    .await
    .expect_err("needs a grant");
    assert_eq!(common::api_error(denied).0, 403);
    let denied = create(
        review_api(
            &intruder_client,
            "authentication.k8s.io",
            "TokenReview",
            "tokenreviews",
        ),
        token_review(&intruder),
    )
    .await
    .expect_err("needs a grant");
    assert_eq!(common::api_error(denied).0, 403);
    sandbox.shutdown().await;
}
