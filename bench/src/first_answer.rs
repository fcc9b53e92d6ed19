//! The end-to-end measure users feel, for `plinth bench containers`: from the request
//! that starts a service to its first successful HTTP answer. Plinth: `POST /v2/apps` of
//! the greeter (HOST with `$PORT0`, and BRIDGE with a port mapping) → `GET
//! /greet/bench` on its host port answers `Hello bench!`. podman: `podman run -d` of the
//! same image (`--network host`, and `-p HOSTPORT:3000`) → the same answer. The image is
//! cached for both (pulled once before the samples).
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use crate::series::{ms, Series};
use crate::standalone::{free_port, Standalone};

/// How long one start may take before the sample counts as failed.
const START_LIMIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(5);

/// The greeter's answer on `127.0.0.1:port`, if it answers now.
fn greets(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn.write_all(b"GET /greet/bench HTTP/1.0\r\nHost: bench\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains("Hello bench!")
}

/// Waits until the greeter answers on `port`; `Err` past [`START_LIMIT`].
fn until_greeted(port: u16, started: Instant, what: &str) -> anyhow::Result<f64> {
    while !greets(port) {
        if started.elapsed() > START_LIMIT {
            bail!("{what}: no answer on port {port} within {START_LIMIT:?}");
        }
        std::thread::sleep(POLL);
    }
    Ok(ms(started))
}

impl Standalone {
    /// POSTs the greeter as `id` and returns the milliseconds until it answers.
    fn time_to_answer(&self, id: &str, image: &str, bridge: bool) -> anyhow::Result<f64> {
        let app = if bridge {
            json!({"id": id, "cpus": 0.1, "mem": 32,
                "container": {"type": "DOCKER", "docker": {"image": image, "network": "BRIDGE",
                    "portMappings": [{"containerPort": 3000, "hostPort": 0, "protocol": "tcp"}]}}})
        } else {
            json!({"id": id, "cpus": 0.1, "mem": 32, "cmd": "exec nc -ll -p $PORT0 -e /app/greet.sh",
                "portDefinitions": [{"port": 0}],
                "container": {"type": "DOCKER", "docker": {"image": image, "network": "HOST"}}})
        };
        let started = Instant::now();
        let reply = self.http.post(format!("{}/v2/apps", self.api)).json(&app).send()?;
        if reply.status().as_u16() != 201 {
            bail!("POST /v2/apps: {} {}", reply.status(), reply.text().unwrap_or_default());
        }
        let result = (|| loop {
            let tasks: Value = self.http.get(format!("{}/v2/apps/{id}/tasks", self.api)).send()?.json()?;
            let port = tasks["tasks"][0]["ports"][0].as_u64().and_then(|p| u16::try_from(p).ok());
            if let Some(port) = port {
                return until_greeted(port, started, id);
            }
            if started.elapsed() > START_LIMIT {
                bail!("{id}: no task with a port within {START_LIMIT:?}");
            }
            std::thread::sleep(POLL);
        })();
        let _ = self.http.delete(format!("{}/v2/apps/{id}?force=true", self.api)).send();
        result
    }
}

/// Plinth's samples, HOST then BRIDGE, the image pulled once first.
pub fn plinth(standalone: &Standalone, image: &str, runs: usize) -> Vec<Series> {
    let _ = standalone.time_to_answer("/answer-warmup", image, false);
    let series = |name: &str, bridge: bool| {
        let mut samples = Vec::new();
        for i in 0..runs {
            match standalone.time_to_answer(
                &format!("/answer-{}-{i}", if bridge { "bridge" } else { "host" }),
                image,
                bridge,
            ) {
                Ok(sample) => samples.push(sample),
                Err(err) => return Series::failed(name, format!("{err:#}")),
            }
        }
        Series::new(name, samples)
    };
    vec![
        series("plinth: POST -> first answer, HOST, image cached", false),
        series("plinth: POST -> first answer, BRIDGE, image cached", true),
    ]
}

/// podman's samples, `--network host` then `-p`, through `podman` (the caller's runner:
/// storage and config of the bench, `--runtime runc`); the image is cached by then.
pub fn podman(podman: &dyn Fn(&[&str]) -> anyhow::Result<()>, image: &str, runs: usize) -> Vec<Series> {
    let time = |name: &str, bridge: bool| -> anyhow::Result<f64> {
        let port = free_port()?;
        let publish = format!("{port}:3000");
        let mut args = vec!["run", "-d", "--tls-verify=false", "--name", name];
        let command = format!("exec nc -ll -p {port} -e /app/greet.sh");
        if bridge {
            args.extend(["-p", &publish, image]);
        } else {
            args.extend(["--network", "host", image, "/bin/sh", "-c", &command]);
        }
        let started = Instant::now();
        podman(&args)?;
        let result = until_greeted(port, started, name);
        let _ = podman(&["rm", "-f", "-t", "0", name]);
        result
    };
    let series = |label: &str, bridge: bool| {
        let mut samples = Vec::new();
        for i in 0..runs {
            match time(&format!("plinth-bench-answer-{}-{i}", u8::from(bridge)), bridge) {
                Ok(sample) => samples.push(sample),
                Err(err) => return Series::failed(label, format!("{err:#}")),
            }
        }
        Series::new(label, samples)
    };
    vec![
        series("podman run -d --network host -> first answer, image cached", false),
        series("podman run -d -p -> first answer, image cached", true),
    ]
}
