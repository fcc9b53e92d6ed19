//! The value parsers of `plinth`'s flags: run by clap at argument time, so a bad value is
//! a usage error that names the flag and says what is wrong with it.
use plinth_protocol::{Attributes, ProtocolError, Resources};

/// `START-END`, within 1-65535, clear of the agents' default task host ports.
pub(crate) fn parse_service_ports(text: &str) -> Result<(u16, u16), String> {
    let (start, end) =
        text.split_once('-').ok_or_else(|| format!("'{text}' is not a range: write START-END, like 10000-20000"))?;
    let port = |part: &str| match part.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("'{}' is not a port: ports are 1-65535", part.trim())),
        Ok(port) => Ok(port),
    };
    let (start, end) = (port(start)?, port(end)?);
    if start > end {
        return Err(format!("the range starts above its end ({start} > {end})"));
    }
    let (low, high) = plinth_agent::DEFAULT_PORTS;
    if start <= high && end >= low {
        return Err(format!("{start}-{end} overlaps the agents' default task host ports {low}-{high}"));
    }
    Ok((start, end))
}

pub(crate) fn parse_etcd_prefix(text: &str) -> Result<String, String> {
    let prefix = text.trim_end_matches('/');
    if !prefix.starts_with('/') || prefix.len() < 2 {
        return Err(format!("'{text}' is not a key prefix: it starts with / and names something, like /plinth"));
    }
    Ok(prefix.to_string())
}

/// Argument-time parsing so a typo is a usage error naming the bad part.
pub(crate) fn parse_userns_remap(text: &str) -> Result<plinth_agent::userns::IdRemap, String> {
    text.parse().map_err(|e: plinth_agent::userns::RemapError| e.to_string())
}

pub(crate) fn parse_resources(text: &str) -> Result<Resources, String> {
    Resources::parse(text).map_err(reason)
}

pub(crate) fn parse_attributes(text: &str) -> Result<Attributes, String> {
    plinth_protocol::parse_attributes(text).map_err(reason)
}

/// Only the reason: clap's message already names the flag and the value.
fn reason(error: ProtocolError) -> String {
    match error {
        ProtocolError::InvalidResources { reason, .. }
        | ProtocolError::InvalidAttributes { reason, .. }
        | ProtocolError::InvalidId { reason, .. } => reason,
    }
}

/// `--boot-masters`: URLs like http://10.0.0.2:8080, comma-separated, at most 9.
pub(crate) fn parse_master_list(raw: &str) -> Result<String, String> {
    let urls: Vec<&str> = raw.split(',').map(str::trim).collect();
    if urls.len() > 9 {
        return Err(format!("{} masters; at most 9", urls.len()));
    }
    for url in &urls {
        let host =
            url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).map(|r| r.split(['/', ':']).next());
        if !matches!(host, Some(Some(h)) if !h.is_empty()) || url.contains(char::is_whitespace) {
            return Err(format!("{url:?} is not a master URL like http://10.0.0.2:8080"));
        }
    }
    Ok(urls.iter().map(|u| u.trim_end_matches('/')).collect::<Vec<_>>().join(","))
}
