//! How to reach etcd: endpoints, credentials and TLS, turned into an `etcd_client::Client`.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::{Error, Result, DEFAULT_CONNECT_TIMEOUT};

/// Connection settings for an etcd cluster. Several endpoints give failover between members.
/// Its `Debug` output never shows the password.
#[derive(Clone)]
pub struct EtcdOptions {
    endpoints: Vec<String>,
    user: Option<(String, String)>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    connect_timeout: Duration,
    keepalive_interval: Duration,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(u, _)| (u, "<redacted>")))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl EtcdOptions {
    /// Settings for the given client URLs (`http://host:2379`, `https://...`, or `host:port`).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            user: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive_interval: Duration::from_secs(2),
        }
    }

    /// Authenticate as an etcd user (etcd's role-based auth).
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// Verify the server against this PEM CA bundle (enables TLS).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Present this PEM client certificate and key (mutual TLS).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// How long to wait for a TCP/TLS connection to a member (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The configured endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn uses_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some()
    }

    /// Endpoints with a scheme: `https://` when TLS is configured and none was given.
    fn normalized_endpoints(&self) -> Vec<String> {
        let scheme = if self.uses_tls() {
            "https://"
        } else {
            "http://"
        };
        self.endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}{e}")
                }
            })
            .collect()
    }

    fn tls(&self) -> Result<Option<TlsOptions>> {
        if !self.uses_tls() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA file")?));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "client certificate")?,
                    read(key, "client key")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(Error::Config(
                    "a client certificate needs both a cert file and a key file".into(),
                ))
            }
        }
        Ok(Some(tls))
    }

    /// Connects to the cluster. Fails fast on bad settings; an unreachable cluster is an error
    /// the caller may retry.
    pub async fn connect(&self) -> Result<Client> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidArgument("no etcd endpoints given".into()));
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(self.keepalive_interval, self.keepalive_interval)
            .with_keep_alive_while_idle(true)
            // A member cut off from the leader must not serve us stale watches or reads.
            .with_require_leader(true);
        if let Some((user, password)) = &self.user {
            // etcd's auth tokens expire (simple ones after `--auth-token-ttl` without use, 300 s
            // by default; JWTs at their `ttl`), and lease keepalives and open watches do not
            // renew them: without this, a holder that only renews its lease, or a waiter that
            // only watches, finds every later request refused with "invalid auth token". With
            // it, a request refused that way authenticates again (concurrent ones share one
            // refresh) and is sent once more. A watch opened with an expired token is not
            // refused but cancelled at once inside its stream; `lock::wait_for_deletion` then
            // re-reads the key, which refreshes the token, and watches again. Lease keepalives
            // need no token.
            opts = opts
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = self.tls()? {
            opts = opts.with_tls(tls);
        }
        Client::connect(self.normalized_endpoints(), Some(opts))
            .await
            .map_err(Error::etcd("connect"))
    }
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {what} {}: {e}", path.display())))
}
