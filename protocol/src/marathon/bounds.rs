//! Size limits of an app definition. The request body is capped as a whole, but a
//! definition is stored, versioned, rendered in every list and sent to agents, so each
//! part gets a bound of its own: no definition can make reads, the store or an agent's
//! desired state grow without limit.
use super::AppDefinition;

/// Instances of one app.
pub const MAX_INSTANCES: i64 = 1_000_000;
/// Bytes of `cmd`, and of each argument.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Entries of `args`.
pub const MAX_ARGS: usize = 1024;
/// Entries of `env` and of `labels`.
pub const MAX_ENTRIES: usize = 1024;
/// Bytes of a name (env variable, label key).
pub const MAX_NAME_BYTES: usize = 256;
/// Bytes of a value (env value, label value).
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// Entries of each other list (constraints, ports, health checks, fetch URIs, ...).
pub const MAX_LIST: usize = 128;

/// Every bound `def` breaks, as (JSON path, message).
pub fn violations(def: &AppDefinition) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut list = |path: &str, len: usize, max: usize| {
        if len > max {
            out.push((path.to_string(), format!("at most {max} entries are allowed, got {len}")));
        }
    };
    list("/args", def.args.as_ref().map_or(0, Vec::len), MAX_ARGS);
    list("/env", def.env.len(), MAX_ENTRIES);
    list("/labels", def.labels.len(), MAX_ENTRIES);
    list("/constraints", def.constraints.len(), MAX_LIST);
    list("/uris", def.uris.len(), MAX_LIST);
    list("/fetch", def.fetch.len(), MAX_LIST);
    list("/storeUrls", def.store_urls.len(), MAX_LIST);
    list("/ports", def.ports.as_ref().map_or(0, Vec::len), MAX_LIST);
    list("/portDefinitions", def.port_definitions.as_ref().map_or(0, Vec::len), MAX_LIST);
    list("/healthChecks", def.health_checks.len(), MAX_LIST);
    list("/readinessChecks", def.readiness_checks.len(), MAX_LIST);
    list("/dependencies", def.dependencies.len(), MAX_LIST);
    list("/networks", def.networks.len(), MAX_LIST);
    list("/acceptedResourceRoles", def.accepted_resource_roles.as_ref().map_or(0, Vec::len), MAX_LIST);
    if def.instances > MAX_INSTANCES {
        out.push(("/instances".into(), format!("must be at most {MAX_INSTANCES}")));
    }
    let mut long = |path: String, len: usize, max: usize| {
        if len > max {
            out.push((path, format!("at most {max} bytes are allowed, got {len}")));
        }
    };
    long("/cmd".into(), def.cmd.as_ref().map_or(0, String::len), MAX_COMMAND_BYTES);
    if let Some(args) = &def.args {
        if let Some((i, arg)) = args.iter().enumerate().find(|(_, a)| a.len() > MAX_COMMAND_BYTES) {
            long(format!("/args({i})"), arg.len(), MAX_COMMAND_BYTES);
        }
    }
    let value_len = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string().len(), str::len);
    for (name, value) in def.env.iter().filter(|(n, v)| n.len() > MAX_NAME_BYTES || value_len(v) > MAX_VALUE_BYTES) {
        let path = format!("/env/{}", truncated(name));
        long(path.clone(), name.len(), MAX_NAME_BYTES);
        long(path, value_len(value), MAX_VALUE_BYTES);
    }
    for (key, value) in def.labels.iter().filter(|(k, v)| k.len() > MAX_NAME_BYTES || v.len() > MAX_VALUE_BYTES) {
        let path = format!("/labels/{}", truncated(key));
        long(path.clone(), key.len(), MAX_NAME_BYTES);
        long(path, value.len(), MAX_VALUE_BYTES);
    }
    out
}

/// A name short enough to quote back in an error.
fn truncated(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((at, _)) => format!("{}...", &name[..at]),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppDefinition {
        serde_json::from_value(serde_json::json!({"id": "/a", "cmd": "sleep 1"})).expect("app")
    }

    #[test]
    fn a_definition_inside_the_bounds_passes() {
        let mut def = app();
        def.env = (0..MAX_ENTRIES).map(|i| (format!("V{i}"), serde_json::json!("x"))).collect();
        def.labels = (0..MAX_ENTRIES).map(|i| (format!("l{i}"), "y".repeat(MAX_VALUE_BYTES))).collect();
        def.instances = MAX_INSTANCES;
        assert_eq!(violations(&def), Vec::new());
    }

    #[test]
    fn each_bound_is_named_by_its_path() {
        let mut def = app();
        def.env = (0..=MAX_ENTRIES).map(|i| (format!("V{i}"), serde_json::json!("x"))).collect();
        def.labels.insert("k".repeat(MAX_NAME_BYTES + 1), "v".into());
        def.cmd = Some("x".repeat(MAX_COMMAND_BYTES + 1));
        def.instances = MAX_INSTANCES + 1;
        def.constraints = vec![vec![serde_json::json!("hostname"), serde_json::json!("UNIQUE")]; MAX_LIST + 1];
        let paths: Vec<String> = violations(&def).into_iter().map(|(p, _)| p).collect();
        for expected in ["/env", "/constraints", "/instances", "/cmd"] {
            assert!(paths.iter().any(|p| p == expected), "{expected} missing from {paths:?}");
        }
        assert!(paths.iter().any(|p| p.starts_with("/labels/kkkk") && p.ends_with("...")), "{paths:?}");
    }
}
