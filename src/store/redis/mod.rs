//! The Redis backend: standalone (one URL), Sentinel (the master the sentinels name) or
//! Cluster (seed nodes). The connection is opened lazily inside the serving runtime on first
//! use and re-established after failures (src/store/redis/conn.rs), so linkgate starts while
//! Redis is down and recovers by itself when it comes back. Commands that must be atomic
//! are single commands (`SET NX PX`) or Lua scripts over keys that share a hash tag; this
//! file holds the scripts and maps each [`Backend`] operation onto a command or a script.

mod conn;

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use tokio::sync::Mutex;

use super::{Backend, Pair, PairOutcome, StoreError};
use crate::config::Redis as RedisConfig;
use conn::{unavailable, Conn, Target};

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

impl RedisBackend {
    /// Prepares a backend from `[redis]`; connects on first use.
    pub fn new(config: &RedisConfig) -> Result<Self, String> {
        let target = Target::new(config)?;
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
