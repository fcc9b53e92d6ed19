//! Machine profiles (Matchbox/Pixiecore style): what a machine with a given MAC boots as,
//! and the iPXE script that boots it.
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// The role a provisioned machine starts (`plinth.role=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Agent,
    Master,
    Standalone,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Master => "master",
            Role::Standalone => "standalone",
        }
    }
}

/// What one MAC boots as. `PUT /v1/machines/{mac}` body; unknown keys are refused so a
/// typo does not silently boot a machine with the wrong settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineProfile {
    #[serde(default)]
    pub role: Role,
    /// `plinth.hostname=`; default `node-<mac without colons>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Agent attributes for constraints, `rack:r2;zone:a` (`plinth.attributes=`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attributes: String,
    /// More kernel command line words, appended last.
    #[serde(default, skip_serializing_if = "String::is_empty", alias = "extra_cmdline")]
    pub extra_cmdline: String,
}

/// What happens to machines without a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultProfile {
    /// Boot them as agents with default settings.
    #[default]
    Agent,
    /// Do not answer them at all (another boot server or none may own them).
    Ignore,
}

impl std::str::FromStr for DefaultProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "agent" => Ok(DefaultProfile::Agent),
            "ignore" => Ok(DefaultProfile::Ignore),
            other => Err(format!("{other:?} is not a default profile; use agent or ignore")),
        }
    }
}

/// A profile field that cannot be used, with the field's JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ProfileError {
    pub path: &'static str,
    pub message: String,
}

const MAX_CMDLINE: usize = 1024;

impl MachineProfile {
    /// Every problem with the profile (empty when it is usable).
    pub fn validate(&self) -> Vec<ProfileError> {
        let mut errors = Vec::new();
        if let Some(h) = &self.hostname {
            if !plinth_protocol::is_valid_hostname(h) {
                errors.push(ProfileError {
                    path: "/hostname",
                    message: format!(
                        "{h:?} is not a valid hostname (letters, digits, '-', '.', at most 63 characters per label)"
                    ),
                });
            }
        }
        if !self.attributes.is_empty() {
            for pair in self.attributes.split(';') {
                let ok = pair.split_once(':').is_some_and(|(k, v)| attr_word(k) && attr_word(v));
                if !ok {
                    errors.push(ProfileError {
                        path: "/attributes",
                        message: format!(
                            "{pair:?} is not key:value (letters, digits, '_', '-', '.'); write e.g. rack:r2;zone:a"
                        ),
                    });
                    break;
                }
            }
        }
        if self.extra_cmdline.len() > MAX_CMDLINE {
            errors.push(ProfileError { path: "/extraCmdline", message: format!("longer than {MAX_CMDLINE} bytes") });
        } else if self.extra_cmdline.chars().any(|c| c.is_control() || !c.is_ascii() || c == '"' || c == '\\') {
            errors.push(ProfileError {
                path: "/extraCmdline",
                message: "only printable ASCII without quotes or backslashes (one kernel command line)".into(),
            });
        } else if self.extra_cmdline.split_whitespace().any(|w| w.starts_with("plinth.token=")) {
            errors.push(ProfileError {
                path: "/extraCmdline",
                message: "plinth.token comes from the master (a single-use bootstrap token per boot)".into(),
            });
        }
        errors
    }

    /// The hostname the machine gets.
    pub fn hostname_for(&self, mac: MacAddr) -> String {
        self.hostname.clone().unwrap_or_else(|| default_hostname(mac))
    }
}

/// `node-525400123456` for a machine without a configured hostname.
pub fn default_hostname(mac: MacAddr) -> String {
    format!("node-{}", mac.to_string().replace(':', ""))
}

fn attr_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// What every boot script needs from the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// The master's API as machines reach it, `http://10.0.0.2:8080`.
    pub master_url: String,
    /// The token the machine boots with (the master's single-use bootstrap token for
    /// it), when the cluster has a join token.
    pub token: Option<String>,
    /// Kernel arguments every machine gets first (console etc.).
    pub base_cmdline: String,
    /// The masters a booted agent is given (`plinth.master=`, comma-separated) when they
    /// are more than this one: HA masters list them all, so the agent follows the leader.
    pub agent_masters: Option<String>,
}

impl BootParams {
    pub fn new(master_url: impl Into<String>, token: Option<String>) -> Self {
        BootParams {
            master_url: master_url.into().trim_end_matches('/').to_string(),
            token,
            base_cmdline: "console=tty0 console=ttyS0,115200 panic=10".into(),
            agent_masters: None,
        }
    }
}

/// The kernel command line for a machine: base, role, master, token, hostname,
/// attributes, then the profile's extra words (last, so they can override).
pub fn kernel_cmdline(mac: MacAddr, profile: &MachineProfile, params: &BootParams) -> String {
    let mut words = vec![
        "initrd=initramfs.img".to_string(),
        params.base_cmdline.clone(),
        format!("plinth.role={}", profile.role.as_str()),
    ];
    if profile.role != Role::Master {
        words.push(format!("plinth.master={}", params.agent_masters.as_deref().unwrap_or(&params.master_url)));
    }
    if let Some(token) = &params.token {
        words.push(format!("plinth.token={token}"));
    }
    words.push(format!("plinth.hostname={}", profile.hostname_for(mac)));
    if !profile.attributes.is_empty() {
        words.push(format!("plinth.attributes={}", profile.attributes));
    }
    if !profile.extra_cmdline.trim().is_empty() {
        words.push(profile.extra_cmdline.trim().to_string());
    }
    words.retain(|w| !w.is_empty());
    words.join(" ")
}

/// The `#!ipxe` script that boots `mac` with `profile` from the master over HTTP.
pub fn ipxe_script(mac: MacAddr, profile: &MachineProfile, params: &BootParams) -> String {
    let base = &params.master_url;
    format!(
        "#!ipxe\n# plinth: machine {mac} boots as {role}\nkernel {base}/boot/vmlinuz {cmdline}\ninitrd {base}/boot/initramfs.img\nboot\n",
        role = profile.role.as_str(),
        cmdline = kernel_cmdline(mac, profile, params),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> MacAddr {
        "52:54:00:00:00:07".parse().expect("valid")
    }

    #[test]
    fn script_carries_role_master_token_hostname_attributes_and_extra_last() {
        let profile = MachineProfile {
            role: Role::Agent,
            hostname: Some("rack2-a".into()),
            attributes: "rack:r2;zone:a".into(),
            extra_cmdline: "plinth.resources=cpus:1;mem:512".into(),
        };
        let params = BootParams::new("http://10.0.0.2:8080/", Some("s3cret".into()));
        let script = ipxe_script(mac(), &profile, &params);
        assert!(script.starts_with("#!ipxe\n"), "{script}");
        let kernel = script.lines().find(|l| l.starts_with("kernel ")).expect("kernel line");
        assert!(kernel.starts_with("kernel http://10.0.0.2:8080/boot/vmlinuz initrd=initramfs.img "), "{kernel}");
        for word in [
            "plinth.role=agent",
            "plinth.master=http://10.0.0.2:8080",
            "plinth.token=s3cret",
            "plinth.hostname=rack2-a",
            "plinth.attributes=rack:r2;zone:a",
        ] {
            assert!(kernel.split(' ').any(|w| w == word), "{word} missing in {kernel}");
        }
        assert!(kernel.ends_with("plinth.resources=cpus:1;mem:512"), "{kernel}");
        assert!(script.contains("\ninitrd http://10.0.0.2:8080/boot/initramfs.img\nboot\n"), "{script}");
    }

    #[test]
    fn agents_of_ha_masters_are_given_every_master_and_fetch_files_from_this_one() {
        let params = BootParams {
            agent_masters: Some("http://10.0.0.2:8080,http://10.0.0.3:8080".into()),
            ..BootParams::new("http://10.0.0.2:8080", None)
        };
        let script = ipxe_script(mac(), &MachineProfile::default(), &params);
        assert!(script.contains(" plinth.master=http://10.0.0.2:8080,http://10.0.0.3:8080 "), "{script}");
        assert!(script.contains("kernel http://10.0.0.2:8080/boot/vmlinuz "), "{script}");
        let master = MachineProfile { role: Role::Master, ..MachineProfile::default() };
        assert!(!ipxe_script(mac(), &master, &params).contains("plinth.master="), "a master needs none");
    }

    #[test]
    fn defaults_hostname_from_mac_and_omits_missing_token() {
        let script = ipxe_script(mac(), &MachineProfile::default(), &BootParams::new("http://m:8080", None));
        assert!(script.contains("plinth.hostname=node-525400000007"), "{script}");
        assert!(!script.contains("plinth.token"), "{script}");
    }

    #[test]
    fn validation_names_each_bad_field() {
        let bad = MachineProfile {
            role: Role::Agent,
            hostname: Some("-bad_host".into()),
            attributes: "rack r2".into(),
            extra_cmdline: "quiet\nshell".into(),
        };
        let paths: Vec<_> = bad.validate().iter().map(|e| e.path).collect();
        assert_eq!(paths, ["/hostname", "/attributes", "/extraCmdline"]);
        let token = MachineProfile { extra_cmdline: "plinth.token=x".into(), ..Default::default() };
        assert_eq!(token.validate().len(), 1);
        assert!(MachineProfile::default().validate().is_empty());
    }

    #[test]
    fn unknown_profile_keys_are_refused() {
        let err = serde_json::from_str::<MachineProfile>(r#"{"role":"agent","hostnam":"x"}"#);
        assert!(err.is_err());
        let ok: MachineProfile = serde_json::from_str(r#"{"role":"agent","extraCmdline":"quiet"}"#).expect("valid");
        assert_eq!(ok.extra_cmdline, "quiet");
    }
}
