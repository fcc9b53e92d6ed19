//! Names outside the domain go to the host's resolvers: the nameservers of its
//! resolv.conf, without loopback stubs (`127.0.0.53` and the like would answer through
//! this very server, or be unreachable from containers). Answers are cached by
//! hickory-resolver (positive and negative, within their TTLs).
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, Record, RecordType};
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::TokioResolver;

/// Cached answers kept (names × types).
const CACHE_ENTRIES: usize = 4096;
/// Per upstream query; a client retries on its own clock anyway.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("reading {path}")]
    Read { path: String, source: std::io::Error },
    #[error("parsing {path}")]
    Parse { path: String, source: resolv_conf::ParseError },
}

/// The nameservers of a resolv.conf text, loopback and unspecified addresses left out.
pub fn upstreams_of(text: &str, path: &str) -> Result<Vec<IpAddr>, ForwardError> {
    let config =
        resolv_conf::Config::parse(text).map_err(|source| ForwardError::Parse { path: path.to_string(), source })?;
    Ok(config.nameservers.iter().map(IpAddr::from).filter(|ip| !ip.is_loopback() && !ip.is_unspecified()).collect())
}

/// [`upstreams_of`] the file at `path`.
pub fn read_upstreams(path: &Path) -> Result<Vec<IpAddr>, ForwardError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ForwardError::Read { path: shown.clone(), source })?;
    upstreams_of(&text, &shown)
}

/// What the upstreams said.
#[derive(Debug)]
pub enum Forwarded {
    Answer(Vec<Record>),
    /// No records: NXDOMAIN, or NOERROR for a name without that type.
    Empty(ResponseCode),
    /// No upstream answered (or one failed): SERVFAIL.
    Failed(String),
}

/// The caching forwarder over fixed upstreams.
pub struct Forwarder {
    resolver: TokioResolver,
}

impl Forwarder {
    /// `None` without upstreams.
    pub fn new(upstreams: &[IpAddr]) -> Option<Forwarder> {
        if upstreams.is_empty() {
            return None;
        }
        let servers = NameServerConfigGroup::from_ips_clear(upstreams, 53, true);
        let mut options = ResolverOpts::default();
        options.cache_size = CACHE_ENTRIES;
        options.timeout = UPSTREAM_TIMEOUT;
        options.attempts = 2;
        // Names arrive fully qualified; no search list, no hosts file: only upstreams.
        options.ndots = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.preserve_intermediates = true;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioConnectionProvider::default(),
        )
        .with_options(options)
        .build();
        Some(Forwarder { resolver })
    }

    pub async fn lookup(&self, name: Name, record_type: RecordType) -> Forwarded {
        match self.resolver.lookup(name, record_type).await {
            Ok(lookup) => Forwarded::Answer(lookup.records().to_vec()),
            Err(error) => match error.proto().map(|p| p.kind()) {
                Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
                    code @ (ResponseCode::NXDomain | ResponseCode::NoError) => Forwarded::Empty(code),
                    other => Forwarded::Failed(format!("upstream answered {other}")),
                },
                _ => Forwarded::Failed(error.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_stubs_are_skipped() {
        let text = "# systemd-resolved\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.1.2.3\n\
                    nameserver fd00::1\nsearch example.org\noptions edns0 trust-ad\n";
        let upstreams = upstreams_of(text, "resolv.conf").unwrap();
        assert_eq!(upstreams, ["10.1.2.3".parse::<IpAddr>().unwrap(), "fd00::1".parse().unwrap()]);
        assert!(upstreams_of("nameserver 127.0.0.53\n", "r").unwrap().is_empty());
        assert!(Forwarder::new(&[]).is_none(), "no upstream, no forwarder");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = read_upstreams(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert_eq!(err.to_string(), "reading /nonexistent/resolv.conf");
    }
}
