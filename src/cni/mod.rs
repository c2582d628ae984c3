//! `uvs-cni`: a CNI (spec 1.0.0) plugin that attaches containers to uvs bridges.
//!
//! Contract: the runtime runs the plugin with the network configuration on stdin and the
//! `CNI_*` variables in the environment; [`run`] answers a result (ADD), nothing (DEL), nothing
//! (CHECK) or the supported versions (VERSION), or a [`CniError`] with one of the spec's codes,
//! which the binary prints as the spec's error JSON on stdout before exiting with status 1.
//!
//! ADD: first `CNI_IFNAME` must be free in `CNI_NETNS` and the host end's name in the host,
//! else code 4 naming it (the reference bridge plugin: "container veth name provided (eth0)
//! already exists") and nothing is changed: no lease is taken, and the interface of an earlier
//! ADD (a runtime's repeated ADD) is left alone. IPAM is delegated to the plugin the config's `ipam.type` names (Debian's `host-local`),
//! found in `CNI_PATH` and run with the same environment and stdin, as the reference bridge
//! plugin does. A veth pair is made: the container end, named `CNI_IFNAME`, goes into
//! `CNI_NETNS` with the address, MTU (the config's `mtu`, else 1500, at most 1450 when the
//! bridge has a VXLAN port) and routes: every route of the IPAM result (IPv4; one without `gw`
//! via the lease's gateway) and a default route via the gateway when the result has none, the
//! default one unless the namespace has a default route already; the result's `routes` lists
//! those added. An IPAM result with more than one address (two ranges, an IPv6 range) or an
//! IPv6 route is refused, code 7 naming them (uvs networks are one IPv4 subnet per bridge), and
//! the lease released. The host end (`uv` + a hash of
//! container id and interface) becomes a port of the uvs bridge (`type=afpacket`, or `afxdp` with
//! `portType: "afxdp"`; IPv6 off and `arp_ignore=8` on it) (the config's `bridge`,
//! else the network name) through the control socket (`uvs_socket`, default
//! `/run/uvs/uvs.sock`). A missing bridge is created with the IPAM gateway, `isolated=on`
//! unless `isolated: false`, and masquerade out of `uplink` when the config names one. The
//! `portMappings` capability becomes `dnat` rules on the uplink (else on the bridge itself); a
//! mapping with `hostPort` 0 (or none) gets a free host port picked by uvs (`nat-add dnat`
//! without `port=`), and the result carries `portMappings` with the host ports as made;
//! `mac` sets the container's MAC; `ips` is passed to the IPAM plugin (host-local reads it);
//! `bandwidth` (the reference plugin's `ingressRate`/`ingressBurst`/`egressRate`/`egressBurst`,
//! bit/s and bits) becomes the uvs port's shapers: `rate_tx` for what enters the container,
//! `rate_rx` for what leaves it (gone with the port on DEL).
//!
//! DEL is idempotent: a missing namespace, port, link or rule is success; it removes the port
//! mappings (matched by their text in `nat-show`: `dnat in=B proto=P port=N to=ADDR:C`, any
//! `N` for a picked port), the uvs port (in any state: a `pending` one too, as a DEL retried
//! after uvs was down finds it), the veth, and releases the IPAM lease. When uvs cannot
//! be reached the veth and the lease still go, and the error (code 100) names the uvs port
//! left behind and the `uvs ctl del-port` that removes it.
//! CHECK verifies the interface, its MAC (the result's sandbox interface `mac`), its address
//! and the result's IPv4 routes in the namespace, and the uvs port in state `up` (not `down`,
//! `gone` or `pending`), then runs the IPAM plugin's CHECK; a difference is code 102 naming it.
//!
//! Errors: `msg` is a short sentence with the reason (`uvs nat-add: port: tcp/8080 ... already
//! mapped`), `details` the longer story (the request, the daemon's or kernel's text, what to
//! do), empty when there is nothing more (never a lone space). An IPAM plugin's own error is
//! passed through with its code (the spec's delegation rule; host-local's are 999), prefixed
//! `ipam TYPE COMMAND:`; code 101 is for a plugin that cannot be found or run, fails without
//! the spec's error JSON, or answers no usable result.
//!
//! Invocations on one daemon are serialised by a lock file beside its socket ([`sys::lock`]).
//! Links, addresses and routes are made with rtnetlink requests ([`netlink`]), for the
//! container side on a socket opened by a helper thread that `setns`es into `CNI_NETNS`.

pub mod conf;
pub mod dns;
pub mod netlink;
pub mod ops;
pub mod sys;

use serde_json::{Value, json};

pub use conf::{Env, NetConf};

/// The CNI versions this plugin speaks (results are given in the config's version).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// A CNI error: the spec's well-known codes (1-11) or 100+ for uvs's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The spec's error code.
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer details (may be empty).
    pub details: String,
}

/// Incompatible CNI version.
pub const E_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
pub const E_UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist.
pub const E_UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables.
pub const E_INVALID_ENV: u32 = 4;
/// I/O failure.
pub const E_IO: u32 = 5;
/// Failed to decode content.
pub const E_DECODE: u32 = 6;
/// Invalid network config.
pub const E_INVALID_CONFIG: u32 = 7;
/// Try again later.
pub const E_TRY_AGAIN: u32 = 11;
/// uvs's own: the daemon refused a request or could not be reached.
pub const E_UVS: u32 = 100;
/// uvs's own: the IPAM plugin failed.
pub const E_IPAM: u32 = 101;
/// uvs's own: CHECK found a difference.
pub const E_CHECK: u32 = 102;

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// `what` failed for `reason`: the message says both (`what: reason`), the details keep
    /// the reason. (The message was only `what`, an internal command line such as "uvs show ",
    /// and the reason only in the details: found trying uvs as a platform engineer.)
    pub fn failed(code: u32, what: &str, reason: impl std::fmt::Display) -> Self {
        let reason = reason.to_string();
        CniError::new(code, format!("{what}: {reason}")).details(reason)
    }

    /// The same error with `details` (trimmed: never a lone space).
    pub fn details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into().trim().to_string();
        self
    }

    /// The spec's error JSON.
    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// The VERSION answer.
pub fn version_result() -> Value {
    json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS})
}

/// Runs one CNI command: `Ok(Some(json))` to print, `Ok(None)` for nothing.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        return Ok(Some(version_result()));
    }
    let conf = NetConf::parse(stdin)?;
    if !matches!(env.command.as_str(), "ADD" | "DEL" | "CHECK") {
        return Err(CniError::new(
            E_INVALID_ENV,
            format!(
                "CNI_COMMAND: '{}' is not ADD, DEL, CHECK or VERSION",
                env.command
            ),
        ));
    }
    // CHECK came with 0.4.0; an older configuration cannot ask for it (as the reference
    // plugins' skeleton answers). Refused before anything is looked at.
    if env.command == "CHECK" && conf.cni_version.starts_with("0.3.") {
        return Err(CniError::new(
            E_VERSION,
            format!(
                "cniVersion: '{}' does not allow CHECK (CHECK needs 0.4.0 or later)",
                conf.cni_version
            ),
        ));
    }
    let _lock = sys::lock(&conf.socket())?;
    match env.command.as_str() {
        "ADD" => ops::add(env, &conf, stdin).map(Some),
        "DEL" => ops::del(env, &conf, stdin).map(|()| None),
        "CHECK" => ops::check(env, &conf, stdin).map(|()| None),
        other => Err(CniError::new(
            E_INVALID_ENV,
            format!("CNI_COMMAND: '{other}' is not ADD, DEL, CHECK or VERSION"),
        )),
    }
}

/// The binary's whole behaviour: reads the environment and stdin, prints the answer; returns
/// the exit status.
pub fn main_with(vars: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> (String, i32) {
    let version = NetConf::version_of(stdin);
    let out = Env::from_vars(&vars).and_then(|env| run(&env, stdin));
    match out {
        Ok(Some(v)) => (v.to_string(), 0),
        Ok(None) => (String::new(), 0),
        Err(e) => (e.to_json(&version).to_string(), 1),
    }
}

#[cfg(test)]
mod tests;
