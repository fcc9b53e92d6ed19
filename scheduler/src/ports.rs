//! Ports of app definitions: cluster-unique service ports for `port: 0` /
//! `servicePort: 0`, and the host ports a task asks of an offer.
use std::collections::HashMap;

use plinth_protocol::marathon::NetworkMode;
use plinth_protocol::{AppDefinition, AppId};

use crate::error::CoreError;
use crate::state::Core;

impl Core {
    /// Service ports used by every app except `except`, with the app that holds each.
    pub(crate) fn used_service_ports(&self, except: &AppId) -> HashMap<u16, AppId> {
        self.apps
            .values()
            .filter(|a| &a.id != except)
            .flat_map(|a| service_ports_of(&a.definition).into_iter().map(|p| (p, a.id.clone())))
            .filter(|(p, _)| *p > 0)
            .collect()
    }

    /// An explicit service port must be free and not above the configured range.
    fn claim_explicit(&self, id: &AppId, port: u16, used: &mut HashMap<u16, AppId>) -> Result<(), CoreError> {
        let (low, high) = self.config.service_ports;
        if port > high {
            return Err(CoreError::ServicePortOutOfRange { port, app: id.clone(), low, high });
        }
        match used.get(&port) {
            Some(other) if other != id => {
                Err(CoreError::ServicePortClash { port, app: id.clone(), other: other.clone() })
            }
            _ => {
                used.insert(port, id.clone());
                Ok(())
            }
        }
    }

    /// Gives `port: 0` / `servicePort: 0` a cluster-unique service port, keeping the
    /// ones the previous definition had at the same index.
    pub(crate) fn assign_service_ports(
        &self,
        def: &mut AppDefinition,
        previous: Option<&AppDefinition>,
    ) -> Result<(), CoreError> {
        let id = AppId::parse(&def.id).map_err(|e| CoreError::InvalidApp(e.to_string()))?;
        let mut used = self.used_service_ports(&id);
        let old: Vec<u16> = previous.map(service_ports_of).unwrap_or_default();
        let (low, high) = self.config.service_ports;
        // Explicit ports first, so a port assigned for a 0 never takes one named later.
        // `requirePorts` port definitions are the tasks' own host ports, not balanced.
        if !host_ports_only(def) {
            for port in service_ports_of(def).into_iter().filter(|p| *p > 0) {
                self.claim_explicit(&id, port, &mut used)?;
            }
        }
        let next_free = |index: usize, used: &mut HashMap<u16, AppId>| -> Result<u16, CoreError> {
            if let Some(p) = old.get(index).copied().filter(|p| *p > 0 && !used.contains_key(p)) {
                used.insert(p, id.clone());
                return Ok(p);
            }
            let port =
                (low..=high).find(|p| !used.contains_key(p)).ok_or(CoreError::ServicePortsExhausted(low, high))?;
            used.insert(port, id.clone());
            Ok(port)
        };
        let uses_mappings =
            def.network_mode() == NetworkMode::Bridge || def.port_definitions.as_ref().is_none_or(Vec::is_empty);
        if uses_mappings {
            if let Some(container) = def.container.as_mut() {
                let mappings = match container.port_mappings.as_mut() {
                    Some(m) => Some(m),
                    None => container.docker.as_mut().and_then(|d| d.port_mappings.as_mut()),
                };
                for (i, m) in mappings.into_iter().flatten().enumerate() {
                    if m.service_port == 0 {
                        m.service_port = i64::from(next_free(i, &mut used)?);
                    } else {
                        port_u16(m.service_port, "servicePort")?;
                    }
                }
            }
        }
        for (i, d) in def.port_definitions.iter_mut().flatten().enumerate() {
            if d.port == 0 {
                d.port = i64::from(next_free(i, &mut used)?);
            } else {
                port_u16(d.port, "port")?;
            }
        }
        Ok(())
    }
}

/// `requirePorts` with port definitions: the ports are the host ports tasks bind (as in
/// Marathon), so no balancer may listen on them.
pub(crate) fn host_ports_only(def: &AppDefinition) -> bool {
    def.require_ports && !matches!(def.network_mode(), NetworkMode::Bridge) && def.container_port_mappings().is_none()
}

/// Host ports a task needs, in order: `Some(port)` fixed, `None` any from the offer.
/// `None` altogether when a fixed port is out of range.
pub(crate) fn port_requests(def: &AppDefinition) -> Option<Vec<Option<u16>>> {
    let count = def.host_port_count();
    let mut requests = Vec::with_capacity(count);
    match (def.network_mode(), def.container_port_mappings()) {
        (NetworkMode::Bridge, Some(_)) => {
            for m in def.host_port_mappings() {
                requests.push(m.host_port.filter(|p| *p > 0).map(u16::try_from).transpose().ok()?);
            }
        }
        (NetworkMode::Host, Some(mappings)) if def.port_definitions.as_ref().is_none_or(Vec::is_empty) => {
            for m in mappings {
                requests.push(m.host_port.filter(|p| *p > 0).map(u16::try_from).transpose().ok()?);
            }
        }
        _ => {
            for d in def.port_definitions.iter().flatten() {
                requests.push((def.require_ports && d.port > 0).then_some(d.port).map(u16::try_from).transpose().ok()?);
            }
        }
    }
    requests.truncate(count);
    Some(requests)
}

/// A port field of a definition entering the core: the API validates ports, so one out of
/// range makes the app invalid.
pub(crate) fn port_u16(port: i64, field: &str) -> Result<u16, CoreError> {
    u16::try_from(port).map_err(|_| CoreError::InvalidApp(format!("{field} {port} is not between 0 and 65535")))
}

/// Service ports declared by a definition, in port order.
// why: each port is clamped to 0..=65535 before the cast.
#[allow(clippy::cast_sign_loss)]
pub(crate) fn service_ports_of(def: &AppDefinition) -> Vec<u16> {
    match (def.network_mode(), def.container_port_mappings()) {
        (NetworkMode::Bridge, Some(m)) => m.iter().map(|p| p.service_port.clamp(0, 65535) as u16).collect(),
        (_, Some(m)) if def.port_definitions.as_ref().is_none_or(Vec::is_empty) => {
            m.iter().map(|p| p.service_port.clamp(0, 65535) as u16).collect()
        }
        _ => def.port_definitions.iter().flatten().map(|d| d.port.clamp(0, 65535) as u16).collect(),
    }
}
