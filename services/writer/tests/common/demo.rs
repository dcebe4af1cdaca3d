//! The demo's writer and reader in-process on any store URL. Apart from `common/mod.rs`
//! because the reader crate's tests share that file and cannot name the `writer` crate.

use super::common::{InProcess, SECRET};

/// The demo's writer and reader in-process on `redis_url`, with [`SECRET`].
pub async fn demo_on(redis_url: &str) -> (InProcess, InProcess) {
    (
        InProcess::start(writer::app, redis_url, SECRET).await,
        InProcess::start(reader::app, redis_url, SECRET).await,
    )
}
