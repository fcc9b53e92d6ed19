//! Basic-auth credentials for upstream registries, from a Docker `config.json`.
use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

/// Basic-auth credentials from a Docker `config.json` (`auths.<registry>.auth`).
#[derive(Debug, Clone, Default)]
pub struct DockerCredentials {
    by_registry: HashMap<String, (String, String)>,
}

impl DockerCredentials {
    pub fn load(path: &Path) -> Result<Self, super::RegistryError> {
        let bytes =
            std::fs::read(path).map_err(|source| super::RegistryError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&bytes).map_err(|reason| super::RegistryError::Unsupported(format!("{}: {reason}", path.display())))
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let mut by_registry = HashMap::new();
        let Some(auths) = value.get("auths").and_then(|a| a.as_object()) else {
            return Ok(DockerCredentials { by_registry });
        };
        for (key, entry) in auths {
            let pair = if let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| format!("auths.{key}.auth is not base64: {e}"))?;
                let text = String::from_utf8(decoded).map_err(|_| format!("auths.{key}.auth is not UTF-8"))?;
                let (user, pass) =
                    text.split_once(':').ok_or_else(|| format!("auths.{key}.auth is not user:password"))?;
                (user.to_string(), pass.to_string())
            } else if let (Some(u), Some(p)) =
                (entry.get("username").and_then(|u| u.as_str()), entry.get("password").and_then(|p| p.as_str()))
            {
                (u.to_string(), p.to_string())
            } else {
                continue;
            };
            by_registry.insert(normalise_registry(key), pair);
        }
        Ok(DockerCredentials { by_registry })
    }

    pub(super) fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.by_registry.get(&normalise_registry(registry)) {
            Some((user, pass)) => RegistryAuth::Basic(user.clone(), pass.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// `https://index.docker.io/v1/` and `docker.io` are the same registry.
fn normalise_registry(key: &str) -> String {
    let host = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_credentials() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        let config = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"q.io":{{"username":"u","password":"p"}}}}}}"#
        );
        let creds = DockerCredentials::parse(config.as_bytes()).unwrap();
        assert!(matches!(creds.auth_for("docker.io"), RegistryAuth::Basic(u, p) if u == "alice" && p == "s3cret:x"));
        assert!(matches!(creds.auth_for("q.io"), RegistryAuth::Basic(u, _) if u == "u"));
        assert!(matches!(creds.auth_for("other.io"), RegistryAuth::Anonymous));
        assert!(DockerCredentials::parse(br#"{"auths":{"x":{"auth":"!!"}}}"#).is_err());
    }
}
