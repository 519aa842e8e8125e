//! What a DELETE answers, through the real kubectl: the deleted object where kube-apiserver's
//! registry sets `ReturnDeletedObject` (Pods, Services, ServiceAccounts...), a Status naming
//! the object elsewhere, the object itself while finalizers hold it, and 202 Accepted only
//! when the deprecated `orphanDependents=false` asked for it.

mod common;

use common::kubectl::{kubectl, kubectl_ok};
use serde_json::Value;
use tusk_sandbox::Sandbox;

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: solo}
spec: {containers: [{name: main, image: nginx}]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: held, finalizers: [example.com/hold]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: held-too, finalizers: [example.com/hold]}
"#;

/// `kubectl delete --raw PATH -v=6`: the response body and the line kubectl logged for the
/// response (`"Response" verb="DELETE" url=... status="200 OK"`).
async fn delete_raw(sandbox: &Sandbox, path: &str) -> (Value, String) {
    let (ok, body, log) = kubectl(sandbox, &["delete", "--raw", path, "-v=6"]).await;
    assert!(ok, "kubectl delete --raw {path} failed: {log}");
    let body: Value = serde_json::from_str(&body).expect("the DELETE answers JSON");
    let status = log
        .lines()
        .find(|line| line.contains("verb=\"DELETE\""))
        .unwrap_or_else(|| panic!("kubectl logged the DELETE: {log}"))
        .to_string();
    (body, status)
}

/// kube-apiserver's DELETE handler and generic registry: a removed Service, Pod (grace 0) or
/// ServiceAccount comes back whole with 200 OK; a removed ConfigMap gives a Status whose
/// details name it by resource; an object finalizers hold comes back, marked, with 200 OK, or
/// with 202 Accepted when the request said `orphanDependents=false`.
#[tokio::test]
async fn kubectl_delete_answers_with_what_kube_apiserver_returns() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let manifest = std::env::temp_dir().join(format!("deletion-{}.yaml", std::process::id()));
    std::fs::write(&manifest, OBJECTS).expect("manifest written");
    kubectl_ok(&sandbox, &["apply", "-f", manifest.to_str().expect("path")]).await;
    let _ = std::fs::remove_file(&manifest);

    let (service, status) = delete_raw(&sandbox, "/api/v1/namespaces/default/services/web").await;
    assert!(status.contains("status=\"200 OK\""), "{status}");
    assert_eq!(service["kind"], "Service", "{service}");
    assert_eq!(service["metadata"]["name"], "web", "{service}");
    assert_eq!(service["spec"]["ports"][0]["port"], 80, "{service}");

    let (pod, status) = delete_raw(
        &sandbox,
        "/api/v1/namespaces/default/pods/solo?gracePeriodSeconds=0",
    )
    .await;
    assert!(status.contains("status=\"200 OK\""), "{status}");
    assert_eq!(pod["kind"], "Pod", "{pod}");
    assert_eq!(pod["metadata"]["name"], "solo", "{pod}");

    let (account, _) =
        delete_raw(&sandbox, "/api/v1/namespaces/default/serviceaccounts/robot").await;
    assert_eq!(account["kind"], "ServiceAccount", "{account}");

    let (gone, status) =
        delete_raw(&sandbox, "/api/v1/namespaces/default/configmaps/settings").await;
    assert!(status.contains("status=\"200 OK\""), "{status}");
    assert_eq!(gone["kind"], "Status", "{gone}");
    assert_eq!(gone["status"], "Success", "{gone}");
    assert_eq!(gone["details"]["name"], "settings", "{gone}");
    assert_eq!(gone["details"]["kind"], "configmaps", "{gone}");
    assert!(gone["details"]["uid"].is_string(), "{gone}");

    let (held, status) = delete_raw(&sandbox, "/api/v1/namespaces/default/configmaps/held").await;
    assert!(status.contains("status=\"200 OK\""), "{status}");
    assert_eq!(held["kind"], "ConfigMap", "{held}");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");

    let (held, status) = delete_raw(
        &sandbox,
        "/api/v1/namespaces/default/configmaps/held-too?orphanDependents=false",
    )
    .await;
    assert!(status.contains("status=\"202 Accepted\""), "{status}");
    assert_eq!(held["kind"], "ConfigMap", "{held}");

    // kubectl's own delete reads either answer.
    let (ok, out, err) = kubectl(&sandbox, &["delete", "configmap", "held", "--wait=false"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "configmap \"held\" deleted");
    sandbox.shutdown().await;
}
