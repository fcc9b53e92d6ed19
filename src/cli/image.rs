//! `plinth image list|pull|rm`: the master registry's images (its pull-through cache and
//! what was pushed to it), over Plinth's `/v1/images`. (`plinth image build` is `os.rs`.)
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

use super::master::MasterClient;
use super::render::{output, table, text};
use super::ClientArgs;

#[derive(Debug, Subcommand)]
pub enum ImageRegistryCommand {
    /// List the images the master's registry holds: tag, digest, size, last use, source.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pull an image into the master's cache (agents then pull it from the master).
    Pull {
        #[command(flatten)]
        client: ClientArgs,
        /// As apps name it: `busybox:1.36`, `quay.io/org/app:2`, `name@sha256:...`.
        image: String,
        /// Ask the upstream registry again even when the tag is cached.
        #[arg(long)]
        force_pull: bool,
        /// How long to wait for the pull, in seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// Remove an image's tag (and the blobs only it needs) from the master's registry.
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        image: String,
        /// Remove it even while an app uses it (its next launches pull it again).
        #[arg(long)]
        force: bool,
    },
}

impl ImageRegistryCommand {
    /// `--master` and `--json` given before the command, as for the other client commands.
    pub fn with_globals(mut self, master: Option<String>, json: bool) -> Self {
        match &mut self {
            ImageRegistryCommand::List { client }
            | ImageRegistryCommand::Pull { client, .. }
            | ImageRegistryCommand::Rm { client, .. } => client.apply_globals(master, json),
        }
        self
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ImageRegistryCommand::List { client } => {
                let body = MasterClient::new(&client)?.call(Method::GET, "/v1/images", None).await?;
                output(client.json, &body, image_table)
            }
            ImageRegistryCommand::Pull { client, image, force_pull, timeout } => {
                let master = MasterClient::new(&client)?;
                let request = json!({ "image": image, "forcePull": force_pull });
                let body = master.call_showing_pulls("/v1/images", &request, Duration::from_secs(timeout)).await?;
                output(client.json, &body, pulled)
            }
            ImageRegistryCommand::Rm { client, image, force } => {
                let path = format!("/v1/images/{}{}", image.trim(), if force { "?force=true" } else { "" });
                let body = MasterClient::new(&client)?.call(Method::DELETE, &path, None).await?;
                output(client.json, &body, removed)
            }
        }
    }
}

/// `1536000` → `1.5 MB` (decimal units, as registries show sizes).
fn size_text(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    // why: a display value; precision beyond f64's 52 bits does not matter here.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", &hex[..hex.len().min(12)]),
        None => digest.to_string(),
    }
}

fn image_table(body: &Value) -> String {
    let images = body.get("images").and_then(Value::as_array).cloned().unwrap_or_default();
    if images.is_empty() {
        return "no images in the master's registry (`plinth image pull IMAGE` caches one)\n".to_string();
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|image| {
            vec![
                text(image, "repository"),
                text(image, "tag"),
                short_digest(&text(image, "digest")),
                size_text(image.get("sizeBytes").and_then(Value::as_u64).unwrap_or(0)),
                text(image, "lastUsed"),
                text(image, "source"),
                text(image, "usedBy"),
            ]
        })
        .collect();
    table(&["REPOSITORY", "TAG", "DIGEST", "SIZE", "LAST USED", "SOURCE", "USED BY"], &rows)
}

fn pulled(body: &Value) -> String {
    let image = body.get("image").unwrap_or(&Value::Null);
    let downloaded = body.get("downloadedBytes").and_then(Value::as_u64).unwrap_or(0);
    let name = match text(image, "tag").as_str() {
        "-" => text(image, "repository"),
        tag => format!("{}:{tag}", text(image, "repository")),
    };
    let how =
        if downloaded == 0 { "already cached".to_string() } else { format!("{} downloaded", size_text(downloaded)) };
    let size = size_text(image.get("sizeBytes").and_then(Value::as_u64).unwrap_or(0));
    format!("pulled {name} ({}, {size}; {how})\n", text(image, "digest"))
}

fn removed(body: &Value) -> String {
    let freed = size_text(body.get("freedBytes").and_then(Value::as_u64).unwrap_or(0));
    format!(
        "removed {}:{} ({}); {} blob(s) only it used freed, {freed}\n",
        text(body, "repository"),
        text(body, "tag"),
        text(body, "digest"),
        text(body, "blobsRemoved")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests_read_as_registries_show_them() {
        assert_eq!(size_text(999), "999 B");
        assert_eq!(size_text(1_536_000), "1.5 MB");
        assert_eq!(short_digest("sha256:0123456789abcdef0123"), "sha256:0123456789ab");
        let body = json!({"images": [{"repository": "docker.io/library/busybox", "tag": "1.36",
            "digest": "sha256:0123456789abcdef", "sizeBytes": 2_200_000, "source": "docker.io", "usedBy": ["/web"]}]});
        let out = image_table(&body);
        assert!(out.starts_with("REPOSITORY"), "{out}");
        assert!(
            out.contains("docker.io/library/busybox  1.36") && out.contains("2.2 MB") && out.contains("/web"),
            "{out}"
        );
    }
}
