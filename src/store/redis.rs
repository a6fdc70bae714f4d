//! The Redis backend: standalone (one URL) or Cluster (seed nodes). The connection is opened
//! lazily inside the serving runtime on first use and re-established by the client library
//! after failures, so linkgate starts while Redis is down and recovers by itself when it
//! comes back. Commands that must be atomic are single commands (`SET NX PX`) or
//! Lua scripts over keys that share a hash tag.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Script};
use tokio::sync::Mutex;

use super::{Backend, Pair, PairOutcome, StoreError};
use crate::config::{Redis as RedisConfig, RedisMode};

/// Where and how to connect.
#[derive(Debug, Clone)]
enum Target {
    Standalone(Box<redis::ConnectionInfo>),
    Cluster(Vec<redis::ConnectionInfo>),
    /// Sentinels to ask for the current master of `master`; `auth` is for the master.
    Sentinel {
        sentinels: Vec<redis::ConnectionInfo>,
        master: String,
        auth: Box<redis::RedisConnectionInfo>,
    },
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// A connection to the master the sentinels named; dropped on error so the next
    /// command asks them again (after a failover, the new master).
    Sentinel(redis::aio::MultiplexedConnection),
}

/// A Redis backend.
pub struct RedisBackend {
    target: Target,
    connect_timeout: Duration,
    command_timeout: Duration,
    conn: Mutex<Option<Conn>>,
    unlock: Script,
    set_add: Script,
    create_pair: Script,
    delete_pair: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.target {
            Target::Standalone(_) => "standalone",
            Target::Cluster(_) => "cluster",
            Target::Sentinel { .. } => "sentinel",
        };
        f.debug_struct("RedisBackend").field("mode", &mode).finish()
    }
}

/// A Redis failure, kept as the cause.
fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Redis(std::sync::Arc::new(e))
}

fn connection_info(
    text: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<redis::ConnectionInfo, String> {
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("redis://{text}")
    };
    let mut info: redis::ConnectionInfo =
        redis::IntoConnectionInfo::into_connection_info(with_scheme.as_str())
            .map_err(|e| format!("{text}: {e}"))?;
    let mut redis_info = info.redis_settings().clone();
    if let Some(user) = username {
        redis_info = redis_info.set_username(user);
    }
    if let Some(pass) = password {
        redis_info = redis_info.set_password(pass);
    }
    info = info.set_redis_settings(redis_info);
    Ok(info)
}

impl RedisBackend {
    /// Prepares a backend from `[redis]`; connects on first use.
    pub fn new(config: &RedisConfig) -> Result<Self, String> {
        let password = config.password.as_ref().map(|p| p.expose().as_str());
        let username = config.username.as_deref();
        let target = match config.mode {
            RedisMode::Standalone => {
                let url = config
                    .url
                    .as_ref()
                    .ok_or("redis.url is required for mode = \"standalone\"")?;
                Target::Standalone(Box::new(connection_info(url.as_str(), username, password)?))
            }
            RedisMode::Cluster => Target::Cluster(
                config
                    .nodes
                    .iter()
                    .map(|n| connection_info(n, username, password))
                    .collect::<Result<_, _>>()?,
            ),
            RedisMode::Sentinel => {
                let master = config
                    .sentinel_master
                    .clone()
                    .ok_or("redis.sentinel_master is required for mode = \"sentinel\"")?;
                let mut auth = redis::RedisConnectionInfo::default();
                if let Some(user) = username {
                    auth = auth.set_username(user);
                }
                if let Some(pass) = password {
                    auth = auth.set_password(pass);
                }
                Target::Sentinel {
                    sentinels: config
                        .nodes
                        .iter()
                        .map(|n| connection_info(n, None, None))
                        .collect::<Result<_, _>>()?,
                    master,
                    auth: Box::new(auth),
                }
            }
        };
        Ok(Self {
            target,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            conn: Mutex::new(None),
            unlock: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
            ),
            create_pair: Script::new(
                "local a = redis.call('GET', KEYS[1]); local b = redis.call('GET', KEYS[2]); \
                 if a or b then return {'exists', a or '', b or '', a and 1 or 0, b and 1 or 0} end; \
                 redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[2]); \
                 redis.call('SADD', KEYS[3], ARGV[3]); return {'created'}",
            ),
            delete_pair: Script::new(
                "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end; \
                 redis.call('DEL', KEYS[1], KEYS[2]); redis.call('SREM', KEYS[3], ARGV[2]); return 1",
            ),
            set_add: Script::new(
                "redis.call('SADD', KEYS[1], ARGV[1]); \
                 local ttl = redis.call('PTTL', KEYS[1]); \
                 if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end; \
                 return 1",
            ),
        })
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.connect().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets a sentinel-resolved connection after an error, so the next command asks the
    /// sentinels for the master again. The other kinds reconnect by themselves.
    async fn failed(&self) {
        let mut slot = self.conn.lock().await;
        if matches!(slot.as_ref(), Some(Conn::Sentinel(_))) {
            *slot = None;
        }
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        match &self.target {
            Target::Standalone(info) => {
                let client = redis::Client::open((**info).clone()).map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.command_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(client, config)
                    .map(Conn::Single)
                    .map_err(unavailable)
            }
            Target::Cluster(nodes) => {
                let client = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.command_timeout)
                    .build()
                    .map_err(unavailable)?;
                client
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
                    .map_err(unavailable)
            }
            Target::Sentinel {
                sentinels,
                master,
                auth,
            } => {
                let node = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info((**auth).clone());
                let mut client = redis::sentinel::SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(unavailable)?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.command_timeout));
                tokio::time::timeout(
                    self.connect_timeout * 2,
                    client.get_async_connection_with_config(&config),
                )
                .await
                .map_err(|_| StoreError::Unavailable("sentinel did not answer in time".into()))?
                .map(Conn::Sentinel)
                .map_err(unavailable)
            }
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let result = match self.conn().await? {
            Conn::Single(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            Conn::Sentinel(mut c) => cmd.query_async(&mut c).await,
        };
        if result.is_err() {
            self.failed().await;
        }
        result.map_err(unavailable)
    }

    async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, StoreError> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.script_bytes(script, keys, &args).await
    }

    async fn script_bytes<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        self.script_replicated(script, keys, args, false).await
    }

    /// Runs a script; with `replicated`, then waits on the same connection until a replica
    /// has the write (see [`confirm_replicated`]).
    async fn script_replicated<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
        replicated: bool,
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(*a);
        }
        async fn run<C: ConnectionLike, T: FromRedisValue>(
            inv: &redis::ScriptInvocation<'_>,
            c: &mut C,
        ) -> Result<T, StoreError> {
            inv.invoke_async(c).await.map_err(unavailable)
        }
        let wait = self.command_timeout / 2;
        let result = match self.conn().await? {
            Conn::Single(mut c) => match run(&invocation, &mut c).await {
                Ok(v) if replicated => confirm_replicated(&mut c, wait).await.map(|()| v),
                other => other,
            },
            // A cluster routes WAIT to no particular node: links there rely on the cluster's
            // own replication (see README, "Operating").
            Conn::Cluster(mut c) => run(&invocation, &mut c).await,
            Conn::Sentinel(mut c) => match run(&invocation, &mut c).await {
                Ok(v) if replicated => confirm_replicated(&mut c, wait).await.map(|()| v),
                other => other,
            },
        };
        if result.is_err() {
            self.failed().await;
        }
        result
    }
}

/// After a write that must survive a failover (a link, an unlink), waits until at least one
/// replica acknowledged everything this connection wrote (`WAIT 1`). Redis replicates
/// asynchronously: without this, a master killed right after acknowledging a link loses it
/// when its replica is promoted. A master with no replica connected has nobody to wait
/// for: the write is accepted with a warning (a failover then loses it). A replica that is
/// connected but does not confirm within `wait` is an error: the caller answers 503 and the
/// user retries (the write may be on the master; a retry then finds it).
async fn confirm_replicated<C: ConnectionLike>(
    c: &mut C,
    wait: Duration,
) -> Result<(), StoreError> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(c)
        .await
        .map_err(unavailable)?;
    let replicas: u64 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    if replicas == 0 {
        tracing::warn!("link write on a Redis master with no replica connected: a failover before it is replicated loses it");
        return Ok(());
    }
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(millis(wait))
        .query_async(c)
        .await
        .map_err(unavailable)?;
    if acked >= 1 {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "no replica confirmed the write within {wait:?}"
        )))
    }
}

fn millis(ttl: Duration) -> u64 {
    ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.query(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("XX")
                    .arg("PX")
                    .arg(millis(ttl)),
            )
            .await?;
        Ok(reply.is_some())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        // One DEL per key: in a cluster the keys may live on different slots.
        for key in keys {
            let _: i64 = self.query(redis::cmd("DEL").arg(key)).await?;
        }
        Ok(())
    }

    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl)),
            )
            .await?;
        Ok(reply.is_some())
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let _: i64 = self.script(&self.unlock, &[key], &[token]).await?;
        Ok(())
    }

    async fn set_add(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        let ms = millis(ttl).to_string();
        let _: i64 = self.script(&self.set_add, &[key], &[member, &ms]).await?;
        Ok(())
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        let _: i64 = self.query(redis::cmd("SREM").arg(key).arg(member)).await?;
        Ok(())
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.query(redis::cmd("SMEMBERS").arg(key)).await
    }

    async fn create_pair(&self, pair: &Pair<'_>) -> Result<PairOutcome, StoreError> {
        let reply: Vec<redis::Value> = self
            .script_replicated(
                &self.create_pair,
                &[pair.a, pair.b, pair.index],
                &[pair.va, pair.vb, pair.member.as_bytes()],
                true,
            )
            .await?;
        let text = |v: &redis::Value| -> Option<Vec<u8>> {
            match v {
                redis::Value::BulkString(b) => Some(b.clone()),
                redis::Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
                _ => None,
            }
        };
        let flag = |v: Option<&redis::Value>| matches!(v, Some(redis::Value::Int(1)));
        match reply.first().and_then(text).as_deref() {
            Some(b"created") => Ok(PairOutcome::Created),
            Some(b"exists") => Ok(PairOutcome::Exists {
                a: flag(reply.get(3))
                    .then(|| reply.get(1).and_then(text))
                    .flatten(),
                b: flag(reply.get(4))
                    .then(|| reply.get(2).and_then(text))
                    .flatten(),
            }),
            _ => Err(StoreError::Unavailable(
                "unexpected reply to create_pair".into(),
            )),
        }
    }

    async fn delete_pair(&self, pair: &Pair<'_>) -> Result<bool, StoreError> {
        let n: i64 = self
            .script_replicated(
                &self.delete_pair,
                &[pair.a, pair.b, pair.index],
                &[pair.va, pair.member.as_bytes()],
                true,
            )
            .await?;
        Ok(n == 1)
    }

    async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(redis::cmd("PUBLISH").arg(channel).arg(message))
            .await?;
        Ok(())
    }

    async fn listen(
        &self,
        channel: &str,
        tx: &tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<(), StoreError> {
        use futures_util::StreamExt;
        // Pub/sub needs a connection of its own. In a cluster, PUBLISH reaches every node,
        // so listening on the first one is enough.
        let info = match &self.target {
            Target::Standalone(info) => (**info).clone(),
            Target::Cluster(nodes) => nodes
                .first()
                .cloned()
                .ok_or_else(|| StoreError::Unavailable("no cluster nodes".into()))?,
            Target::Sentinel {
                sentinels,
                master,
                auth,
            } => {
                let mut sentinel =
                    redis::sentinel::Sentinel::build(sentinels.clone()).map_err(unavailable)?;
                let node = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info((**auth).clone());
                sentinel
                    .async_master_for(master, Some(&node))
                    .await
                    .map_err(unavailable)?
                    .get_connection_info()
                    .clone()
            }
        };
        let client = redis::Client::open(info).map_err(unavailable)?;
        let mut pubsub = tokio::time::timeout(self.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| StoreError::Unavailable("pub/sub connect timed out".into()))?
            .map_err(unavailable)?;
        pubsub.subscribe(channel).await.map_err(unavailable)?;
        if tx.send(String::new()).is_err() {
            return Ok(());
        }
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            if tx.send(text).is_err() {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable("pub/sub connection closed".into()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!("PING answered {pong}")))
        }
    }

    async fn eviction_policy(&self) -> Result<Option<String>, StoreError> {
        let info: redis::Value = self.query(redis::cmd("INFO").arg("memory")).await?;
        let mut texts = Vec::new();
        collect_text(&info, &mut texts);
        let policies: Vec<String> = texts
            .iter()
            .flat_map(|t| t.lines())
            .filter_map(|l| l.trim().strip_prefix("maxmemory_policy:"))
            .map(|p| p.trim().to_string())
            .collect();
        Ok(policies
            .iter()
            .find(|p| super::policy_evicts_links(p))
            .or(policies.first())
            .cloned())
    }
}

/// Every text inside a reply (a cluster answers `INFO` per node).
fn collect_text(value: &redis::Value, out: &mut Vec<String>) {
    match value {
        redis::Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => out.push(s.clone()),
        redis::Value::VerbatimString { text, .. } => out.push(text.clone()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().for_each(|v| collect_text(v, out))
        }
        redis::Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            collect_text(k, out);
            collect_text(v, out);
        }),
        _ => {}
    }
}
