//! A real Kubernetes API server for the end-to-end tests: `kube-apiserver` v1.20.2 (built by
//! scripts/install-kube-apiserver.sh) on a free loopback port, over TLS from the test PKI, with
//! its own one-member etcd, token authentication and RBAC. It is the API server alone: no
//! scheduler, kubelet or controllers, so pods stay Pending (their status can still be patched)
//! and no ServiceAccount is created for a namespace (the ServiceAccount admission plugin is off).
//!
//! Identities are fixed at start (the token file is read once): the admin (`system:masters`) and
//! one token per ServiceAccount the test names, which authenticates as
//! `system:serviceaccount:NAMESPACE:NAME`, exactly as a pod's projected token would. What that
//! identity may do is up to the Roles the test creates.
//!
//! The test side talks to it with `kubectl` (the same version), through [`KubeApiServer::kubectl`];
//! [`PodWatch`] records every version of the pods of a namespace from a `kubectl get --watch`.

use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::auth::rsa_key_pair;
use crate::etcd::EtcdCluster;
use crate::sidecar::free_port;
use crate::tls::TestPki;

/// The Kubernetes version the tests run against.
pub const KUBE_VERSION: &str = "1.20.2";
/// How long the server may take to answer `/readyz` with 200 after its start.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const LOG_TAIL_LINES: usize = 60;

/// `$NAME` if set, else `.tools/kube-1.20.2/bin/{file}` of the repository. Panics, saying how to
/// install it, when it is not there: these tests never skip.
fn tool(env: &str, file: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let path = crate::repo_root()
        .join(format!(".tools/kube-{KUBE_VERSION}/bin"))
        .join(file);
    assert!(
        path.is_file(),
        "{} not found: run scripts/install-kube-apiserver.sh (or set {env})",
        path.display()
    );
    path
}

/// The `kube-apiserver` binary (`$LOCKKEEPER_KUBE_APISERVER_BIN`, else the repository's).
pub fn kube_apiserver_bin() -> PathBuf {
    tool("LOCKKEEPER_KUBE_APISERVER_BIN", "kube-apiserver")
}

/// The `kubectl` binary of the same version (`$LOCKKEEPER_KUBECTL_BIN`, else the repository's).
pub fn kubectl_bin() -> PathBuf {
    tool("LOCKKEEPER_KUBECTL_BIN", "kubectl")
}

/// `helm`: `$LOCKKEEPER_HELM_BIN`, else the repository's `.tools/bin/helm` (from
/// scripts/install-helm.sh), else `helm` on PATH.
pub fn helm_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("LOCKKEEPER_HELM_BIN") {
        return PathBuf::from(path);
    }
    let local = crate::repo_root().join(".tools/bin/helm");
    if local.is_file() {
        return local;
    }
    PathBuf::from("helm")
}

/// A ServiceAccount identity the server accepts a token for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    pub fn new(namespace: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The user name the API server gives it.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// A running `kube-apiserver` with its etcd. Dropping it kills both and removes their files.
pub struct KubeApiServer {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The `host:port` it listens on (for a proxy in front of it).
    pub addr: String,
    child: Option<Child>,
    dir: TempDir,
    admin: PathBuf,
    tokens: HashMap<ServiceAccount, String>,
    pki: TestPki,
    _etcd: EtcdCluster,
}

impl KubeApiServer {
    /// Starts the server, ready (`/readyz` 200) on return, accepting tokens for `accounts`.
    pub fn start(accounts: &[ServiceAccount]) -> KubeApiServer {
        let bin = kube_apiserver_bin();
        let etcd = EtcdCluster::single();
        let pki = TestPki::generate();
        let dir = tempfile::Builder::new()
            .prefix("lockkeeper-kube-")
            .tempdir()
            .expect("create the API server's dir");
        let (sa_key, sa_pub) = rsa_key_pair(dir.path());

        let mut tokens = HashMap::new();
        let admin_token = random_token();
        let mut csv = format!("{admin_token},lockkeeper-test-admin,uid-admin,\"system:masters\"\n");
        for (i, sa) in accounts.iter().enumerate() {
            let token = random_token();
            csv.push_str(&format!(
                "{token},{},uid-sa-{i},\"system:serviceaccounts,system:serviceaccounts:{}\"\n",
                sa.user(),
                sa.namespace
            ));
            tokens.insert(sa.clone(), token);
        }
        let token_file = dir.path().join("tokens.csv");
        fs::write(&token_file, csv).expect("write the token file");

        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("https://{addr}");
        let log = dir.path().join("kube-apiserver.log");
        let cert_dir = dir.path().join("certs");
        let child = Command::new(&bin)
            .arg(format!("--etcd-servers={}", etcd.endpoint(0)))
            .arg("--etcd-prefix=/registry")
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg("--insecure-port=0")
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .arg(format!("--tls-cert-file={}", pki.server.cert.display()))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.server.key.display()
            ))
            .arg(format!("--token-auth-file={}", token_file.display()))
            .arg("--anonymous-auth=false")
            .arg("--authorization-mode=RBAC")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", sa_pub.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_key.display()
            ))
            .arg("--profiling=false")
            .arg("--v=1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("kube-apiserver.out")).expect("out file"))
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));

        let admin = dir.path().join("admin.kubeconfig");
        write_kubeconfig(&admin, &url, &pki.ca_cert, &admin_token);
        let mut server = KubeApiServer {
            url,
            addr,
            child: Some(child),
            dir,
            admin,
            tokens,
            pki,
            _etcd: etcd,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "kube-apiserver exited ({status}) before it was ready:\n{}",
                        self.log_tail()
                    );
                }
            }
            let out = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"]);
            if out.status.success() {
                eprintln!(
                    "kube-apiserver {KUBE_VERSION} ready at {} after {:?}",
                    self.url,
                    started.elapsed()
                );
                return;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "kube-apiserver not ready after {READY_TIMEOUT:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The admin's kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin
    }

    /// A kubeconfig for `account` only, towards `server` (the API server's URL, or a proxy in
    /// front of it: `https://127.0.0.1:PORT`; the certificate is valid for any port).
    pub fn kubeconfig_for(&self, account: &ServiceAccount, server: &str) -> PathBuf {
        let token = self
            .tokens
            .get(account)
            .unwrap_or_else(|| panic!("no token for {account:?}: name it in start()"));
        let file = self.dir.path().join(format!(
            "{}-{}-{}.kubeconfig",
            account.namespace,
            account.name,
            free_port()
        ));
        write_kubeconfig(&file, server, &self.pki.ca_cert, token);
        file
    }

    /// `kubectl` as the admin, with `args`; the output, whatever the exit status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_bin())
            .arg(format!("--kubeconfig={}", self.admin.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    /// `kubectl` as the admin with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(kubectl_bin())
            .arg(format!("--kubeconfig={}", self.admin.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write kubectl's stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// `kubectl` as the admin; panics with its stderr unless it succeeds. Returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `manifests` (YAML or JSON) as the admin; panics on failure.
    pub fn apply(&self, manifests: &str) {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifests);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n--- input ---\n{manifests}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl get` of one object as JSON.
    pub fn get_json(&self, namespace: &str, what: &str) -> Value {
        let out = self.kubectl_ok(&["-n", namespace, "get", what, "-o", "json"]);
        serde_json::from_str(&out).expect("kubectl printed JSON")
    }

    /// Starts recording every version of the pods in `namespace`.
    pub fn watch_pods(&self, namespace: &str) -> PodWatch {
        PodWatch::start(&self.admin, namespace)
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log =
            fs::read_to_string(self.dir.path().join("kube-apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "test", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{ "name": "test", "user": { "token": token } }],
        "contexts": [{ "name": "test", "context": { "cluster": "test", "user": "test" } }],
        "current-context": "test",
    });
    fs::write(path, serde_json::to_vec_pretty(&config).expect("JSON")).expect("write kubeconfig");
}

/// One version of a pod, as the API server sent it on a watch.
#[derive(Clone, Debug)]
pub struct PodVersion {
    /// When the watch delivered it.
    pub seen: Instant,
    pub name: String,
    /// `metadata.resourceVersion`, as a number (etcd's revision: one order for all objects).
    pub resource_version: u64,
    /// The pod's whole object.
    pub object: Value,
}

impl PodVersion {
    /// The status (`"True"`/`"False"`) of condition `type_`, if the pod has it.
    pub fn condition(&self, type_: &str) -> Option<String> {
        condition_of(&self.object, type_).map(|c| c["status"].as_str().unwrap_or("").to_owned())
    }

    /// The value of label `key`, if set.
    pub fn label(&self, key: &str) -> Option<String> {
        self.object["metadata"]["labels"][key]
            .as_str()
            .map(str::to_owned)
    }
}

/// The condition `type_` of a pod object.
pub fn condition_of<'a>(pod: &'a Value, type_: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Every version of the pods of one namespace, from `kubectl get pods --watch -o json`; stops
/// on drop.
pub struct PodWatch {
    child: Child,
    versions: Arc<Mutex<Vec<PodVersion>>>,
}

impl PodWatch {
    fn start(kubeconfig: &Path, namespace: &str) -> PodWatch {
        let mut child = Command::new(kubectl_bin())
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["-n", namespace, "get", "pods", "--watch", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run kubectl get --watch");
        let stdout = child.stdout.take().expect("stdout");
        let versions = Arc::new(Mutex::new(Vec::new()));
        let sink = versions.clone();
        thread::spawn(move || {
            let stream =
                serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
            for object in stream.flatten() {
                let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let resource_version = object["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                sink.lock().unwrap().push(PodVersion {
                    seen: Instant::now(),
                    name,
                    resource_version,
                    object,
                });
            }
        });
        PodWatch { child, versions }
    }

    /// What was recorded so far, in the order delivered.
    pub fn versions(&self) -> Vec<PodVersion> {
        self.versions.lock().unwrap().clone()
    }

    /// Every recorded version in resourceVersion order, duplicates (a re-list) removed.
    pub fn history(&self) -> Vec<PodVersion> {
        let mut all = self.versions();
        all.sort_by_key(|v| (v.resource_version, v.name.clone()));
        all.dedup_by_key(|v| (v.resource_version, v.name.clone()));
        all
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
