//! The Redis backend keeps the same contract as the memory backend, against a real
//! redis-server: expiry, take-once, locks, sets, and the atomic pair used by links.

mod support;

use std::sync::Arc;
use std::time::Duration;

use linkgate::config::Config;
use linkgate::store::redis::RedisBackend;
use linkgate::store::{Backend, Pair, PairOutcome};

fn backend(redis: &support::Redis) -> Arc<RedisBackend> {
    let config = Config::parse(
        &format!(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
             [session]\nstore = \"redis\"\n[redis]\nurl = \"{}\"\n",
            redis.url()
        ),
        "test.toml",
        &|_| None,
    )
    .expect("config");
    Arc::new(RedisBackend::new(config.redis.as_ref().unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_backend_keeps_the_contract() {
    let redis = support::Redis::start();
    linkgate::store::contract::exercise(backend(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_concurrent_pair_creations_exactly_one_wins() {
    let redis = support::Redis::start();
    let b = backend(&redis);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let account = format!("account-{i}");
            let pair = Pair {
                a: &account,
                va: b"x",
                b: "shared-sso",
                vb: account.as_bytes(),
                index: "index",
                member: &account,
            };
            b.create_pair(&pair).await.unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == PairOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(b.set_members("index").await.unwrap().len(), 1);
    let winner = String::from_utf8(b.get("shared-sso").await.unwrap().unwrap()).unwrap();
    assert!(b.get(&winner).await.unwrap().is_some());
    assert_eq!(
        redis.keys("account-*").len(),
        1,
        "no loser left a half-written key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_is_an_error_not_a_hang_and_recovery_is_automatic() {
    let mut redis = support::Redis::start();
    let b = backend(&redis);
    b.put("k", b"v", Duration::from_secs(60)).await.unwrap();
    redis.stop();
    let started = std::time::Instant::now();
    assert!(b.get("k").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed fast: {:?}",
        started.elapsed()
    );
    redis.restart();
    support::sso::eventually("the backend to reconnect", Duration::from_secs(10), || {
        let b = b.clone();
        async move { b.ping().await.is_ok() }
    })
    .await;
}

/// A scratch directory and processes that go away with it.
struct Procs {
    dir: tempfile::TempDir,
    children: Vec<std::process::Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn redis_server(args: &[&str]) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server")
}

fn backend_from(toml: &str) -> Arc<RedisBackend> {
    let config = Config::parse(
        &format!(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
             [session]\nstore = \"redis\"\n{toml}"
        ),
        "test.toml",
        &|_| None,
    )
    .expect("config");
    Arc::new(RedisBackend::new(config.redis.as_ref().unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_finds_the_master_and_keeps_the_contract() {
    support::require("redis-server", "apt-get install redis-server");
    let master = support::Redis::start();
    let port = support::free_port();
    let mut procs = Procs {
        dir: tempfile::tempdir().unwrap(),
        children: Vec::new(),
    };
    let conf = procs.dir.path().join("sentinel.conf");
    let master_port = master
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor linkgate 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds linkgate 1000\n",
            procs.dir.path().display()
        ),
    )
    .unwrap();
    procs
        .children
        .push(redis_server(&[conf.to_str().unwrap(), "--sentinel"]));
    let b = backend_from(&format!(
        "[redis]\nmode = \"sentinel\"\nnodes = [\"127.0.0.1:{port}\"]\nsentinel_master = \"linkgate\"\n"
    ));
    support::sso::eventually(
        "the sentinel to name the master",
        Duration::from_secs(10),
        || {
            let b = b.clone();
            async move { b.ping().await.is_ok() }
        },
    )
    .await;
    linkgate::store::contract::exercise(b.clone()).await;
    b.put("through-sentinel", b"1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        master.cli(&["GET", "through-sentinel"]),
        "1",
        "written on the master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_keeps_the_contract_and_links_stay_in_one_slot() {
    support::require("redis-cli", "apt-get install redis-tools");
    let mut procs = Procs {
        dir: tempfile::tempdir().unwrap(),
        children: Vec::new(),
    };
    let ports: Vec<u16> = (0..3).map(|_| support::free_port()).collect();
    for p in &ports {
        let nodes = procs.dir.path().join(format!("nodes-{p}.conf"));
        // The bus port's default, port + 10,000, is past 65,535 for ephemeral ports above
        // 55,535: such a node refuses to start.
        let bus = support::free_port().to_string();
        procs.children.push(redis_server(&[
            "--cluster-port",
            &bus,
            "--port",
            &p.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            nodes.to_str().unwrap(),
            "--dir",
            procs.dir.path().to_str().unwrap(),
        ]));
    }
    for p in &ports {
        support::wait_until("a cluster node to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok()
        });
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = std::process::Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .arg("--cluster-yes")
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    support::wait_until("cluster_state:ok", Duration::from_secs(20), || {
        ports.iter().all(|p| {
            std::process::Command::new("redis-cli")
                .args(["-p", &p.to_string(), "CLUSTER", "INFO"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                .unwrap_or(false)
        })
    });
    let nodes = addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let b = backend_from(&format!("[redis]\nmode = \"cluster\"\nnodes = [{nodes}]\n"));
    linkgate::store::contract::exercise(b.clone()).await;
    // The link keys of linkgate share the {links} tag: creating a link is one script.
    let pair = Pair {
        a: &linkgate::store::keys::link_account("acc|1"),
        va: b"x",
        b: &linkgate::store::keys::link_sso("sso|1"),
        vb: b"y",
        index: &linkgate::store::keys::links_index(),
        member: "acc|1",
    };
    assert_eq!(b.create_pair(&pair).await.unwrap(), PairOutcome::Created);
}
