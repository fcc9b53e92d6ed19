//! `plinth image list|pull|rm` against a real master: Debian's `docker-registry` on the
//! master's loopback plays the upstream (`127.0.0.1:5000`, plain HTTP), the master pulls
//! through its own registry (on its address, `:5000`), and the CLI manages the cache.

use crate::common::*;
use plinth_testkit::{busybox_hello, Registry};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

const UPSTREAM: &str = "127.0.0.1:5000";
const HELLO: &str = "127.0.0.1:5000/demo/hello:latest";
/// How the master's registry names the mirrored repository.
const MIRRORED: &str = "127.0.0.1:5000/demo/hello";

/// A master (no agent: nothing here runs a task) with `demo/hello` pushed upstream.
fn master_with_upstream(test: &str) -> (Cluster, Registry) {
    let mut cluster = Cluster::new(test);
    let gateway = cluster.gateway().octets();
    let master_ip = Ipv4Addr::new(gateway[0], gateway[1], gateway[2], gateway[3] + 1);
    let registry_listen = format!("{master_ip}:5000");
    cluster.start_master(&["--registry-listen", &registry_listen, "--insecure-registry", UPSTREAM]);
    let upstream = Registry::start(Some(&cluster.node("master").host.netns), UPSTREAM).expect("docker-registry");
    upstream.push("demo/hello", "latest", &busybox_hello().expect("test image")).expect("push demo/hello");
    (cluster, upstream)
}

fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.cli(args);
    assert!(out.status.success(), "plinth {}: {}{}", args.join(" "), stdout(&out), stderr(&out));
    stdout(&out)
}

fn fails(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.cli(args);
    assert!(!out.status.success(), "plinth {} should fail: {}", args.join(" "), stdout(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    stderr(&out)
}

#[test]
fn images_are_pulled_listed_and_removed_unless_an_app_uses_them() {
    let (cluster, _upstream) = master_with_upstream("cli-images");
    assert!(ok(&cluster, &["image", "list"]).contains("no images"), "an empty cache says so");

    let pulled = ok(&cluster, &["image", "pull", HELLO]);
    assert!(pulled.starts_with(&format!("pulled {MIRRORED}:latest (sha256:")), "{pulled}");
    assert!(pulled.contains("downloaded"), "the first pull crosses the uplink: {pulled}");
    let again = ok(&cluster, &["image", "pull", HELLO]);
    assert!(again.contains("already cached"), "{again}");

    let listed = ok(&cluster, &["image", "list"]);
    let row = listed.lines().find(|l| l.starts_with(MIRRORED)).unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains(" latest ") && row.contains("sha256:") && row.contains(UPSTREAM), "{row}");
    let json_out = ok(&cluster, &["--json", "image", "list"]);
    let listed: Value = serde_json::from_str(&json_out).expect("JSON");
    let image = &listed["images"][0];
    assert_eq!(image["repository"], MIRRORED, "{listed}");
    assert!(image["sizeBytes"].as_u64().is_some_and(|s| s > 100_000), "busybox is in it: {listed}");
    assert!(image["lastUsed"].is_string() && image["pulledAt"].is_string(), "{listed}");

    // An app that wants tasks of the image holds it (no agent: it waits, but it wants them).
    let app = json!({"id": "/hello", "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": HELLO}}});
    cluster.api().post("/v2/apps", &app).expect_status(201);
    let listed: Value = serde_json::from_str(&ok(&cluster, &["--json", "image", "list"])).expect("JSON");
    assert_eq!(listed["images"][0]["usedBy"], json!(["/hello"]), "{listed}");
    let refused = fails(&cluster, &["image", "rm", HELLO]);
    assert!(refused.contains("409") && refused.contains("/hello") && refused.contains("force"), "{refused}");
    assert!(ok(&cluster, &["image", "list"]).contains(MIRRORED), "a refused rm removes nothing");

    let removed = ok(&cluster, &["image", "rm", "--force", HELLO]);
    assert!(removed.starts_with(&format!("removed {MIRRORED}:latest")) && removed.contains("blob(s)"), "{removed}");
    assert!(ok(&cluster, &["image", "list"]).contains("no images"));
    let gone = fails(&cluster, &["image", "rm", HELLO]);
    assert!(gone.contains("404") && gone.contains("no image"), "{gone}");
}

#[test]
fn bad_image_commands_get_readable_errors() {
    let (cluster, _upstream) = master_with_upstream("cli-images-bad");
    let bad = fails(&cluster, &["image", "pull", "Not An Image"]);
    assert!(bad.contains("422") && bad.contains("/image"), "{bad}");
    let missing = fails(&cluster, &["image", "pull", "127.0.0.1:5000/demo/missing:1"]);
    assert!(missing.contains("404") && missing.contains("demo/missing"), "{missing}");
    let pushed = fails(&cluster, &["image", "pull", &format!("{}:5000/demo/app:1", cluster.master_ip())]);
    assert!(pushed.contains("names this registry"), "{pushed}");
    let digest_only = fails(&cluster, &["image", "rm", &format!("busybox@sha256:{}", "0".repeat(64))]);
    assert!(digest_only.contains("400") && digest_only.contains("tag"), "{digest_only}");
    // Pulls and removals change the registry: read-only callers cannot (see cluster_auth for
    // credentials); with none configured anyone may, as for the rest of the API.
    assert!(ok(&cluster, &["image", "list"]).contains("no images"), "nothing was stored");
}
