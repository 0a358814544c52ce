//! Which sockets a user has open: Redis, in the user's slot, with API Gateway's 2 h limit as TTL.

use std::{collections::HashMap, time::Duration};

use devconnect::{keys, store::Store, user, AppError};
use redis::AsyncCommands;

/// API Gateway closes WebSocket connections after 2 hours at most.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(2 * 3600);

/// Records a new connection of `user_id`: one round trip.
pub async fn register(store: &Store, user_id: &str, connection_id: &str) -> Result<(), AppError> {
    let now = user::now_ms();
    let expires = now + MAX_CONNECTION_AGE.as_millis() as i64;
    redis::pipe()
        .set_ex(keys::socket_owner(connection_id), user_id, MAX_CONNECTION_AGE.as_secs())
        .ignore()
        .zadd(keys::sockets(user_id), connection_id, expires)
        .ignore()
        .zrembyscore(keys::sockets(user_id), "-inf", now)
        .ignore()
        .pexpire(keys::sockets(user_id), MAX_CONNECTION_AGE.as_millis() as i64)
        .ignore()
        .query_async::<()>(&mut store.conn())
        .await?;
    Ok(())
}

/// The user a connection belongs to, if it is known.
pub async fn owner(store: &Store, connection_id: &str) -> Result<Option<String>, AppError> {
    Ok(store.conn().get(keys::socket_owner(connection_id)).await?)
}

/// Forgets a connection; returns how many the user still has open.
pub async fn unregister(store: &Store, user_id: &str, connection_id: &str) -> Result<i64, AppError> {
    let (left,): (i64,) = redis::pipe()
        .del(keys::socket_owner(connection_id))
        .ignore()
        .zrem(keys::sockets(user_id), connection_id)
        .ignore()
        .zcount(keys::sockets(user_id), user::now_ms(), "+inf")
        .query_async(&mut store.conn())
        .await?;
    Ok(left)
}

/// Open connections of each user: one round trip. `Err` if Redis could not be used;
/// otherwise each user's own result (a broken key fails only that user).
pub async fn of_users(store: &Store, users: &[String]) -> Result<PerUser, AppError> {
    let now = user::now_ms();
    per_user(store, users, |pipe, u| {
        pipe.zrangebyscore(keys::sockets(u), now, "+inf");
    })
    .await
}

/// Connections (the social kind) of each user: one round trip, results as [`of_users`].
pub async fn friends_of(store: &Store, users: &[String]) -> Result<PerUser, AppError> {
    per_user(store, users, |pipe, u| {
        pipe.zrange(keys::connections(u), 0, -1);
    })
    .await
}

/// A list of ids per user, or why that user's list could not be read.
pub type PerUser = HashMap<String, Result<Vec<String>, AppError>>;

async fn per_user(
    store: &Store,
    users: &[String],
    command: impl Fn(&mut redis::Pipeline, &str),
) -> Result<PerUser, AppError> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for u in users {
        command(&mut pipe, u);
    }
    let lists: Vec<redis::RedisResult<Vec<String>>> = pipe.query_async(&mut store.conn()).await?;
    Ok(users
        .iter()
        .cloned()
        .zip(lists.into_iter().map(|l| l.map_err(AppError::from)))
        .collect())
}

/// Whether `other` is one of `me`'s connections.
pub async fn are_connected(store: &Store, me: &str, other: &str) -> Result<bool, AppError> {
    let score: Option<f64> = store.conn().zscore(keys::connections(me), other).await?;
    Ok(score.is_some())
}

/// Removes connections API Gateway reported gone (410): one round trip.
pub async fn remove_stale(store: &Store, stale: &[(String, String)]) -> Result<(), AppError> {
    if stale.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (user_id, connection_id) in stale {
        pipe.zrem(keys::sockets(user_id), connection_id)
            .ignore()
            .del(keys::socket_owner(connection_id))
            .ignore();
    }
    pipe.query_async::<()>(&mut store.conn()).await?;
    Ok(())
}
