//! kilnd: the API over its Unix socket, every answer checked against
//! docs/api/kilnd.openapi.json; restart policies; `kiln run -d`, `kiln ps`,
//! `kiln logs -f` … starting kilnd on demand; VMs that outlive a kill -9 of
//! kilnd; 200 appliances at once. Real kilnd, monitors and VMs on KVM.

mod common;

use std::collections::BTreeSet;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{kvm_or_skip, ok, stderr, stdout};
use kiln_builder::daemon::http;
use serde_json::{json, Value};

/// A kilnd of one test: its own KILN_HOME, killed (with every VM and
/// monitor it started) on drop.
struct Kilnd {
    home: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl Kilnd {
    fn start(test: &str) -> Self {
        let home = common::scratch(test);
        let socket = home.join("kilnd").join("kilnd.sock");
        let mut kilnd = Self {
            home,
            socket,
            child: None,
        };
        kilnd.restart();
        kilnd
    }

    /// Starts kilnd (again) and waits for its socket.
    fn restart(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_kilnd"))
            .env("KILN_HOME", &self.home)
            .env_remove("KILN_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kilnd starts");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < end,
                "kilnd did not listen on {}",
                self.socket.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// kill -9 of kilnd only.
    fn kill_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String, Vec<u8>) {
        let stream = UnixStream::connect(&self.socket).expect("kilnd answers");
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let response = http::request(stream, method, path, bytes.as_deref()).expect("HTTP");
        let (status, content_type) = (response.status, response.content_type.clone());
        (status, content_type, response.body().expect("a body"))
    }

    /// `kiln` with this kilnd's KILN_HOME (it finds, or starts, kilnd).
    fn kiln(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.env("KILN_HOME", &self.home).env_remove("KILN_HOST");
        cmd
    }

    /// The appliance `name`'s details (status and all).
    fn vm(&self, name: &str) -> Value {
        let (status, _, body) = self.call("GET", &format!("/v1/vms/{name}"), None);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Waits until `name`'s status is `want`; returns its details.
    fn wait_status(&self, name: &str, want: &str) -> Value {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let vm = self.vm(name);
            if vm["status"] == want {
                return vm;
            }
            assert!(Instant::now() < end, "{name} never became {want}: {vm}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self, name: &str) -> String {
        let (status, _, body) = self.call("GET", &format!("/v1/vms/{name}/logs"), None);
        assert_eq!(status, 200);
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Waits until `name`'s log holds `text`.
    fn wait_log(&self, name: &str, text: &str) {
        self.wait_log_count(name, text, 1);
    }

    /// Waits until `name`'s log holds `text` `n` times.
    fn wait_log_count(&self, name: &str, text: &str, n: usize) {
        let end = Instant::now() + Duration::from_secs(60);
        while self.logs(name).matches(text).count() < n {
            assert!(
                Instant::now() < end,
                "{name}'s log never showed {text:?} {n} times: {:?}",
                self.logs(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Kilnd {
    fn drop(&mut self) {
        // A kilnd `kiln` started on demand is not our child: found by the
        // pid it reports.
        if let Ok(stream) = UnixStream::connect(&self.socket) {
            let version = http::request(stream, "GET", "/v1/version", None).and_then(|r| r.body());
            if let Some(pid) = version
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["pid"].as_i64())
            {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        self.kill_daemon();
        // Monitors and VMs: killed by the pids they wrote down.
        let vms = self.home.join("kilnd").join("vms");
        for entry in std::fs::read_dir(vms).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
                continue;
            };
            let state: Value = serde_json::from_str(&text).unwrap_or_default();
            let monitor = state["monitor"][0].as_i64();
            for pid in [monitor, state["pid"].as_i64()].into_iter().flatten() {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// A busybox image for the tests, built once per test.
fn busybox(test: &str) -> PathBuf {
    common::built_image(test, "busybox-sh").1
}

fn create_body(name: &str, image: &Path, script: &str) -> Value {
    json!({"name": name, "image": image, "args": ["sh", "-c", script], "memory_mib": 32})
}

// ---- The OpenAPI document, and a checker for the part of JSON Schema it
// uses (type, properties, required, additionalProperties, items, enum,
// $ref).

fn openapi() -> Value {
    let path = xtask::paths::root().join("docs/api/kilnd.openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the OpenAPI document is JSON")
}

fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => node,
    }
}

fn check_schema(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(doc, schema);
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
    }
    match schema["type"].as_str() {
        Some("object") => {
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: {value} is not an object"));
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                assert!(
                    object.contains_key(name),
                    "{at}: {name} missing from {value}"
                );
            }
            let properties = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (name, v) in object {
                match properties.get(name) {
                    Some(s) => check_schema(doc, s, v, &format!("{at}.{name}")),
                    None => assert!(
                        schema["additionalProperties"] != false,
                        "{at}: {name} is not in the document"
                    ),
                }
            }
        }
        Some("array") => {
            for (i, v) in value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: not an array"))
                .iter()
                .enumerate()
            {
                check_schema(doc, &schema["items"], v, &format!("{at}[{i}]"));
            }
        }
        Some("string") => assert!(value.is_string(), "{at}: {value} is not a string"),
        Some("integer") => assert!(
            value.is_i64() || value.is_u64(),
            "{at}: {value} is not an integer"
        ),
        Some("number") => assert!(value.is_number(), "{at}: {value} is not a number"),
        Some("boolean") => assert!(value.is_boolean(), "{at}: {value} is not a boolean"),
        _ => {}
    }
}

/// Calls the API and checks the answer against the document: the status
/// is one it lists for the path and method, the body matches the
/// response's schema (each line, for a stream of JSON lines). Notes the
/// path and method as exercised.
struct Checked<'a> {
    kilnd: &'a Kilnd,
    doc: Value,
    seen: BTreeSet<(String, String)>,
}

impl Checked<'_> {
    fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, content_type, bytes) = self.kilnd.call(method, path, body);
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        self.seen
            .insert((template.to_string(), method.to_lowercase()));
        let response = op["responses"].get(status.to_string()).unwrap_or_else(|| {
            panic!(
                "{method} {path} answered {status}, which the document does not list: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        let response = resolve(&self.doc, response);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let Some(content) = response["content"].as_object() else {
            assert!(
                bytes.is_empty(),
                "{method} {path} {status}: a body the document does not describe: {text}"
            );
            return (status, Value::Null);
        };
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let schema = &content.get(&media).unwrap_or_else(|| {
            panic!("{method} {path} {status}: Content-Type {content_type} not documented")
        })["schema"];
        let value = match media.as_str() {
            "application/json" => {
                let value: Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
                check_schema(&self.doc, schema, &value, &format!("{method} {path}"));
                value
            }
            "application/x-ndjson" => {
                let lines: Vec<Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                for line in &lines {
                    check_schema(&self.doc, schema, line, &format!("{method} {path}"));
                }
                Value::Array(lines)
            }
            _ => Value::String(text),
        };
        (status, value)
    }
}

#[test]
fn every_endpoint_answers_as_the_openapi_document_says() {
    if !kvm_or_skip("kilnd_api") {
        return;
    }
    let image = busybox("kilnd-api");
    let kilnd = Kilnd::start("kilnd-api-home");
    let mut api = Checked {
        kilnd: &kilnd,
        doc: openapi(),
        seen: BTreeSet::new(),
    };
    let (_, version) = api.call("GET", "/v1/version", "/v1/version", None);
    assert_eq!(version["api"], "v1");
    // The document kilnd serves is the repository's.
    let (status, served) = api.call("GET", "/openapi.json", "/openapi.json", None);
    assert_eq!(status, 200);
    assert_eq!(served, api.doc);
    let (_, metrics) = api.call("GET", "/metrics", "/metrics", None);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("kiln_vms{status=\"running\"} 0"),
        "{metrics}"
    );

    // Bad creates: each refused with the documented status and a message
    // naming the problem; nothing is recorded.
    let bad: [(Value, u16, &str); 8] = [
        (json!({"image": 5}), 400, "request body"),
        (json!({"image": image, "colour": "red"}), 400, "colour"),
        (
            json!({"image": "/nonexistent/x.kiln"}),
            404,
            "/nonexistent/x.kiln",
        ),
        (json!({"image": "images/x.kiln"}), 400, "absolute"),
        (json!({"image": "no-such-image:1"}), 404, "no-such-image"),
        (
            json!({"image": image, "restart": "sometimes"}),
            400,
            "sometimes",
        ),
        (
            json!({"image": image, "publish": ["80:80:80:80"]}),
            400,
            "80:80:80:80",
        ),
        (json!({"image": image, "name": "bad name"}), 400, "bad name"),
    ];
    for (body, want, names) in &bad {
        let (status, error) = api.call("POST", "/v1/vms", "/v1/vms", Some(body));
        assert_eq!(status, *want, "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(names),
            "{body}: {error}"
        );
    }
    // Raw garbage is refused too.
    let stream = UnixStream::connect(&kilnd.socket).unwrap();
    let response = http::request(stream, "POST", "/v1/vms", Some(b"{not json")).unwrap();
    assert_eq!(response.status, 400);
    let (_, list) = api.call("GET", "/v1/vms", "/v1/vms?all=1", None);
    assert_eq!(list, json!([]));

    let body = create_body("web", &image, "echo hello; while true; do sleep 1; done");
    let (status, created) = api.call("POST", "/v1/vms", "/v1/vms", Some(&body));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    let (status, taken) = api.call("POST", "/v1/vms", "/v1/vms", Some(&body));
    assert_eq!(status, 409);
    assert!(taken["message"].as_str().unwrap().contains("web"));

    let (_, list) = api.call("GET", "/v1/vms", "/v1/vms", None);
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["status"], "running");
    let (_, by_prefix) = api.call(
        "GET",
        "/v1/vms/{vm}",
        &format!("/v1/vms/{}", &id[..6]),
        None,
    );
    assert_eq!(by_prefix["name"], "web");
    assert_eq!(by_prefix["config"]["args"][0], "sh");
    let (status, _) = api.call("GET", "/v1/vms/{vm}", "/v1/vms/nope", None);
    assert_eq!(status, 404);

    kilnd.wait_log("web", "hello\n");
    let (_, logs) = api.call("GET", "/v1/vms/{vm}/logs", "/v1/vms/web/logs?tail=1", None);
    assert_eq!(logs, "hello\n");
    let (status, _) = api.call("GET", "/v1/vms/{vm}/logs", "/v1/vms/web/logs?tail=x", None);
    assert_eq!(status, 400);
    let (_, stats) = api.call("GET", "/v1/vms/{vm}/stats", "/v1/vms/web/stats", None);
    assert!(stats["rss_bytes"].as_u64().unwrap() > 1 << 20, "{stats}");
    assert_eq!(stats["pid"], by_prefix["pid"]);

    let (status, _) = api.call(
        "POST",
        "/v1/vms/{vm}/kill",
        "/v1/vms/web/kill?signal=BOGUS",
        None,
    );
    assert_eq!(status, 400);
    let (status, _) = api.call("DELETE", "/v1/vms/{vm}", "/v1/vms/web", None);
    assert_eq!(status, 409);
    let (status, _) = api.call("POST", "/v1/vms/{vm}/stop", "/v1/vms/web/stop?t=x", None);
    assert_eq!(status, 400);
    // Stop: SIGTERM, the VM ends in order (128 + 15).
    let (status, _) = api.call("POST", "/v1/vms/{vm}/stop", "/v1/vms/web/stop?t=20", None);
    assert_eq!(status, 204);
    let stopped = kilnd.vm("web");
    assert_eq!(
        (stopped["status"].clone(), stopped["exit_code"].clone()),
        (json!("exited"), json!(143))
    );
    let (status, _) = api.call("POST", "/v1/vms/{vm}/stop", "/v1/vms/web/stop", None);
    assert_eq!(status, 304);
    let (status, _) = api.call("POST", "/v1/vms/{vm}/kill", "/v1/vms/web/kill", None);
    assert_eq!(status, 409);
    let (status, _) = api.call("GET", "/v1/vms/{vm}/stats", "/v1/vms/web/stats", None);
    assert_eq!(status, 409);
    let (_, running) = api.call("GET", "/v1/vms", "/v1/vms", None);
    assert_eq!(running, json!([]), "ps without all lists running ones only");

    let (status, _) = api.call("POST", "/v1/vms/{vm}/start", "/v1/vms/web/start", None);
    assert_eq!(status, 204);
    assert_eq!(kilnd.vm("web")["status"], "running");
    let (status, _) = api.call("POST", "/v1/vms/{vm}/start", "/v1/vms/web/start", None);
    assert_eq!(status, 304);
    // The log keeps both runs' output (and kiln's note of the SIGTERM).
    kilnd.wait_log("web", "SIGTERM received");
    kilnd.wait_log_count("web", "hello\n", 2);
    let (status, _) = api.call(
        "POST",
        "/v1/vms/{vm}/kill",
        "/v1/vms/web/kill?signal=KILL",
        None,
    );
    assert_eq!(status, 204);
    let killed = kilnd.wait_status("web", "exited");
    assert_eq!(killed["exit_code"], 137);

    let (status, _) = api.call("DELETE", "/v1/vms/{vm}", "/v1/vms/web", None);
    assert_eq!(status, 204);
    let (status, _) = api.call("GET", "/v1/vms/{vm}", "/v1/vms/web", None);
    assert_eq!(status, 404);
    for path in ["/v1/vms/web/start", "/v1/vms/web/stop", "/v1/vms/web/kill"] {
        let template = path.replace("web", "{vm}");
        assert_eq!(api.call("POST", &template, path, None).0, 404, "{path}");
    }
    assert_eq!(
        api.call("GET", "/v1/vms/{vm}/logs", "/v1/vms/web/logs", None)
            .0,
        404
    );
    assert_eq!(
        api.call("GET", "/v1/vms/{vm}/stats", "/v1/vms/web/stats", None)
            .0,
        404
    );
    assert_eq!(
        api.call("DELETE", "/v1/vms/{vm}", "/v1/vms/web", None).0,
        404
    );
    // Values that look like flags stay values.
    let mut envy = create_body("envy", &image, "echo \"$X\"");
    envy["env"] = json!(["X=--timeout=1 -d"]);
    assert_eq!(api.call("POST", "/v1/vms", "/v1/vms", Some(&envy)).0, 201);
    kilnd.wait_status("envy", "exited");
    assert_eq!(kilnd.logs("envy"), "--timeout=1 -d\n");
    assert_eq!(
        api.call("DELETE", "/v1/vms/{vm}", "/v1/vms/envy", None).0,
        204
    );
    // A running appliance goes with force.
    let (_, again) = api.call(
        "POST",
        "/v1/vms",
        "/v1/vms",
        Some(&create_body("gone", &image, "sleep 1000")),
    );
    let (status, _) = api.call(
        "DELETE",
        "/v1/vms/{vm}",
        &format!("/v1/vms/{}?force=1", again["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 204);

    let (_, events) = api.call("GET", "/v1/events", "/v1/events", None);
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "web")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["create", "start", "stop", "die", "start", "kill", "die", "destroy"],
        "{events}"
    );
    let last = events.as_array().unwrap().last().unwrap()["time"]
        .as_f64()
        .unwrap();
    let (_, recent) = api.call(
        "GET",
        "/v1/events",
        &format!("/v1/events?since={last}"),
        None,
    );
    assert_eq!(recent.as_array().unwrap().len(), 1);
    assert_eq!(
        api.call("GET", "/v1/events", "/v1/events?since=yesterday", None)
            .0,
        400
    );

    // Paths and methods that are not the API's.
    let (status, _, body) = kilnd.call("PUT", "/v1/vms", None);
    assert_eq!(status, 405, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = kilnd.call("GET", "/v2/anything", None);
    assert_eq!(status, 404);

    // Every path and method the document lists was exercised.
    let mut documented = BTreeSet::new();
    for (path, item) in api.doc["paths"].as_object().unwrap() {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            documented.insert((path.clone(), method.clone()));
        }
    }
    let missed: Vec<_> = documented.difference(&api.seen).collect();
    assert!(missed.is_empty(), "not exercised: {missed:?}");
}

#[test]
fn restart_policies_follow_logs_and_the_cli_start_kilnd_on_demand() {
    if !kvm_or_skip("kilnd_cli") {
        return;
    }
    let image = busybox("kilnd-cli");
    let home = common::scratch("kilnd-cli-home");
    let kiln = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_HOME", &home)
            .env_remove("KILN_HOST")
            .args(args)
            .output()
            .unwrap()
    };
    let image = image.to_str().unwrap();
    // No kilnd runs: `kiln run -d` starts one.
    let out = ok(
        kiln(&[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=2",
            "--memory",
            "32",
            image,
            "--",
            "sh",
            "-c",
            "echo attempt; exit 3",
        ]),
        "kiln run -d",
    );
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 64, "{}", stdout(&out));
    let guard = Kilnd {
        home: home.clone(),
        socket: home.join("kilnd").join("kilnd.sock"),
        child: None,
    };
    // `kiln logs -f` follows through the restarts until the policy gives
    // up: three attempts.
    let out = ok(kiln(&["logs", "-f", "flaky"]), "kiln logs -f");
    assert_eq!(stdout(&out), "attempt\n".repeat(3));
    let vm = guard.vm("flaky");
    assert_eq!(
        vm["config"]["log_opts"],
        json!(["max-size=1m", "max-file=2"])
    );
    assert_eq!(
        (
            vm["status"].clone(),
            vm["exit_code"].clone(),
            vm["restarts"].clone()
        ),
        (json!("exited"), json!(3), json!(2))
    );

    // always: restarted after it ends by itself, never after `kiln stop`.
    ok(
        kiln(&[
            "run",
            "-d",
            "--name",
            "steady",
            "--restart",
            "always",
            "--memory",
            "32",
            image,
            "--",
            "sh",
            "-c",
            "echo run; sleep 0.2",
        ]),
        "kiln run -d --restart always",
    );
    let end = Instant::now() + Duration::from_secs(60);
    while guard.vm("steady")["restarts"].as_u64().unwrap() < 2 {
        assert!(Instant::now() < end, "steady was not restarted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = ok(kiln(&["stop", "steady"]), "kiln stop");
    assert_eq!(stdout(&out), "steady\n");
    let restarts = guard.wait_status("steady", "exited")["restarts"].clone();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        guard.vm("steady")["restarts"],
        restarts,
        "restarted after kiln stop"
    );

    let out = ok(kiln(&["ps", "-a"]), "kiln ps -a");
    let text = stdout(&out);
    assert!(
        text.contains("flaky") && text.contains("exited (3)") && text.contains(&id[..12]),
        "{text}"
    );
    let out = ok(kiln(&["ps"]), "kiln ps");
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "only the header: {}",
        stdout(&out)
    );
    // Errors name the appliance; a failing one makes the status 1.
    let out = kiln(&["rm", "flaky", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "flaky\n");
    assert!(
        stderr(&out).contains("no such appliance: nope"),
        "{}",
        stderr(&out)
    );
    let out = kiln(&["run", "-d", "--name", "steady", image]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("the name steady is taken"),
        "{}",
        stderr(&out)
    );
    let out = kiln(&["run", "-d", "--timeout", "5", image]);
    assert!(
        stderr(&out).contains("--timeout does not go with -d"),
        "{}",
        stderr(&out)
    );
    // kiln inspect finds appliances (and still images).
    let out = ok(kiln(&["inspect", "steady"]), "kiln inspect VM");
    let details: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (
            details["name"].clone(),
            details["config"]["restart"].clone()
        ),
        (json!("steady"), json!("always"))
    );
    let out = ok(kiln(&["inspect", "--json", image]), "kiln inspect IMAGE");
    assert!(stdout(&out).contains("sha256:"), "{}", stdout(&out));
    let out = kiln(&["inspect", "--type", "vm", "nope"]);
    assert!(
        stderr(&out).contains("no such appliance: nope"),
        "{}",
        stderr(&out)
    );
    ok(kiln(&["rm", "steady"]), "kiln rm");
    // An image of the local store, by name (kilnd resolves it in the
    // same KILN_HOME).
    ok(kiln(&["import", image]), "kiln import");
    ok(
        kiln(&[
            "run",
            "-d",
            "--name",
            "stored",
            "--memory",
            "32",
            "busybox-sh:1.0.0",
            "--",
            "sh",
            "-c",
            "echo from the store",
        ]),
        "kiln run -d NAME",
    );
    let out = ok(kiln(&["logs", "-f", "stored"]), "kiln logs -f stored");
    assert_eq!(stdout(&out), "from the store\n");
    ok(kiln(&["rm", "stored"]), "kiln rm stored");
    let out = ok(kiln(&["events", "--no-follow"]), "kiln events");
    let text = stdout(&out);
    let of = |name: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} (exit")))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .collect()
    };
    assert_eq!(
        of("flaky"),
        [
            "create", "start", "die", "restart", "start", "die", "restart", "start", "die",
            "destroy"
        ],
        "{text}"
    );
    assert!(of("steady").contains(&"stop".to_string()), "{text}");
    assert_eq!(stdout(&ok(kiln(&["ps", "-a", "-q"]), "ps -q")), "");
    // The kilnd the first command started still serves; the guard kills it.
    assert_eq!(guard.call("GET", "/v1/version", None).0, 200);
}

#[test]
fn appliances_outlive_a_kill_9_of_kilnd_and_a_new_kilnd_controls_them() {
    if !kvm_or_skip("kilnd_restart") {
        return;
    }
    let image = busybox("kilnd-restart");
    let mut kilnd = Kilnd::start("kilnd-restart-home");
    let body = create_body(
        "db",
        &image,
        "i=0; while true; do i=$((i+1)); echo beat $i; sleep 0.2; done",
    );
    assert_eq!(kilnd.call("POST", "/v1/vms", Some(&body)).0, 201);
    kilnd.wait_log("db", "beat 2\n");
    let pid = kilnd.vm("db")["pid"].clone();
    kilnd.kill_daemon();
    // The VM goes on without kilnd.
    let before = kilnd.logs_on_disk("db");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        kilnd.logs_on_disk("db").len() > before.len(),
        "the VM stopped with kilnd"
    );
    kilnd.restart();
    let vm = kilnd.vm("db");
    assert_eq!(
        (vm["status"].clone(), vm["pid"].clone()),
        (json!("running"), pid)
    );
    let out = ok(
        kilnd
            .kiln()
            .args(["stop", "-t", "20", "db"])
            .output()
            .unwrap(),
        "kiln stop",
    );
    assert_eq!(stdout(&out), "db\n");
    assert_eq!(kilnd.vm("db")["exit_code"], 143);
    // A monitor killed with its VM running leaves it dead, not running.
    assert_eq!(kilnd.call("POST", "/v1/vms/db/start", None).0, 204);
    let mut always = create_body("web", &image, "echo serving; sleep 1000");
    always["restart"] = json!("always");
    assert_eq!(kilnd.call("POST", "/v1/vms", Some(&always)).0, 201);
    kilnd.wait_log("web", "serving\n");
    for name in ["db", "web"] {
        let monitor = kilnd.state_of(name)["monitor"][0].as_i64().unwrap();
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(monitor as i32, libc::SIGKILL) };
        kilnd.wait_status(name, "dead");
    }
    // As after a reboot: a new kilnd starts again what its policy keeps
    // running (web: always) and leaves the rest (db: no).
    kilnd.kill_daemon();
    kilnd.restart();
    // (Revived in the background: the API answers meanwhile.)
    kilnd.wait_status("web", "running");
    assert_eq!(kilnd.vm("db")["status"], "dead");
    kilnd.wait_log_count("web", "serving\n", 2);
}

impl Kilnd {
    fn dir_of(&self, name: &str) -> PathBuf {
        let id = self.vm(name)["id"].as_str().unwrap().to_string();
        self.home.join("kilnd").join("vms").join(id)
    }

    /// The log read from disk (kilnd may be down).
    fn logs_on_disk(&self, name: &str) -> String {
        let dir = std::fs::read_dir(self.home.join("kilnd").join("vms"))
            .unwrap()
            .flatten()
            .find(|e| {
                std::fs::read_to_string(e.path().join("config.json"))
                    .is_ok_and(|c| c.contains(&format!("\"name\": \"{name}\"")))
            })
            .expect("the appliance's directory")
            .path();
        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
    }

    fn state_of(&self, name: &str) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.dir_of(name).join("state.json")).unwrap(),
        )
        .unwrap()
    }
}

#[test]
fn two_hundred_appliances_are_created_listed_and_stopped_through_the_api() {
    if !kvm_or_skip("kilnd_200") {
        return;
    }
    const COUNT: usize = 200;
    let image = busybox("kilnd-200");
    let kilnd = Kilnd::start("kilnd-200-home");
    for i in 0..COUNT {
        let body = create_body(&format!("vm{i}"), &image, "echo up; sleep 1000");
        let (status, _, answer) = kilnd.call("POST", "/v1/vms", Some(&body));
        assert_eq!(status, 201, "vm{i}: {}", String::from_utf8_lossy(&answer));
    }
    let (_, _, list) = kilnd.call("GET", "/v1/vms", None);
    let list: Vec<Value> = serde_json::from_slice(&list).unwrap();
    assert_eq!(list.len(), COUNT);
    let names: BTreeSet<&str> = list.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), COUNT);
    assert!(
        list.iter().all(|v| v["status"] == "running"),
        "not all running"
    );
    // Each one booted its program.
    for i in 0..COUNT {
        kilnd.wait_log(&format!("vm{i}"), "up\n");
    }
    for i in 0..COUNT {
        let (status, _, _) = kilnd.call("POST", &format!("/v1/vms/vm{i}/stop?t=30"), None);
        assert_eq!(status, 204, "vm{i}");
    }
    let (_, _, list) = kilnd.call("GET", "/v1/vms?all=1", None);
    let list: Vec<Value> = serde_json::from_slice(&list).unwrap();
    assert_eq!(list.len(), COUNT);
    for vm in &list {
        assert_eq!(
            (vm["status"].clone(), vm["exit_code"].clone()),
            (json!("exited"), json!(143)),
            "{vm}"
        );
    }
}

#[test]
fn metrics_count_appliances_restarts_boots_and_memory_in_prometheus_format() {
    if !kvm_or_skip("kilnd_metrics") {
        return;
    }
    use std::io::{BufRead, BufReader, Read, Write};
    let image = busybox("kilnd-metrics");
    // Port 0: kilnd picks a free port and names it on its standard error.
    let mut kilnd = Kilnd::start("kilnd-metrics-home");
    kilnd.kill_daemon();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kilnd"))
        .args(["--metrics", "127.0.0.1:0"])
        .env("KILN_HOME", &kilnd.home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = lines
        .find_map(|l| {
            l.ok()?
                .split_once("metrics on http://")
                .map(|(_, rest)| rest.trim_end_matches("/metrics").to_string())
        })
        .expect("kilnd names its metrics address");
    kilnd.child = Some(child);
    while UnixStream::connect(&kilnd.socket).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let scrape = |path: &str| {
        let mut s = std::net::TcpStream::connect(&address).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let mut flaky = create_body("flaky", &image, "echo try; exit 3");
    flaky["restart"] = json!("on-failure:1");
    assert_eq!(kilnd.call("POST", "/v1/vms", Some(&flaky)).0, 201);
    assert_eq!(
        kilnd
            .call(
                "POST",
                "/v1/vms",
                Some(&create_body("up", &image, "echo up; sleep 1000"))
            )
            .0,
        201
    );
    kilnd.wait_log("up", "up\n");
    let flaky_vm = kilnd.wait_status("flaky", "exited");
    assert_eq!(flaky_vm["restarts"], 1);
    let text = scrape("/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("Content-Type: text/plain; version=0.0.4"),
        "{text}"
    );
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    };
    assert_eq!(value("kiln_vms{status=\"running\"}"), 1.0);
    assert_eq!(value("kiln_vms{status=\"exited\"}"), 1.0);
    let flaky_id = &flaky_vm["id"].as_str().unwrap()[..12];
    assert_eq!(
        value(&format!(
            "kiln_vm_restarts_total{{id=\"{flaky_id}\",name=\"flaky\"}}"
        )),
        1.0
    );
    let up = kilnd.vm("up");
    let up_labels = format!(
        "{{id=\"{}\",name=\"up\"}}",
        &up["id"].as_str().unwrap()[..12]
    );
    assert!(value(&format!("kiln_vm_memory_rss_bytes{up_labels}")) > 1e6);
    assert!(value(&format!("kiln_vm_cpu_seconds_total{up_labels}")) >= 0.0);
    // KVM exits: the ended run's final count is written as its VM stops;
    // a running one's is rewritten every second.
    assert!(
        value(&format!(
            "kiln_vm_exits_total{{id=\"{flaky_id}\",name=\"flaky\"}}"
        )) > 0.0
    );
    let up_exits = format!("kiln_vm_exits_total{up_labels} ");
    common::wait_for("the running VM's exit count", || {
        let text = scrape("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&up_exits)?.parse::<f64>().ok())
            .is_some_and(|n| n > 0.0)
    });
    // Three boots (flaky twice, up once), each well under a minute.
    assert_eq!(value("kiln_vm_boot_seconds_count"), 3.0);
    assert_eq!(value("kiln_vm_boot_seconds_bucket{le=\"+Inf\"}"), 3.0);
    assert!(value("kiln_vm_boot_seconds_sum") > 0.0);
    assert!(value("kilnd_memory_rss_bytes") > 1e5);
    // The API socket serves the same series; the port serves nothing else.
    let (status, _, body) = kilnd.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("kiln_vm_boot_seconds_count 3"));
    assert!(scrape("/v1/vms").starts_with("HTTP/1.1 404"));
}

/// Whether `text` is lines `line N` with N counting up by one, ending at
/// `last`.
fn counts_up_to(text: &str, last: u32) -> bool {
    let numbers: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("line ")?.split(' ').next()?.parse().ok())
        .collect();
    numbers.len() == text.lines().count()
        && numbers.last() == Some(&last)
        && numbers.windows(2).all(|w| w[1] == w[0] + 1)
}

#[test]
fn logs_rotate_at_their_limit_and_are_read_across_files() {
    if !kvm_or_skip("kilnd_log_rotation") {
        return;
    }
    let image = busybox("kilnd-logrot");
    let kilnd = Kilnd::start("kilnd-logrot-home");
    // 300 lines of ~60 bytes, in bursts, into a log of at most two 4 KiB
    // files.
    let script = "i=0; while [ $i -lt 300 ]; do \
                  echo \"line $i ..................................................\"; \
                  i=$((i+1)); [ $((i % 50)) = 0 ] && sleep 0.2; done; true";
    let mut body = create_body("chatty", &image, script);
    body["log_opts"] = json!(["max-size=4k", "max-file=2"]);
    let (status, _, answer) = kilnd.call("POST", "/v1/vms", Some(&body));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
    // Following from the start reads on through every rotation: the lines
    // it gets count up without a gap to the last one.
    let (status, _, followed) = kilnd.call("GET", "/v1/vms/chatty/logs?follow=1", None);
    assert_eq!(status, 200);
    let followed = String::from_utf8_lossy(&followed).into_owned();
    assert!(counts_up_to(&followed, 299), "{followed}");
    kilnd.wait_status("chatty", "exited");

    // On disk: the current file and one rotated, each within the limit.
    let vm = kilnd.vm("chatty");
    let log = PathBuf::from(vm["log_path"].as_str().unwrap());
    let dir = log.parent().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("log"))
        .collect();
    names.sort();
    assert_eq!(names, ["log", "log.1"]);
    for name in &names {
        assert!(std::fs::metadata(dir.join(name)).unwrap().len() <= 4096);
    }
    // Reading gives the rotated file, then the current one; a tail may
    // start in the rotated file.
    let all = kilnd.logs("chatty");
    assert!(counts_up_to(&all, 299), "{all}");
    assert!(all.len() > 4096, "both files are read: {} bytes", all.len());
    let current_lines = std::fs::read_to_string(&log).unwrap().lines().count();
    let (status, _, tail) = kilnd.call(
        "GET",
        &format!("/v1/vms/chatty/logs?tail={}", current_lines + 2),
        None,
    );
    assert_eq!(status, 200);
    let tail = String::from_utf8_lossy(&tail).into_owned();
    assert_eq!(tail.lines().count(), current_lines + 2);
    assert!(counts_up_to(&tail, 299), "{tail}");

    // A limit kiln does not know is refused, naming it.
    body["name"] = json!("refused");
    body["log_opts"] = json!(["max-size=1k"]);
    let (status, _, answer) = kilnd.call("POST", "/v1/vms", Some(&body));
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&answer).contains("max-size=1k"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
