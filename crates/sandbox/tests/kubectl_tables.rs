//! `kubectl get` prints every built-in kind with the columns kube-apiserver's printers define
//! (pkg/printers/internalversion), not only NAME and AGE: the server renders the Table, so
//! these pin what the sandbox answers to kubectl's `as=Table` request.

mod common;

use common::kubectl::kubectl_ok;
use tusk_sandbox::Sandbox;

/// One object of each kind whose printer lists more than its name and age.
const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: frontend}
spec:
  replicas: 0
  selector:
    matchLabels: {app: frontend}
    matchExpressions: [{key: tier, operator: In, values: [web]}]
  template:
    metadata: {labels: {app: frontend, tier: web}}
    spec: {containers: [{name: main, image: nginx}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual}
subsets:
- addresses: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]
  ports: [{port: 80}, {port: 443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: manual-abc}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
- addresses: [10.0.0.1]
- addresses: [10.0.0.2]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot}
secrets: [{name: robot-token}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects:
- {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}
- {kind: Group, name: auditors, apiGroup: rbac.authorization.k8s.io}
- {kind: ServiceAccount, name: robot, namespace: default}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: keep-one}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: frontend}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec:
  podSelector: {matchLabels: {app: frontend}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec:
  controller: k8s.io/ingress-nginx
  parameters: {apiGroup: k8s.example.com, kind: IngressParameters, name: external-lb}
---
apiVersion: v1
kind: Event
metadata: {name: frontend.1}
involvedObject: {kind: ReplicaSet, name: frontend, namespace: default, fieldPath: spec}
reason: Checked
message: "  all good  "
type: Normal
count: 4
firstTimestamp: "2020-01-01T00:00:00Z"
lastTimestamp: "2020-01-01T00:00:00Z"
source: {component: checker, host: box}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object}}
"#;

/// The header and the first row of `kubectl get <args>`, split into cells (cells are
/// separated by runs of two spaces or more).
async fn header_and_row(sandbox: &Sandbox, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let table = kubectl_ok(sandbox, &[&["get"], args].concat()).await;
    let split = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut lines = table.lines();
    let header = split(lines.next().unwrap_or_default());
    let row = split(lines.next().unwrap_or_default());
    assert!(!row.is_empty(), "no row from kubectl get {args:?}: {table}");
    (header, row)
}

#[tokio::test]
async fn kubectl_get_prints_the_columns_of_kube_apiservers_printers() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("kinds.yaml");
    std::fs::write(&manifest, MANIFESTS).expect("written");
    kubectl_ok(&sandbox, &["apply", "-f", &manifest.display().to_string()]).await;

    let (header, row) = header_and_row(&sandbox, &["rs", "frontend", "-o", "wide"]).await;
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(&row[..4], ["frontend", "0", "0", "0"]);
    assert_eq!(&row[5..], ["main", "nginx", "app=frontend,tier in (web)"]);

    // Each address with each port, three at most, then how many more.
    let (header, row) = header_and_row(&sandbox, &["endpoints", "manual"]).await;
    assert_eq!(header, ["NAME", "ENDPOINTS", "AGE"]);
    assert_eq!(row[1], "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...");

    let (header, row) = header_and_row(&sandbox, &["endpointslices", "manual-abc"]).await;
    assert_eq!(header, ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]);
    assert_eq!(&row[..4], ["manual-abc", "IPv4", "80", "10.0.0.1,10.0.0.2"]);

    let (header, row) = header_and_row(&sandbox, &["sa", "robot"]).await;
    assert_eq!(header, ["NAME", "SECRETS", "AGE"]);
    assert_eq!(&row[..2], ["robot", "1"]);

    // Roles show when they were created, as a timestamp rather than an age.
    let (header, row) = header_and_row(&sandbox, &["clusterrole", "reader"]).await;
    assert_eq!(header, ["NAME", "CREATED AT"]);
    assert!(
        row[1].parse::<jiff::Timestamp>().is_ok() && row[1].ends_with('Z'),
        "{row:?}"
    );

    let (header, row) =
        header_and_row(&sandbox, &["clusterrolebinding", "reader", "-o", "wide"]).await;
    assert_eq!(
        header,
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    );
    assert_eq!(row[1], "ClusterRole/reader");
    assert_eq!(&row[3..], ["alice", "auditors", "default/robot"]);

    let (header, row) = header_and_row(&sandbox, &["pdb", "keep-one"]).await;
    assert_eq!(
        header,
        [
            "NAME",
            "MIN AVAILABLE",
            "MAX UNAVAILABLE",
            "ALLOWED DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(&row[..3], ["keep-one", "1", "N/A"]);

    let (header, row) = header_and_row(&sandbox, &["netpol", "deny"]).await;
    assert_eq!(header, ["NAME", "POD-SELECTOR", "AGE"]);
    assert_eq!(row[1], "app=frontend");

    let (header, row) = header_and_row(&sandbox, &["ingressclass", "nginx"]).await;
    assert_eq!(header, ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]);
    assert_eq!(
        &row[1..3],
        [
            "k8s.io/ingress-nginx",
            "IngressParameters.k8s.example.com/external-lb"
        ]
    );

    // The CRD table is apiextensions-apiserver's default one.
    let (header, row) = header_and_row(&sandbox, &["crd"]).await;
    assert_eq!(header, ["NAME", "CREATED AT"]);
    assert!(row[1].parse::<jiff::Timestamp>().is_ok(), "{row:?}");

    // Events: no NAME column unless wide, where it comes last; both Event APIs print alike.
    let (header, row) = header_and_row(&sandbox, &["events"]).await;
    assert_eq!(header, ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    assert_eq!(
        &row[1..],
        ["Normal", "Checked", "replicaset/frontend", "all good"]
    );
    let (header, wide) = header_and_row(&sandbox, &["events", "-o", "wide"]).await;
    assert_eq!(
        header,
        [
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT",
            "SOURCE",
            "MESSAGE",
            "FIRST SEEN",
            "COUNT",
            "NAME"
        ]
    );
    assert_eq!(
        &wide[4..],
        [
            "spec",
            "checker, box",
            "all good",
            &wide[0],
            "4",
            "frontend.1"
        ]
    );
    let (header, row) = header_and_row(&sandbox, &["events.v1.events.k8s.io", "-o", "wide"]).await;
    assert_eq!(header[0], "LAST SEEN");
    assert_eq!(row, wide, "events.k8s.io prints the same row");
    sandbox.shutdown().await;
}
