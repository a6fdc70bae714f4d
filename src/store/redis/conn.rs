//! The connection behind the Redis backend: where Redis is (`Target`, from `[redis]`), the
//! one shared connection opened on first use (`Conn`), and running commands and Lua
//! scripts over it: a sentinel-resolved connection that failed is forgotten so the next
//! command asks the sentinels again, and a write that must survive a failover waits for a
//! replica of the master that took it (`confirm_replicated`; on a Cluster, the master of the
//! slot its keys share).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, FromRedisValue, Script, Value};

use super::{millis, RedisBackend};
use crate::config::{Redis as RedisConfig, RedisMode};
use crate::store::StoreError;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(super) enum Target {
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
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// A connection to the master the sentinels named; dropped on error so the next
    /// command asks them again (after a failover, the new master).
    Sentinel(redis::aio::MultiplexedConnection),
}

/// A Redis failure, kept as the cause.
pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
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

// === impl Target ===

impl Target {
    /// Where `[redis]` says Redis is, with its credentials.
    pub(super) fn new(config: &RedisConfig) -> Result<Self, String> {
        let password = config.password.as_ref().map(|p| p.expose().as_str());
        let username = config.username.as_deref();
        Ok(match config.mode {
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
        })
    }
}

// === impl RedisBackend ===

impl RedisBackend {
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

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
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

    pub(super) async fn script<T: FromRedisValue>(
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
    pub(super) async fn script_replicated<T: FromRedisValue>(
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
                Ok(v) if replicated => confirm_replicated(Via::Conn(&mut c), wait)
                    .await
                    .map(|()| v),
                other => other,
            },
            // On a Cluster, the check and the WAIT go to the master of the slot the script's
            // keys share (one hash tag), over the connection the script's write went out on.
            Conn::Cluster(mut c) => match run(&invocation, &mut c).await {
                Ok(v) if replicated => {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        Route::with_key(
                            keys.first().copied().unwrap_or_default(),
                            SlotAddr::Master,
                        ),
                    ));
                    confirm_replicated(Via::<ClusterConnection>::Slot(&mut c, route), wait)
                        .await
                        .map(|()| v)
                }
                other => other,
            },
            Conn::Sentinel(mut c) => match run(&invocation, &mut c).await {
                Ok(v) if replicated => confirm_replicated(Via::Conn(&mut c), wait)
                    .await
                    .map(|()| v),
                other => other,
            },
        };
        if result.is_err() {
            self.failed().await;
        }
        result
    }
}

/// Where [`confirm_replicated`] sends its commands: the connection that carried the write,
/// or on a Cluster the master of the write's slot (over the cluster's one connection to it).
enum Via<'a, C> {
    Conn(&'a mut C),
    Slot(&'a mut ClusterConnection, RoutingInfo),
}

impl<C: ConnectionLike> Via<'_, C> {
    async fn send(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match self {
            Via::Conn(c) => cmd.query_async(&mut **c).await,
            Via::Slot(c, route) => c.route_command(cmd.clone(), route.clone()).await,
        }
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
    mut via: Via<'_, C>,
    wait: Duration,
) -> Result<(), StoreError> {
    let parse = |e: redis::ParsingError| StoreError::Unavailable(format!("replication: {e}"));
    let mut info = redis::cmd("INFO");
    info.arg("replication");
    let info: String =
        redis::from_redis_value(via.send(&info).await.map_err(unavailable)?).map_err(parse)?;
    let replicas: u64 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    if replicas == 0 {
        tracing::warn!("link write on a Redis master with no replica connected: a failover before it is replicated loses it");
        return Ok(());
    }
    let mut wait_cmd = redis::cmd("WAIT");
    wait_cmd.arg(1).arg(millis(wait));
    let acked: u64 =
        redis::from_redis_value(via.send(&wait_cmd).await.map_err(unavailable)?).map_err(parse)?;
    if acked >= 1 {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "no replica confirmed the write within {wait:?}"
        )))
    }
}
