//! Resources in Mesos' vocabulary: scalar `cpus`, `mem` (MB), `disk` (MB) and `ports`
//! ranges, with the `cpus:2;mem:1024;disk:4096;ports:[31000-32000]` text form, plus
//! agent attributes (`rack:r1;zone:a`).
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::ProtocolError;

/// A set of ports kept as sorted, non-overlapping, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PortRanges(Vec<(u16, u16)>);

/// Read through [`PortRanges::new`]: an agent's registration may list ranges reversed,
/// overlapping or unsorted, and placement relies on the invariant (found by the fuzz
/// target `agent_protocol`).
impl<'de> Deserialize<'de> for PortRanges {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<(u16, u16)>::deserialize(d).map(PortRanges::new)
    }
}

impl PortRanges {
    pub fn new(ranges: impl IntoIterator<Item = (u16, u16)>) -> Self {
        let mut set = PortRanges::default();
        for (begin, end) in ranges {
            set.insert_range(begin.min(end), begin.max(end));
        }
        set
    }

    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|(b, e)| (*e - *b) as usize + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|(b, e)| *b <= port && port <= *e)
    }

    pub fn insert(&mut self, port: u16) {
        self.insert_range(port, port);
    }

    fn insert_range(&mut self, begin: u16, end: u16) {
        let mut merged = Vec::with_capacity(self.0.len() + 1);
        let (mut nb, mut ne) = (begin, end);
        let mut placed = false;
        for &(b, e) in &self.0 {
            if (e as u32) + 1 < nb as u32 {
                merged.push((b, e));
            } else if (ne as u32) + 1 < b as u32 {
                if !placed {
                    merged.push((nb, ne));
                    placed = true;
                }
                merged.push((b, e));
            } else {
                nb = nb.min(b);
                ne = ne.max(e);
            }
        }
        if !placed {
            merged.push((nb, ne));
        }
        merged.sort_unstable();
        self.0 = merged;
    }

    /// Removes one port; returns whether it was present.
    pub fn remove(&mut self, port: u16) -> bool {
        let Some(index) = self.0.iter().position(|(b, e)| *b <= port && port <= *e) else {
            return false;
        };
        let (b, e) = self.0[index];
        self.0.remove(index);
        if port < e {
            self.0.insert(index, (port + 1, e));
        }
        if b < port {
            self.0.insert(index, (b, port - 1));
        }
        true
    }

    /// Takes the `count` lowest ports, or nothing when there are fewer.
    pub fn take_lowest(&mut self, count: usize) -> Option<Vec<u16>> {
        if self.len() < count {
            return None;
        }
        let mut taken = Vec::with_capacity(count);
        while taken.len() < count {
            let port = self.0[0].0;
            self.remove(port);
            taken.push(port);
        }
        Some(taken)
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(b, e)| format!("{b}-{e}")).collect();
        write!(f, "[{}]", parts.join(","))
    }
}

/// An amount of resources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    #[serde(default)]
    pub ports: PortRanges,
}

/// Tolerance for float sums of many small `cpus` values.
const EPSILON: f64 = 1e-9;

impl Resources {
    /// The scalar part only (no ports).
    pub fn scalars(cpus: f64, mem: f64, disk: f64) -> Self {
        Resources { cpus, mem, disk, ports: PortRanges::default() }
    }

    /// Parses the Mesos text form. Names other than `cpus`, `mem`, `disk`, `ports` are
    /// rejected, so a typo never silently drops a resource.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let mut resources = Resources::default();
        let mut seen = Vec::new();
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let invalid = |reason: String| ProtocolError::InvalidResources { input: text.to_string(), reason };
            let (raw_name, value) =
                item.split_once(':').ok_or_else(|| invalid(format!("'{item}' is not of the form name:value")))?;
            // Mesos allows a role suffix such as `cpus(*)`; only the default role exists here.
            let name = raw_name.trim().trim_end_matches("(*)");
            if seen.contains(&name.to_string()) {
                return Err(invalid(format!("'{name}' is given twice")));
            }
            seen.push(name.to_string());
            let value = value.trim();
            let scalar = |v: &str| -> Result<f64, ProtocolError> {
                let parsed: f64 = v.parse().map_err(|_| invalid(format!("'{name}' value '{v}' is not a number")))?;
                if !parsed.is_finite() || parsed < 0.0 {
                    return Err(invalid(format!("'{name}' must be a non-negative number, got '{v}'")));
                }
                Ok(parsed)
            };
            match name {
                "cpus" => resources.cpus = scalar(value)?,
                "mem" => resources.mem = scalar(value)?,
                "disk" => resources.disk = scalar(value)?,
                "ports" => resources.ports = parse_ranges(value).map_err(invalid)?,
                other => return Err(invalid(format!("unknown resource '{other}' (known: cpus, mem, disk, ports)"))),
            }
        }
        Ok(resources)
    }

    /// Whether `self` holds at least the scalar amounts of `need`.
    pub fn covers_scalars(&self, need: &Resources) -> bool {
        self.cpus + EPSILON >= need.cpus && self.mem + EPSILON >= need.mem && self.disk + EPSILON >= need.disk
    }

    pub fn add_scalars(&mut self, other: &Resources) {
        self.cpus += other.cpus;
        self.mem += other.mem;
        self.disk += other.disk;
    }

    pub fn subtract_scalars(&mut self, other: &Resources) {
        self.cpus = (self.cpus - other.cpus).max(0.0);
        self.mem = (self.mem - other.mem).max(0.0);
        self.disk = (self.disk - other.disk).max(0.0);
    }
}

fn parse_ranges(value: &str) -> Result<PortRanges, String> {
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| format!("ports '{value}' must look like [31000-32000]"))?;
    let mut ranges = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (b, e) = part.split_once('-').unwrap_or((part, part));
        let begin: u16 = b.trim().parse().map_err(|_| format!("port '{}' is not a number in 0-65535", b.trim()))?;
        let end: u16 = e.trim().parse().map_err(|_| format!("port '{}' is not a number in 0-65535", e.trim()))?;
        if begin > end {
            return Err(format!("port range {part} is reversed"));
        }
        ranges.push((begin, end));
    }
    Ok(PortRanges::new(ranges))
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpus:{};mem:{};disk:{}", self.cpus, self.mem, self.disk)?;
        if !self.ports.is_empty() {
            write!(f, ";ports:{}", self.ports)?;
        }
        Ok(())
    }
}

/// Agent attributes (`rack:r1;zone:a`), used by constraints.
pub type Attributes = BTreeMap<String, String>;

pub fn parse_attributes(text: &str) -> Result<Attributes, ProtocolError> {
    let mut attributes = Attributes::new();
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let invalid = |reason: String| ProtocolError::InvalidAttributes { input: text.to_string(), reason };
        let (name, value) =
            item.split_once(':').ok_or_else(|| invalid(format!("'{item}' is not of the form name:value")))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err(invalid(format!("'{item}' needs a name and a value")));
        }
        if attributes.insert(name.to_string(), value.to_string()).is_some() {
            return Err(invalid(format!("attribute '{name}' is given twice")));
        }
    }
    Ok(attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_read_back_from_their_json_unchanged() {
        // What an agent writes, the master reads as the same numbers (serde_json's
        // float_roundtrip; fuzz/corpus/agent_protocol/long_mantissa.json).
        let sent = Resources { mem: 1.0246666666666667e119, cpus: 0.30000000000000004, ..Resources::default() };
        let read: Resources = serde_json::from_str(&serde_json::to_string(&sent).unwrap()).unwrap();
        assert_eq!(read, sent);
    }

    #[test]
    fn port_ranges_read_from_json_are_normalised() {
        // An agent registering `[[62000, 32000]]` made the master's placement panic
        // (fuzz/corpus/agent_protocol/reversed_port_range.json).
        let mut ports: PortRanges = serde_json::from_str("[[62000, 32000], [31005, 31000], [31003, 31010]]").unwrap();
        assert_eq!(ports.ranges(), [(31000, 31010), (32000, 62000)]);
        assert_eq!(ports.len(), 11 + 30001);
        assert_eq!(ports.take_lowest(3), Some(vec![31000, 31001, 31002]));
        assert_eq!(serde_json::to_string(&ports).unwrap(), "[[31003,31010],[32000,62000]]");
    }

    #[test]
    fn parses_the_mesos_resource_string() {
        let r = Resources::parse("cpus:2;mem:1024;disk:4096;ports:[31000-32000]").unwrap();
        assert_eq!(r.cpus, 2.0);
        assert_eq!(r.mem, 1024.0);
        assert_eq!(r.disk, 4096.0);
        assert_eq!(r.ports.len(), 1001);
        assert_eq!(r.to_string(), "cpus:2;mem:1024;disk:4096;ports:[31000-32000]");
        let r = Resources::parse("cpus(*):0.5; ports:[1-2,5-5]").unwrap();
        assert_eq!(r.cpus, 0.5);
        assert_eq!(r.ports.ranges(), &[(1, 2), (5, 5)]);
    }

    #[test]
    fn typos_and_bad_values_are_rejected_with_the_reason() {
        let err = Resources::parse("cpu:2;mem:1024").unwrap_err().to_string();
        assert!(err.contains("unknown resource 'cpu'"), "{err}");
        assert!(Resources::parse("cpus:two").unwrap_err().to_string().contains("not a number"));
        assert!(Resources::parse("cpus:-1").is_err());
        assert!(Resources::parse("ports:31000-32000").is_err());
        assert!(Resources::parse("ports:[32000-31000]").is_err());
        assert!(Resources::parse("ports:[70000-70001]").is_err());
        assert!(Resources::parse("cpus:1;cpus:2").is_err());
    }

    #[test]
    fn port_ranges_take_and_give_back() {
        let mut p = PortRanges::new([(31000, 31004)]);
        assert_eq!(p.take_lowest(2).unwrap(), vec![31000, 31001]);
        assert!(p.remove(31003));
        assert!(!p.remove(31003));
        assert_eq!(p.ranges(), &[(31002, 31002), (31004, 31004)]);
        assert!(p.take_lowest(3).is_none());
        p.insert(31003);
        p.insert(31000);
        p.insert(31001);
        assert_eq!(p.ranges(), &[(31000, 31004)]);
    }

    #[test]
    fn attributes_parse_and_reject_garbage() {
        let a = parse_attributes("rack:r1;zone:a").unwrap();
        assert_eq!(a.get("rack").map(String::as_str), Some("r1"));
        assert!(parse_attributes("rack").is_err());
        assert!(parse_attributes("rack:1;rack:2").is_err());
    }
}
