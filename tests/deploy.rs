//! What ships under `deploy/` and `scripts/`, checked the way an operator would use it:
//!
//! - the README's first command builds on a machine with only Rust: every native tool that
//!   linkgate's build graph (`cargo metadata`) asks for is installed by `scripts/build-deps`,
//!   which `scripts/demo`, `scripts/test` and the Dockerfile run;
//! - every `config.toml` under `deploy/` (and the one in the Kubernetes ConfigMap, and the
//!   one the Helm chart renders for each Redis mode, TLS and account source) passes
//!   `linkgate check`, and every `${VAR}` it uses is provided by its deployment;
//! - every YAML file parses, the Kubernetes objects fit together (ConfigMap, Secret, probes on
//!   the admin port, writable volumes where linkgate writes, Redis with AOF and no
//!   eviction, PodDisruptionBudget, NetworkPolicy over the admin port);
//! - the systemd unit passes `systemd-analyze verify` and its reload script hands the sockets
//!   of a real linkgate over to a new process;
//! - the Dockerfile is pinned, non-root, and its HEALTHCHECK command answers for a real
//!   linkgate (and fails when nothing listens).
//!
//! `every_file_under_deploy_is_exercised` fails when a file is added to `deploy/` without a
//! check here.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value as Json;

mod support;

use support::{free_port, http_get_status, linkgate_bin, GateBuilder, Upstream, COOKIE_SECRET};

// === helpers ===

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every file under `dir` (relative to the repository), sorted.
fn files_under(dir: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under the repository");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo(), &repo().join(dir), &mut out);
    out.sort();
    out
}

/// Every YAML document of a text, as JSON values (so they can be indexed with `[]`).
fn yaml_docs(what: &str, text: &str) -> Vec<Json> {
    use serde::Deserialize as _;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{what}: not valid YAML: {e}\n{text}"));
        if value.is_null() {
            continue;
        }
        docs.push(serde_json::to_value(value).unwrap_or_else(|e| panic!("{what}: {e}")));
    }
    docs
}

/// The Kubernetes object of `kind` named `name` among `docs`.
fn object<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn kinds(docs: &[Json]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `${NAME}` references in a config text (`$${` is a literal and not one).
fn env_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes[i + 1] == b'$' {
            i += 2;
            continue;
        }
        if bytes[i] == b'$' && bytes[i + 1] == b'{' {
            if let Some(end) = text[i + 2..].find('}') {
                out.insert(text[i + 2..i + 2 + end].to_string());
                i += 2 + end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// A placeholder value a variable could hold in production: a real cookie secret, a URL
/// that resolves here, or a word.
fn placeholder(name: &str) -> String {
    if name.contains("COOKIE_SECRET") {
        COOKIE_SECRET.to_string()
    } else if name.ends_with("UPSTREAM_URL") {
        "http://127.0.0.1:8080".to_string()
    } else if name.ends_with("_URL") {
        "https://shop.example.com".to_string()
    } else {
        format!("placeholder-{}", name.to_lowercase())
    }
}

/// Writes `text` as `dir/config.toml`, runs `linkgate check` with placeholder values for its
/// variables, and asserts it passes without a warning. `CREDENTIALS_DIRECTORY` (systemd) is
/// a directory holding a placeholder file for each credential the config names.
fn check_config(what: &str, text: &str, dir: &Path) {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    let mut cmd = Command::new(linkgate_bin());
    cmd.arg("check")
        .arg("-c")
        .arg(&path)
        .env_remove("LINKGATE_CONFIG");
    for name in env_refs(text) {
        if name == "CREDENTIALS_DIRECTORY" {
            let creds = dir.join("credentials");
            std::fs::create_dir_all(&creds).expect("credentials dir");
            let marker = "${CREDENTIALS_DIRECTORY}/";
            for (i, _) in text.match_indices(marker) {
                let rest = &text[i + marker.len()..];
                let file = &rest[..rest.find('"').expect("a quoted path")];
                let value = if file.contains("cookie") {
                    COOKIE_SECRET.to_string()
                } else {
                    placeholder(file)
                };
                std::fs::write(creds.join(file), value).expect("credential");
            }
            cmd.env(name, &creds);
        } else {
            cmd.env(&name, placeholder(&name));
        }
    }
    let out = cmd.output().expect("run linkgate check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(": ok ("),
        "{what}: linkgate check failed ({}):\n{stdout}{stderr}\n--- config:\n{text}",
        out.status
    );
    assert!(
        !stderr.contains("warning"),
        "{what}: linkgate check warned:\n{stderr}"
    );
}

/// The `host` of a `scheme://host:port/...` URL.
fn url_host(url: &str) -> &str {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.split(':').next().unwrap_or(authority)
}

/// A TOML value of a config text (the deploy configs are small; parsed with `toml`).
fn toml_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(text)
        .map(toml::Value::Table)
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
}

// === 1. the README's first command on a machine with only Rust ===

/// Crates whose build script runs a native tool, and the Debian packages that bring it.
/// `*-sys` crates that build bundled C sources need only `cc`'s compiler; those that link a
/// system library need its `-dev` package.
const NATIVE_TOOLS: &[(&str, &[&str])] = &[
    ("cmake", &["cmake", "make"]),
    ("cc", &["gcc"]),
    ("pkg-config", &["pkg-config"]),
    ("autotools", &["autoconf", "automake", "libtool", "make"]),
    ("bindgen", &["libclang-dev"]),
    ("prost-build", &["protobuf-compiler"]),
    ("nasm-rs", &["nasm"]),
];
const SYS_CRATES: &[(&str, &[&str])] = &[
    ("openssl-sys", &["libssl-dev", "pkg-config"]),
    ("libz-ng-sys", &[]),
    ("aws-lc-sys", &[]),
    ("libmimalloc-sys", &[]),
    ("zstd-sys", &[]),
];

/// The Debian packages `scripts/build-deps` installs (its `build_needs` array).
fn build_deps_packages() -> BTreeSet<String> {
    let script = read("scripts/build-deps");
    let start = script
        .find("build_needs=(")
        .expect("build_needs in scripts/build-deps");
    let body = &script[start..];
    let body = &body[..body.find("\n)").expect("end of build_needs")];
    body.lines()
        .skip(1)
        .filter_map(|l| {
            let quoted = l.trim().strip_prefix('"')?;
            let pair = &quoted[..quoted.find('"')?];
            Some(pair.rsplit(':').next()?.to_string())
        })
        .collect()
}

#[test]
fn the_build_graph_needs_no_native_tool_that_build_deps_does_not_install() {
    let host = String::from_utf8(
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("-vV")
            .output()
            .expect("rustc -vV")
            .stdout,
    )
    .expect("utf-8");
    let host = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("host triple")
        .to_string();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .args(["--filter-platform", &host])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Json = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let name_of = |id: &str| -> String {
        meta["packages"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["id"] == id))
            .and_then(|p| p["name"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let nodes: BTreeMap<String, &Json> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .map(|n| (n["id"].as_str().unwrap_or_default().to_string(), n))
        .collect();
    let root = meta["resolve"]["root"].as_str().expect("root package");

    // Walk linkgate's normal and build dependencies (not dev: the tests' tools are
    // scripts/test's business), noting every build-dependency edge.
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    let mut build_tools = BTreeMap::<String, BTreeSet<String>>::new();
    let mut sys = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let name = name_of(&id);
        if name.ends_with("-sys") {
            sys.insert(name.clone());
        }
        for dep in nodes[&id]["deps"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| k["kind"].as_str().unwrap_or("normal"))
                .collect();
            if kinds.iter().all(|k| *k == "dev") {
                continue;
            }
            let dep_id = dep["pkg"].as_str().unwrap_or_default().to_string();
            if kinds.contains(&"build") {
                build_tools
                    .entry(name_of(&dep_id))
                    .or_default()
                    .insert(name.clone());
            }
            todo.push(dep_id);
        }
    }

    let installed = build_deps_packages();
    let mut needed = BTreeMap::<String, String>::new();
    for (tool, packages) in NATIVE_TOOLS {
        if let Some(users) = build_tools.get(*tool) {
            for p in *packages {
                needed.insert(p.to_string(), format!("the `{tool}` crate ({users:?})"));
            }
        }
    }
    for name in &sys {
        let packages = SYS_CRATES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| {
                panic!(
                    "{name} is new in linkgate's build graph: find out what it needs at build \
                     time, add that to scripts/build-deps and to SYS_CRATES here"
                )
            });
        for p in packages {
            needed.insert(p.to_string(), name.clone());
        }
    }
    // What the walk must have found, or it walked nothing: pingora-core's flate2 "zlib-ng"
    // builds zlib-ng with cmake (no feature of ours avoids it), OpenSSL comes from the system.
    assert!(
        build_tools.contains_key("cmake") && sys.contains("libz-ng-sys"),
        "cmake via libz-ng-sys expected: {build_tools:?}"
    );
    assert!(sys.contains("openssl-sys"), "{sys:?}");
    for (package, why) in &needed {
        assert!(
            installed.contains(package),
            "the build needs the Debian package `{package}` for {why}, but scripts/build-deps \
             installs only {installed:?}"
        );
    }
}

/// A directory of links to every program on PATH but `hidden`: a machine without it.
fn path_without(hidden: &str, dir: &Path) -> std::ffi::OsString {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let path = std::env::var_os("PATH").expect("PATH");
    for d in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = bin.join(&name);
            if name != hidden && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), &link);
            }
        }
    }
    bin.into_os_string()
}

#[test]
fn build_deps_names_a_missing_tool_and_the_demo_and_tests_run_it_first() {
    // Here everything is installed (this test binary was built).
    let ok = Command::new(repo().join("scripts/build-deps"))
        .arg("--check")
        .output()
        .expect("scripts/build-deps --check");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A machine without cmake, as a fresh one is.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(repo().join("scripts/build-deps"))
        .arg("--check")
        .env("PATH", path_without("cmake", dir.path()))
        .output()
        .expect("scripts/build-deps --check without cmake");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "build-deps: missing: cmake"
    );

    // The README's first command is scripts/demo, which installs first, then runs the demo;
    // scripts/test (CI's command) and the Dockerfile run the same script.
    let readme = read("README.md");
    let section = &readme[readme.find("## Two commands").expect("Two commands")..];
    let block = &section[section.find("```sh\n").expect("sh block") + 6..];
    let block = &block[..block.find("```").expect("end of block")];
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(commands, ["scripts/demo", "scripts/test"]);
    let demo = read("scripts/demo");
    let install = demo
        .find("scripts/build-deps")
        .expect("demo runs build-deps");
    let run = demo
        .find("cargo run --release --locked -- demo \"$@\"")
        .expect("demo runs the demo");
    assert!(install < run);
    let test = read("scripts/test");
    assert!(
        test.find("scripts/build-deps")
            .expect("test runs build-deps")
            < test.find("cargo test").expect("cargo test")
    );
    assert!(read(".ci/run").contains("exec scripts/test"));
    assert!(read("deploy/Dockerfile").contains("RUN scripts/build-deps"));
}

/// Every `.rs` file under `tests/` (the rig included), as (path, text).
fn test_sources() -> Vec<(String, String)> {
    files_under("tests")
        .into_iter()
        .filter(|f| f.ends_with(".rs"))
        .map(|f| {
            let text = read(&f);
            (f, text)
        })
        .collect()
}

#[test]
fn scripts_test_installs_every_tool_the_tests_require() {
    // The programs scripts/test installs ("program:package" pairs, as in build-deps).
    let script = read("scripts/test");
    let start = script.find("needs=(").expect("needs in scripts/test");
    let body = &script[start..];
    let body = &body[..body.find("\n)").expect("end of needs")];
    let installed: BTreeSet<&str> = body
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().strip_prefix('"')?.split(':').next())
        .collect();
    // What the tests insist on (`require("program", ...)`): a fresh machine gets it from
    // scripts/test, or the suite fails there.
    let mut required = BTreeSet::new();
    for (file, text) in test_sources() {
        if file == "tests/deploy.rs" {
            continue; // this file names `require` in its prose only
        }
        for (i, _) in text.match_indices("require(\"") {
            let rest = &text[i + 9..];
            let program = &rest[..rest.find('"').expect("quoted")];
            if program != "systemd-analyze" {
                required.insert((program.to_string(), file.clone()));
            }
        }
    }
    assert!(
        required.iter().any(|(p, _)| p == "redis-server"),
        "{required:?}"
    );
    for (program, file) in &required {
        assert!(
            installed.contains(program.as_str()),
            "{file} requires `{program}`, which scripts/test does not install ({installed:?})"
        );
    }
}

// === 2. configs and YAML ===

/// The files under deploy/ and the test that exercises each.
const DEPLOY_FILES: &[(&str, &str)] = &[
    (
        "deploy/Dockerfile",
        "the_dockerfile_is_pinned_non_root_and_its_healthcheck_works",
    ),
    ("deploy/compose/.env.example", "compose_runs_as_shipped"),
    ("deploy/compose/compose.yaml", "compose_runs_as_shipped"),
    ("deploy/compose/config.toml", "compose_runs_as_shipped"),
    (
        "deploy/helm/linkgate/Chart.yaml",
        "the_helm_chart_renders_for_every_mode",
    ),
    (
        "deploy/helm/linkgate/templates/configmap.yaml",
        "the_helm_chart_renders_for_every_mode",
    ),
    (
        "deploy/helm/linkgate/templates/deployment.yaml",
        "the_helm_chart_renders_for_every_mode",
    ),
    (
        "deploy/helm/linkgate/templates/networkpolicy.yaml",
        "the_helm_chart_renders_for_every_mode",
    ),
    (
        "deploy/helm/linkgate/templates/pdb.yaml",
        "the_helm_chart_renders_for_every_mode",
    ),
    (
        "deploy/helm/linkgate/templates/redis.yaml",
        "the_helm_chart_renders_for_every_mode",
    ),
    (
        "deploy/helm/linkgate/templates/service.yaml",
        "the_helm_chart_renders_for_every_mode",
    ),
    (
        "deploy/helm/linkgate/values.yaml",
        "the_helm_chart_renders_for_every_mode",
    ),
    (
        "deploy/kubernetes/configmap.yaml",
        "kubernetes_manifests_run_as_shipped",
    ),
    (
        "deploy/kubernetes/kustomization.yaml",
        "kubernetes_manifests_run_as_shipped",
    ),
    (
        "deploy/kubernetes/linkgate.yaml",
        "kubernetes_manifests_run_as_shipped",
    ),
    (
        "deploy/kubernetes/redis.yaml",
        "kubernetes_manifests_run_as_shipped",
    ),
    (
        "deploy/kubernetes/secret.example.yaml",
        "kubernetes_manifests_run_as_shipped",
    ),
    (
        "deploy/systemd/config.toml",
        "the_systemd_unit_verifies_and_is_hardened",
    ),
    (
        "deploy/systemd/linkgate-upgrade",
        "the_systemd_reload_hands_the_sockets_to_a_new_process",
    ),
    (
        "deploy/systemd/linkgate.env.example",
        "the_systemd_unit_verifies_and_is_hardened",
    ),
    (
        "deploy/systemd/linkgate.service",
        "the_systemd_unit_verifies_and_is_hardened",
    ),
];

#[test]
fn every_file_under_deploy_is_exercised() {
    let listed: Vec<&str> = DEPLOY_FILES.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        files_under("deploy"),
        listed,
        "a file under deploy/ without a check in tests/deploy.rs (or a check of a file that \
         is gone): add it to DEPLOY_FILES and exercise it"
    );
    // Every YAML file that is not a Helm template (those are rendered first) parses.
    for file in files_under("deploy") {
        if (file.ends_with(".yaml") || file.ends_with(".yml")) && !file.contains("/templates/") {
            assert!(
                !yaml_docs(&file, &read(&file)).is_empty(),
                "{file} is empty"
            );
        }
    }
}

#[test]
fn compose_runs_as_shipped() {
    let compose = &yaml_docs("compose.yaml", &read("deploy/compose/compose.yaml"))[0];
    let services = compose["services"].as_object().expect("services");
    let gate = &services["linkgate"];
    // The config it mounts is the one next to it, and it passes `check`.
    let volumes: Vec<&str> = gate["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(volumes.contains(&"./config.toml:/etc/linkgate/config.toml:ro"));
    assert_eq!(gate["command"][2], "/etc/linkgate/config.toml");
    let text = read("deploy/compose/config.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    check_config("deploy/compose/config.toml", &text, dir.path());
    let config = toml_value(&text);
    // Its Redis is the compose service, which keeps links (AOF) and never evicts them.
    let redis_host = url_host(config["redis"]["url"].as_str().expect("redis.url"));
    assert!(services.contains_key(redis_host), "no service {redis_host}");
    let redis_cmd = services[redis_host]["command"].to_string();
    for arg in [
        "\"--appendonly\",\"yes\"",
        "\"--maxmemory-policy\",\"noeviction\"",
    ] {
        assert!(redis_cmd.contains(arg), "redis command lacks {arg}");
    }
    assert!(services[redis_host]["volumes"][0]
        .as_str()
        .is_some_and(|v| v.ends_with(":/data")));
    // Every variable the config reads is passed by compose and explained in .env.example.
    let env = gate["environment"].as_object().expect("environment");
    let example = read("deploy/compose/.env.example");
    for name in env_refs(&text) {
        assert!(env.contains_key(&name), "compose does not pass {name}");
        assert!(
            example.lines().any(|l| l.starts_with(&format!("{name}="))),
            ".env.example lacks {name}"
        );
    }
    // The default upstream is a compose service too.
    let upstream = env["LINKGATE_UPSTREAM_URL"].as_str().expect("upstream");
    let default = upstream
        .split(":-")
        .nth(1)
        .expect("a default")
        .trim_end_matches('}');
    assert!(services.contains_key(url_host(default)));
    // Read-only root: where linkgate writes is a tmpfs.
    assert_eq!(gate["read_only"], true);
    let tmpfs = gate["tmpfs"].to_string();
    for key in ["pid_file", "upgrade_sock"] {
        let path = Path::new(config["server"][key].as_str().expect(key));
        let dir = path
            .parent()
            .expect("parent")
            .to_string_lossy()
            .into_owned();
        assert!(
            tmpfs.contains(&format!("\"{dir}")),
            "{key} {path:?} not on a tmpfs"
        );
    }
    assert!(repo()
        .join("deploy/compose")
        .join(gate["build"]["context"].as_str().expect("context"))
        .join(gate["build"]["dockerfile"].as_str().expect("dockerfile"))
        .is_file());
}

/// Checks a set of Kubernetes objects for linkgate (plain manifests or the rendered chart):
/// the Deployment's ConfigMap holds a config that passes `check` (TLS files, if any, written
/// next to it as the Secret would mount them), the probes reach the admin listener, the
/// NetworkPolicy keeps the admin port private, linkgate writes only to emptyDirs, and every
/// variable the config reads comes from the Deployment's env or the Secret.
fn check_linkgate_objects(what: &str, docs: &[Json], name: &str, secret_keys: &BTreeSet<String>) {
    let deployment = object(docs, "Deployment", name);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let config_arg = container["args"][2].as_str().expect("-c PATH");
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    let volumes = pod["volumes"].as_array().expect("volumes");
    let volume = |mount_name: &str| -> &Json {
        volumes
            .iter()
            .find(|v| v["name"] == mount_name)
            .unwrap_or_else(|| panic!("{what}: no volume {mount_name}"))
    };
    let mount_of = |path: &Path| -> &Json {
        mounts
            .iter()
            .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("/nonexistent")))
            .max_by_key(|m| m["mountPath"].as_str().map(str::len))
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {path:?}"))
    };
    let config_mount = mount_of(Path::new(config_arg));
    let config_map_name = volume(config_mount["name"].as_str().expect("name"))["configMap"]["name"]
        .as_str()
        .expect("the config comes from a ConfigMap");
    let file = Path::new(config_arg)
        .strip_prefix(config_mount["mountPath"].as_str().expect("mountPath"))
        .expect("under the mount");
    let text = object(docs, "ConfigMap", config_map_name)["data"][file.to_str().expect("utf-8")]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: ConfigMap {config_map_name} has no {file:?}"));

    // The config passes `check`, laid out as the pod sees it.
    let dir = tempfile::tempdir().expect("tempdir");
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir_all(&conf_dir).expect("conf dir");
    let config = toml_value(text);
    if let Some(tls) = config["server"].get("tls") {
        let cert = conf_dir.join(tls["cert"].as_str().expect("cert"));
        let key = conf_dir.join(tls["key"].as_str().expect("key"));
        let tls_dir = cert.parent().expect("cert dir");
        std::fs::create_dir_all(tls_dir).expect("tls dir");
        let (c, k) = support::tls::self_signed(tls_dir);
        std::fs::rename(c, &cert).expect("cert");
        std::fs::rename(k, &key).expect("key");
        // ... and the pod has the TLS Secret mounted there.
        let pod_cert = Path::new(config_arg)
            .parent()
            .expect("config dir")
            .join(tls["cert"].as_str().expect("cert"));
        let pod_cert: PathBuf = pod_cert.components().fold(PathBuf::new(), |mut p, c| {
            if c == std::path::Component::ParentDir {
                p.pop();
            } else {
                p.push(c);
            }
            p
        });
        let m = mount_of(&pod_cert);
        assert!(volume(m["name"].as_str().expect("name"))["secret"]["secretName"].is_string());
    }
    check_config(what, text, &conf_dir);

    // Every variable comes from the Deployment's env or the Secret it loads.
    let env: BTreeSet<String> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(String::from))
        .collect();
    assert!(container["envFrom"][0]["secretRef"]["name"].is_string());
    for name in env_refs(text) {
        assert!(
            env.contains(&name) || secret_keys.contains(&name),
            "{what}: nothing provides {name}"
        );
    }

    // The probes reach the admin listener: on every address, on the port they name.
    let admin = config["server"]["admin_listen"]
        .as_str()
        .expect("admin_listen");
    assert!(
        admin.starts_with("0.0.0.0:"),
        "{what}: the kubelet cannot reach {admin}"
    );
    let admin_port: u64 = admin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let port_named = |n: &str| {
        container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == n)
            .and_then(|p| p["containerPort"].as_u64())
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path);
        let port = get["port"]
            .as_str()
            .and_then(port_named)
            .or(get["port"].as_u64());
        assert_eq!(
            port,
            Some(admin_port),
            "{what}: {probe} misses the admin listener"
        );
    }
    // ... and no Service exposes it, and a NetworkPolicy admits it only from labelled pods.
    for service in docs
        .iter()
        .filter(|d| d["kind"] == "Service" && d["metadata"]["name"] == name)
    {
        for p in service["spec"]["ports"].as_array().expect("ports") {
            assert_ne!(p["targetPort"], "admin");
            assert_ne!(p["targetPort"].as_u64(), Some(admin_port));
        }
    }

    // Read-only root; linkgate writes only to emptyDirs (PID file, upgrade socket, /tmp).
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    for key in ["pid_file", "upgrade_sock"] {
        let path = Path::new(config["server"][key].as_str().expect(key));
        let m = mount_of(path);
        assert!(
            volume(m["name"].as_str().expect("name"))["emptyDir"].is_object(),
            "{what}: {key} is not on an emptyDir"
        );
    }
    assert!(volume(
        mount_of(Path::new("/tmp/x"))["name"]
            .as_str()
            .expect("name")
    )["emptyDir"]
        .is_object());

    // A PodDisruptionBudget keeps one up during node drains.
    let pdb = object(docs, "PodDisruptionBudget", name);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

/// The NetworkPolicy over linkgate's pods: the proxy port open, the admin port only `from`
/// selected pods.
fn check_admin_network_policy(docs: &[Json], name: &str, admin_port: u64) {
    let policy = object(docs, "NetworkPolicy", name);
    let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
    for rule in rules {
        let ports: Vec<u64> = rule["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_u64())
            .collect();
        if ports.contains(&admin_port) {
            assert!(
                rule["from"].as_array().is_some_and(|f| !f.is_empty()),
                "the admin port is open to everyone"
            );
        }
    }
    assert!(rules.iter().any(|r| r["ports"][0]["port"] == 4180));
}

/// The Redis StatefulSet keeps links: AOF on, no eviction, data on a PVC.
fn check_redis(docs: &[Json], name: &str) {
    let redis = object(docs, "StatefulSet", name);
    let args = redis["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("\"--appendonly\",\"yes\""), "{args}");
    assert!(
        args.contains("\"--maxmemory-policy\",\"noeviction\""),
        "{args}"
    );
    let claim = &redis["spec"]["volumeClaimTemplates"][0];
    let mount = &redis["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["name"], claim["metadata"]["name"]);
    assert_eq!(mount["mountPath"], "/data");
    object(docs, "Service", name);
}

#[test]
fn kubernetes_manifests_run_as_shipped() {
    let kustomization = &yaml_docs(
        "kustomization",
        &read("deploy/kubernetes/kustomization.yaml"),
    )[0];
    let resources: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    // Every manifest but the Secret example (made by hand from it) is in the kustomization.
    let mut expected: Vec<String> = files_under("deploy/kubernetes")
        .into_iter()
        .filter_map(|f| f.strip_prefix("deploy/kubernetes/").map(String::from))
        .filter(|f| f != "kustomization.yaml" && f != "secret.example.yaml")
        .collect();
    expected.sort();
    assert_eq!(resources, expected);
    let mut docs = Vec::new();
    for r in &resources {
        docs.extend(yaml_docs(r, &read(&format!("deploy/kubernetes/{r}"))));
    }
    for d in &docs {
        assert!(
            d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
            "{d}"
        );
    }
    let secret = &yaml_docs("secret", &read("deploy/kubernetes/secret.example.yaml"))[0];
    let secret_name = secret["metadata"]["name"].as_str().expect("name");
    let keys: BTreeSet<String> = secret["stringData"]
        .as_object()
        .expect("stringData")
        .keys()
        .cloned()
        .collect();
    let deployment = object(&docs, "Deployment", "linkgate");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
        secret_name
    );
    check_linkgate_objects("deploy/kubernetes", &docs, "linkgate", &keys);
    check_admin_network_policy(&docs, "linkgate", 9180);
    check_redis(&docs, "redis");
    // The config's Redis is that Service.
    let config = toml_value(
        object(&docs, "ConfigMap", "linkgate-config")["data"]["config.toml"]
            .as_str()
            .expect("config"),
    );
    assert_eq!(
        url_host(config["redis"]["url"].as_str().expect("url")),
        "redis"
    );
    assert!(kinds(&docs).contains("NetworkPolicy"));
}

// === 3. the Helm chart ===

/// Renders a chart template: the subset of Helm's template language the chart uses —
/// `{{ .Values.a.b }}`, `{{ .Release.Name }}`, `{{ .Chart.X }}`, `if` / `else if` / `else` /
/// `end` on a value or `eq`/`ne` of a value and a string, the pipeline functions `quote`,
/// `toJson`, `toYaml` and `nindent N`, and `{{-` / `-}}` whitespace trimming as Go's
/// text/template does it. Anything else is an error, so the chart cannot drift out of what
/// this test proves (and `helm template` renders the same text).
fn render(template: &str, ctx: &Json) -> Result<String, String> {
    // Lex into text and actions, trimming as the markers say.
    enum Tok {
        Text(String),
        Action(String),
    }
    let mut toks = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed {{")?;
        let mut body = &after[..end];
        if let Some(b) = body.strip_prefix('-') {
            text = text.trim_end().to_string();
            body = b;
        }
        let trim_right = body.ends_with('-');
        if trim_right {
            body = &body[..body.len() - 1];
        }
        toks.push(Tok::Text(text));
        toks.push(Tok::Action(body.trim().to_string()));
        rest = &after[end + 2..];
        if trim_right {
            rest = rest.trim_start();
        }
    }
    toks.push(Tok::Text(rest.to_string()));

    fn lookup(ctx: &Json, path: &str) -> Result<Json, String> {
        let mut v = ctx;
        for part in path.trim_start_matches('.').split('.') {
            v = v.get(part).ok_or_else(|| format!("no value {path}"))?;
        }
        Ok(v.clone())
    }
    fn term(ctx: &Json, t: &str) -> Result<Json, String> {
        if let Some(s) = t.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Ok(Json::String(s.to_string()))
        } else if t.starts_with('.') {
            lookup(ctx, t)
        } else if let Ok(n) = t.parse::<i64>() {
            Ok(Json::from(n))
        } else {
            Err(format!("unsupported term {t}"))
        }
    }
    fn words(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in s.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                ' ' if !quoted => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                _ => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
    fn eval(ctx: &Json, expr: &str) -> Result<Json, String> {
        let mut value: Option<Json> = None;
        for stage in expr.split('|') {
            let w = words(stage.trim());
            let args = |from: usize| -> Result<Vec<Json>, String> {
                let mut a: Vec<Json> = w[from..]
                    .iter()
                    .map(|t| term(ctx, t))
                    .collect::<Result<_, _>>()?;
                a.extend(value.clone());
                Ok(a)
            };
            let next = match w.first().map(String::as_str) {
                Some("eq") | Some("ne") => {
                    let a = args(1)?;
                    let same = a.len() == 2 && a[0] == a[1];
                    Json::Bool(if w[0] == "eq" { same } else { !same })
                }
                Some("quote") => {
                    let a = args(1)?;
                    Json::String(serde_json::to_string(&display(&a[0])).map_err(|e| e.to_string())?)
                }
                Some("toJson") => Json::String(args(1)?[0].to_string()),
                Some("toYaml") => Json::String(
                    serde_yaml::to_string(&args(1)?[0])
                        .map_err(|e| e.to_string())?
                        .trim_end()
                        .to_string(),
                ),
                Some("nindent") => {
                    let a = args(1)?;
                    let n = a[0].as_u64().ok_or("nindent N")? as usize;
                    let pad = " ".repeat(n);
                    let text = display(&a[1]);
                    Json::String(format!(
                        "\n{pad}{}",
                        text.replace('\n', &format!("\n{pad}"))
                    ))
                }
                Some(t) if w.len() == 1 && value.is_none() => term(ctx, t)?,
                _ => return Err(format!("unsupported expression {expr}")),
            };
            value = Some(next);
        }
        value.ok_or_else(|| "empty action".to_string())
    }
    fn display(v: &Json) -> String {
        match v {
            Json::String(s) => s.clone(),
            Json::Null => String::new(),
            other => other.to_string(),
        }
    }
    fn truthy(v: &Json) -> bool {
        match v {
            Json::Null => false,
            Json::Bool(b) => *b,
            Json::Number(n) => n.as_f64() != Some(0.0),
            Json::String(s) => !s.is_empty(),
            Json::Array(a) => !a.is_empty(),
            Json::Object(o) => !o.is_empty(),
        }
    }

    // Evaluate with a stack of (this branch is live, some branch of this `if` was taken).
    let mut out = String::new();
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let live = |stack: &[(bool, bool)]| stack.iter().all(|(l, _)| *l);
    for tok in toks {
        match tok {
            Tok::Text(t) => {
                if live(&stack) {
                    out.push_str(&t);
                }
            }
            Tok::Action(a) => {
                if a.starts_with("/*") {
                    continue;
                } else if let Some(cond) = a.strip_prefix("if ") {
                    let on = live(&stack) && truthy(&eval(ctx, cond)?);
                    stack.push((on, on));
                } else if let Some(cond) = a.strip_prefix("else if ") {
                    let (_, taken) = stack.pop().ok_or("else without if")?;
                    let on = !taken && live(&stack) && truthy(&eval(ctx, cond)?);
                    stack.push((on, taken || on));
                } else if a == "else" {
                    let (_, taken) = stack.pop().ok_or("else without if")?;
                    stack.push((!taken, true));
                } else if a == "end" {
                    stack.pop().ok_or("end without if")?;
                } else if live(&stack) {
                    out.push_str(&display(&eval(ctx, &a)?));
                }
            }
        }
    }
    if !stack.is_empty() {
        return Err("if without end".into());
    }
    Ok(out)
}

/// Merges `overlay` into `base` (maps key by key; anything else replaced).
fn merge(base: &mut Json, overlay: &Json) {
    match (base, overlay) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Json::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Renders every template of the chart with `values.yaml` overlaid by `overrides`.
fn render_chart(release: &str, overrides: &str) -> Vec<Json> {
    let chart = "deploy/helm/linkgate";
    let mut values = yaml_docs("values.yaml", &read(&format!("{chart}/values.yaml")))
        .pop()
        .expect("values");
    // The application's URL is the operator's; here one that resolves (check resolves it).
    merge(
        &mut values,
        &serde_json::json!({ "upstreamUrl": "http://127.0.0.1:8080" }),
    );
    merge(
        &mut values,
        &yaml_docs("overrides", overrides)
            .pop()
            .unwrap_or(Json::Null),
    );
    let meta = yaml_docs("Chart.yaml", &read(&format!("{chart}/Chart.yaml")))
        .pop()
        .expect("Chart.yaml");
    let ctx = serde_json::json!({
        "Values": values,
        "Release": { "Name": release, "Namespace": "default" },
        "Chart": { "Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"] },
    });
    let mut docs = Vec::new();
    for file in files_under(&format!("{chart}/templates")) {
        let text = render(&read(&file), &ctx).unwrap_or_else(|e| panic!("{file}: {e}"));
        docs.extend(yaml_docs(&format!("{file} ({overrides})"), &text));
    }
    docs
}

#[test]
fn the_helm_chart_renders_for_every_mode() {
    let meta = &yaml_docs("Chart.yaml", &read("deploy/helm/linkgate/Chart.yaml"))[0];
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "linkgate");
    // The chart expects its Secret to exist; these are the keys operators put in it.
    let secret_keys: BTreeSet<String> = [
        "LINKGATE_COOKIE_SECRET",
        "LINKGATE_SSO_CLIENT_SECRET",
        "LINKGATE_ACCOUNT_CLIENT_SECRET",
        "LINKGATE_REDIS_PASSWORD",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let values_text = read("deploy/helm/linkgate/values.yaml");
    for key in &secret_keys {
        assert!(
            values_text.contains(key.as_str()),
            "values.yaml does not name {key}"
        );
    }

    let variants = [
        "{}",
        "{replicaCount: 3, redis: {password: true}}",
        "{redis: {mode: sentinel, deploy: false, nodes: [\"s1:26379\", \"s2:26379\"], sentinelMaster: mymaster}}",
        "{redis: {mode: cluster, deploy: false, nodes: [\"r1:6379\", \"r2:6379\", \"r3:6379\"]}}",
        "{redis: {deploy: false, url: \"rediss://redis.example.internal:6380/0\"}}",
        "{tls: {enabled: true, secretName: my-tls}}",
        "{account: {source: oauth2}}",
        "{account: {source: none}, link: {mode: \"off\"}}",
        "{networkPolicy: {enabled: false}, sso: {preset: \"\", issuer: \"https://idp.example.com\"}}",
    ];
    for overrides in variants {
        let docs = render_chart("gate", overrides);
        let o = &yaml_docs("overrides", overrides)[0];
        for d in &docs {
            assert!(
                d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
                "{d}"
            );
        }
        let what = format!("helm chart with {overrides}");
        check_linkgate_objects(&what, &docs, "gate", &secret_keys);
        let deployment = object(&docs, "Deployment", "gate");
        assert_eq!(
            deployment["spec"]["replicas"],
            o.get("replicaCount").cloned().unwrap_or(Json::from(2))
        );
        let config = toml_value(
            object(&docs, "ConfigMap", "gate-config")["data"]["config.toml"]
                .as_str()
                .expect("config"),
        );
        let mode = o["redis"]["mode"].as_str().unwrap_or("standalone");
        assert_eq!(config["redis"]["mode"].as_str(), Some(mode));
        let deploys_redis = mode == "standalone" && o["redis"]["deploy"] != false;
        if deploys_redis {
            check_redis(&docs, "gate-redis");
            assert_eq!(
                url_host(config["redis"]["url"].as_str().expect("url")),
                "gate-redis"
            );
        } else {
            assert!(!kinds(&docs).contains("StatefulSet"), "{what}");
        }
        if mode != "standalone" {
            assert_eq!(
                config["redis"]["nodes"].as_array().map(Vec::len),
                o["redis"]["nodes"].as_array().map(Vec::len)
            );
        }
        let policy = o["networkPolicy"]["enabled"] != false;
        assert_eq!(kinds(&docs).contains("NetworkPolicy"), policy, "{what}");
        if policy {
            check_admin_network_policy(&docs, "gate", 9180);
        }
        assert_eq!(
            config["server"].get("tls").is_some(),
            o["tls"]["enabled"] == true
        );
        let source = o["account"]["source"].as_str().unwrap_or("jwt");
        assert_eq!(
            config.get("account").and_then(|a| a["source"].as_str()),
            (source != "none").then_some(source)
        );
    }
}

// === 4. systemd ===

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = read("deploy/systemd/linkgate.service");
    let keys: Vec<(String, String)> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |k: &str| -> Vec<&str> {
        keys.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("DynamicUser"), ["yes"]);
    assert_eq!(get("ProtectSystem"), ["strict"]);
    assert_eq!(get("NoNewPrivileges"), ["yes"]);
    assert_eq!(get("PrivateTmp"), ["yes"]);
    assert_eq!(get("CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(
        get("ExecReload"),
        ["/usr/local/lib/linkgate/linkgate-upgrade /etc/linkgate/config.toml"]
    );
    assert_eq!(get("NotifyAccess"), ["all"]);

    // The config: where it writes is the one writable path, its credentials are loaded,
    // its other variables are in the environment file, and it passes `check`.
    let text = read("deploy/systemd/config.toml");
    let config = toml_value(&text);
    let runtime = format!("/run/{}", get("RuntimeDirectory")[0]);
    assert_eq!(get("ReadWritePaths"), [runtime.as_str()]);
    for key in ["pid_file", "upgrade_sock"] {
        assert!(config["server"][key]
            .as_str()
            .expect(key)
            .starts_with(&format!("{runtime}/")));
    }
    let credentials: Vec<&str> = get("LoadCredential")
        .iter()
        .filter_map(|v| v.split(':').next())
        .collect();
    for (i, _) in text.match_indices("${CREDENTIALS_DIRECTORY}/") {
        let rest = &text[i + 25..];
        let file = &rest[..rest.find('"').expect("quoted")];
        assert!(credentials.contains(&file), "no LoadCredential for {file}");
    }
    assert_eq!(get("EnvironmentFile"), ["/etc/linkgate/linkgate.env"]);
    let env_example = read("deploy/systemd/linkgate.env.example");
    for name in env_refs(&text) {
        if name != "CREDENTIALS_DIRECTORY" {
            assert!(
                env_example
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}="))),
                "linkgate.env.example lacks {name}"
            );
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    check_config("deploy/systemd/config.toml", &text, dir.path());

    // systemd's own verdict, where systemd is installed (Debian's base system has it; a
    // container image may not: the keys above are asserted either way), with the installed
    // paths pointing at this build.
    let have_analyze = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("systemd-analyze").is_file())
    });
    if !have_analyze {
        eprintln!("systemd-analyze is not installed: verified the unit's keys only");
        return;
    }
    let unit_dir = tempfile::tempdir().expect("tempdir");
    let local = unit
        .replace("/usr/local/bin/linkgate", linkgate_bin())
        .replace(
            "/usr/local/lib/linkgate/linkgate-upgrade",
            &repo()
                .join("deploy/systemd/linkgate-upgrade")
                .to_string_lossy(),
        );
    let path = unit_dir.path().join("linkgate.service");
    std::fs::write(&path, local).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

/// Ends a process by id when dropped (the upgraded linkgate is not the test's child).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_reload_hands_the_sockets_to_a_new_process() {
    let upstream = Upstream::start().await;
    let mut gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml("[authz]\nskip_auth_routes = [\"^/\"]\n")
        .start();
    let old = gate.pid();
    let config = gate.dir().join("config.toml");
    // As systemd runs ExecReload: $MAINPID is the running process.
    let mut reload = Command::new(repo().join("deploy/systemd/linkgate-upgrade"))
        .arg(&config)
        .env("LINKGATE_BIN", linkgate_bin())
        .env("MAINPID", old.to_string())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run linkgate-upgrade");
    let mut line = String::new();
    BufReader::new(reload.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the new PID");
    let new: i32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a PID: {line:?}"));
    let _new = KillOnDrop(new);
    assert!(reload.wait().expect("wait").success());
    assert_ne!(new as u32, old);

    // The old process hands over and exits cleanly; the new one serves on the same ports.
    let status = gate.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "the old process exited with {status}");
    assert_eq!(http_get_status(gate.admin, "/healthz"), Some(200));
    let resp = support::client()
        .get(gate.url("/after"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(new), None).is_ok(),
        "the new process is running"
    );
}

// === 5. the container image ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_is_pinned_non_root_and_its_healthcheck_works() {
    let dockerfile = read("deploy/Dockerfile");
    // Join continuation lines into instructions.
    let mut instructions: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in dockerfile.lines() {
        if line.trim_start().starts_with('#') && cur.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => cur.push_str(part),
            None => {
                cur.push_str(line);
                if !cur.trim().is_empty() {
                    instructions.push(cur.trim().to_string());
                }
                cur.clear();
            }
        }
    }
    let with = |op: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter_map(|i| i.strip_prefix(op).map(str::trim))
            .collect()
    };
    // Every base image is pinned to a full version (or a digest).
    let froms = with("FROM ");
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    for from in &froms {
        let image = from.split_whitespace().next().expect("image");
        let pinned = image.contains("@sha256:")
            || image.split_once(':').is_some_and(|(_, tag)| {
                tag.chars().filter(|c| *c == '.').count() >= 1
                    && tag.chars().next().is_some_and(|c| c.is_ascii_digit())
            });
        assert!(pinned, "base image {image} is not pinned");
    }
    // The runtime stage runs as a non-root user.
    let last_from = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("FROM");
    let users: Vec<&String> = instructions[last_from..]
        .iter()
        .filter(|i| i.starts_with("USER "))
        .collect();
    let user = users.last().expect("USER in the runtime stage");
    let uid = user["USER ".len()..].split(':').next().expect("user");
    assert!(uid != "root" && uid != "0", "runs as {uid}");
    // The build uses scripts/build-deps and copies only files that exist.
    for copy in with("COPY ") {
        if copy.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(repo().join(src).exists(), "COPY {src}: no such file");
        }
    }

    // HEALTHCHECK: run its command against a real linkgate's admin listener.
    let healthcheck = with("HEALTHCHECK ");
    assert_eq!(healthcheck.len(), 1);
    let cmd_json = &healthcheck[0][healthcheck[0].find("CMD [").expect("CMD [") + 4..];
    let argv: Vec<String> = serde_json::from_str(cmd_json).expect("exec-form CMD");
    assert!(argv.join(" ").contains("/healthz"));
    let port_env = "LINKGATE_HEALTH_PORT";
    assert!(dockerfile.contains(&format!("{port_env}=9180")));
    let probe = |port: u16| {
        Command::new(&argv[0])
            .args(&argv[1..])
            .env(port_env, port.to_string())
            .output()
            .expect("run the HEALTHCHECK command")
            .status
    };
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml("[authz]\nskip_auth_routes = [\"^/\"]\n")
        .start();
    assert!(
        probe(gate.admin).success(),
        "HEALTHCHECK fails on a healthy linkgate"
    );
    // Nothing listening: unhealthy.
    let closed = free_port();
    assert!(!probe(closed).success());
}
