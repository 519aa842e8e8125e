//! The official client libraries against the sandbox, used as their READMEs and examples show:
//! the JavaScript client (`@kubernetes/client-node` from npm) through CRUD, a watch, an
//! informer, exec and logs, and the Python client (`kubernetes` from PyPI) through exec and
//! logs (its CRUD and watches are in client_libraries.rs). scripts/test installs both under
//! target/test-tools.

mod common;

use serde_json::{Value, json};
use tusk_sandbox::Sandbox;

use common::clients::{node, python};
use common::{run_pod, sandbox_with_runtime};

/// The client's output, one JSON document.
fn parsed(output: &str) -> Value {
    serde_json::from_str(output.trim()).unwrap_or_else(|error| panic!("{error}: {output}"))
}

/// kube-apiserver behaviours: a body without apiVersion and kind is accepted (the client sends
/// none); a create returns the object with a uid and a resourceVersion; a replace with a stale
/// resourceVersion is a 409 Conflict; a merge patch merges; a field selector on metadata.name
/// filters a list; deleting a ConfigMap returns a Success Status; reading a deleted object is
/// a 404 NotFound.
#[tokio::test]
async fn javascript_client_creates_reads_replaces_patches_lists_and_deletes() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let answer = node(
        &sandbox,
        r#"
const core = kc.makeApiClient(k8s.CoreV1Api);
const namespace = 'default';
const reason = (error) => {
    const body = typeof error.body === 'string' ? JSON.parse(error.body) : error.body;
    return [error.code, body.reason];
};
const out = {};
const created = await core.createNamespacedConfigMap({
    namespace, body: { metadata: { name: 'zebra' }, data: { stripes: 'many' } },
});
out.created = [created.metadata.name, created.metadata.uid.length > 0, created.metadata.resourceVersion.length > 0];
const read = await core.readNamespacedConfigMap({ name: 'zebra', namespace });
read.data.stripes = 'more';
const replaced = await core.replaceNamespacedConfigMap({ name: 'zebra', namespace, body: read });
out.replaced = [replaced.data.stripes, replaced.metadata.resourceVersion !== read.metadata.resourceVersion];
try {
    await core.replaceNamespacedConfigMap({ name: 'zebra', namespace, body: read });
    out.stale = 'accepted';
} catch (error) {
    out.stale = reason(error);
}
const patched = await core.patchNamespacedConfigMap(
    { name: 'zebra', namespace, body: { data: { mane: 'none' } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
);
out.patched = patched.data;
const listed = await core.listNamespacedConfigMap({ namespace, fieldSelector: 'metadata.name=zebra' });
out.listed = listed.items.map((item) => item.metadata.name);
const deleted = await core.deleteNamespacedConfigMap({ name: 'zebra', namespace });
out.deleted = deleted.status;
try {
    await core.readNamespacedConfigMap({ name: 'zebra', namespace });
    out.gone = 'still there';
} catch (error) {
    out.gone = reason(error);
}
console.log(JSON.stringify(out));
"#,
    )
    .await;
    assert_eq!(
        parsed(&answer),
        json!({
            "created": ["zebra", true, true],
            "replaced": ["more", true],
            "stale": [409, "Conflict"],
            "patched": {"stripes": "more", "mane": "none"},
            "listed": ["zebra"],
            "deleted": "Success",
            "gone": [404, "NotFound"],
        })
    );
    sandbox.shutdown().await;
}

/// kube-apiserver behaviours: a watch from a list's resourceVersion sends every later change
/// once, in order (ADDED, MODIFIED, DELETED, the last with the object's final state), filtered
/// by its label selector; an informer's list then watch sees objects made before it started
/// as added and every later change as update and delete.
#[tokio::test]
async fn javascript_client_watches_and_informs() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let answer = node(
        &sandbox,
        r#"
const core = kc.makeApiClient(k8s.CoreV1Api);
const namespace = 'default';
const path = `/api/v1/namespaces/${namespace}/configmaps`;
const labelSelector = 'zoo=yes';
const merge = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
const seen = (object) => `${object.metadata.name} ${object.data?.n ?? ''}`;
await core.createNamespacedConfigMap({
    namespace, body: { metadata: { name: 'before', labels: { zoo: 'yes' } }, data: { n: '0' } },
});
await core.createNamespacedConfigMap({
    namespace, body: { metadata: { name: 'unlabelled' }, data: { n: '0' } },
});
const informed = [];
const informer = k8s.makeInformer(
    kc, path, () => core.listNamespacedConfigMap({ namespace, labelSelector }), labelSelector,
);
for (const verb of ['add', 'update', 'delete']) {
    informer.on(verb, (object) => informed.push(`${verb} ${seen(object)}`));
}
informer.on('error', (error) => informed.push(`error ${error}`));
await informer.start();
const watched = [];
const listed = await core.listNamespacedConfigMap({ namespace, labelSelector });
const watch = await new k8s.Watch(kc).watch(
    path,
    { labelSelector, resourceVersion: listed.metadata.resourceVersion },
    (type, object) => watched.push(`${type} ${seen(object)}`),
    () => {},
);
await core.createNamespacedConfigMap({
    namespace, body: { metadata: { name: 'after', labels: { zoo: 'yes' } }, data: { n: '1' } },
});
await core.patchNamespacedConfigMap({ name: 'unlabelled', namespace, body: { data: { n: '9' } } }, merge);
await core.patchNamespacedConfigMap({ name: 'after', namespace, body: { data: { n: '2' } } }, merge);
await core.deleteNamespacedConfigMap({ name: 'after', namespace });
const deadline = Date.now() + 20000;
while ((watched.length < 3 || informed.length < 4) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
}
// Anything late would show up now.
await new Promise((resolve) => setTimeout(resolve, 500));
watch.abort();
// What the informer saw while it ran (stopping it aborts its watch, which it reports).
const result = { watched, informed: [...informed], cached: informer.list(namespace).map(seen) };
await informer.stop();
console.log(JSON.stringify(result));
"#,
    )
    .await;
    assert_eq!(
        parsed(&answer),
        json!({
            "watched": ["ADDED after 1", "MODIFIED after 2", "DELETED after 2"],
            "informed": ["add before 0", "add after 1", "update after 2", "delete after 2"],
            "cached": ["before 0"],
        })
    );
    sandbox.shutdown().await;
}

/// A sandbox with a runtime, running the pod `shell`: it logs `first` and `second`, waits for
/// the file `$GO` (in its emptyDir) to appear, then logs `third`.
async fn shell_pod() -> (Sandbox, tempfile::TempDir) {
    let (sandbox, root) = sandbox_with_runtime().await;
    let client = sandbox.client().await.expect("client");
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "shell"},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{
                "name": "main",
                "image": "ignored",
                "command": ["sh", "-c",
                    r#"echo first; echo second; while [ ! -e "$GO" ]; do sleep 0.1; done; echo third; exec sleep 3600"#],
                "env": [{"name": "GO", "value": "/data/go"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
        },
    });
    run_pod(&client, pod, "second").await;
    (sandbox, root)
}

/// What a command exec'd into the shell pod does: reads a line from stdin, answers on stdout
/// and stderr, lets the pod go on, and exits with 3.
const EXEC_SCRIPT: &str = r#"read line; echo "got $line"; echo oops >&2; touch "$GO"; exit 3"#;

/// kubelet and kube-apiserver behaviours: exec over the WebSocket channel protocol carries
/// stdin to the command, its stdout and stderr apart, and its exit code as a Failure Status
/// (reason NonZeroExitCode, cause ExitCode); a pod's log honours tailLines, and with follow it
/// streams lines as the container writes them, each with an RFC 3339 timestamp when asked.
#[tokio::test]
async fn javascript_client_execs_and_reads_logs() {
    let (sandbox, _root) = shell_pod().await;
    let script = r#"
import stream from 'node:stream';
const core = kc.makeApiClient(k8s.CoreV1Api);
const collect = () => {
    const output = new stream.PassThrough();
    output.text = '';
    output.on('data', (chunk) => { output.text += chunk; });
    return output;
};
const out = {};
out.tail = await core.readNamespacedPodLog({ name: 'shell', namespace: 'default', container: 'main', tailLines: 1 });
const followed = collect();
const following = await new k8s.Log(kc).log('default', 'shell', 'main', followed, { follow: true, timestamps: true });
const stdout = collect();
const stderr = collect();
const status = await new Promise((resolve, reject) => {
    new k8s.Exec(kc)
        .exec('default', 'shell', 'main', ['sh', '-c', SCRIPT], stdout, stderr,
              stream.Readable.from(['zebra\n']), false, resolve)
        .catch(reject);
});
out.exec = {
    stdout: stdout.text, stderr: stderr.text, status: status.status, reason: status.reason,
    cause: status.details?.causes?.map((cause) => [cause.reason, cause.message]),
};
const deadline = Date.now() + 20000;
while (!followed.text.includes('third') && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
}
following.abort();
out.followed = followed.text.trim().split('\n').map((line) => {
    const [time, text] = line.split(' ');
    return [!Number.isNaN(Date.parse(time)) && time.endsWith('Z'), text];
});
console.log(JSON.stringify(out));
"#
    .replace("SCRIPT", &serde_json::to_string(EXEC_SCRIPT).expect("JSON"));
    let answer = node(&sandbox, &script).await;
    assert_eq!(
        parsed(&answer),
        json!({
            "tail": "second\n",
            "exec": {
                "stdout": "got zebra\n",
                "stderr": "oops\n",
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "cause": [["ExitCode", "3"]],
            },
            "followed": [[true, "first"], [true, "second"], [true, "third"]],
        })
    );
    sandbox.shutdown().await;
}

/// The same behaviours through the Python client: `stream()` over the exec WebSocket with
/// stdin, stdout and stderr and the exit code, `read_namespaced_pod_log` with `tail_lines`, and
/// a followed log read with `watch.Watch().stream`.
#[tokio::test]
async fn python_client_execs_and_reads_logs() {
    let (sandbox, _root) = shell_pod().await;
    let script = r#"
import json
from kubernetes import watch
from kubernetes.stream import stream
core = client.CoreV1Api()
out = {}
out["tail"] = core.read_namespaced_pod_log("shell", "default", container="main", tail_lines=1)
session = stream(core.connect_get_namespaced_pod_exec, "shell", "default", container="main",
                 command=["sh", "-c", SCRIPT], stdin=True, stdout=True, stderr=True, tty=False,
                 _preload_content=False)
session.write_stdin("zebra\n")
session.run_forever(timeout=20)
out["exec"] = {"stdout": session.read_stdout(), "stderr": session.read_stderr(),
               "code": session.returncode}
followed = []
log = watch.Watch()
for line in log.stream(core.read_namespaced_pod_log, name="shell", namespace="default",
                       container="main", follow=True, _request_timeout=20):
    followed.append(line)
    if line == "third":
        log.stop()
out["followed"] = followed
print(json.dumps(out))
"#
    .replace("SCRIPT", &serde_json::to_string(EXEC_SCRIPT).expect("JSON"));
    let answer = python(&sandbox, &script).await;
    assert_eq!(
        parsed(&answer),
        json!({
            "tail": "second\n",
            "exec": {"stdout": "got zebra\n", "stderr": "oops\n", "code": 3},
            "followed": ["first", "second", "third"],
        })
    );
    sandbox.shutdown().await;
}
