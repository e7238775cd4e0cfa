//! Sessions shared by every worker through Redis, or kept in one worker's memory when
//! Redis can't be reached (with a message saying what that costs).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

/// How long a session lives without use.
const TTL_SECS: u64 = 3600;

pub enum Sessions {
    Redis(ConnectionManager),
    Memory(Mutex<HashMap<String, String>>),
}

impl Sessions {
    /// Connects to `REDIS_URL` (default redis://127.0.0.1:6379), giving up after a second.
    pub async fn connect() -> Sessions {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let connected = async {
            let client = redis::Client::open(url.as_str())?;
            let mut manager = ConnectionManager::new(client).await?;
            let _: String = redis::cmd("PING").query_async(&mut manager).await?;
            Ok::<_, redis::RedisError>(manager)
        };
        match tokio::time::timeout(Duration::from_secs(1), connected).await {
            Ok(Ok(manager)) => Sessions::Redis(manager),
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 1s".into(),
                };
                eprintln!(
                    "corral-web: Redis at {url} is not reachable ({why}); sessions are kept in this \
                     worker's memory, so other workers don't see them and a restart loses them. \
                     Start redis-server or set REDIS_URL."
                );
                Sessions::Memory(Mutex::new(HashMap::new()))
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Sessions::Redis(_) => "redis",
            Sessions::Memory(_) => "memory",
        }
    }

    pub async fn create(&self, user: &str) -> Result<String, redis::RedisError> {
        let sid = new_id();
        match self {
            Sessions::Redis(manager) => {
                let mut conn = manager.clone();
                let _: () = conn.set_ex(key(&sid), user, TTL_SECS).await?;
            }
            Sessions::Memory(map) => {
                map.lock()
                    .expect("sessions lock")
                    .insert(sid.clone(), user.to_owned());
            }
        }
        Ok(sid)
    }

    pub async fn user(&self, sid: &str) -> Result<Option<String>, redis::RedisError> {
        match self {
            Sessions::Redis(manager) => {
                let mut conn = manager.clone();
                conn.get(key(sid)).await
            }
            Sessions::Memory(map) => Ok(map.lock().expect("sessions lock").get(sid).cloned()),
        }
    }
}

fn key(sid: &str) -> String {
    format!("corral-web:session:{sid}")
}

/// 128 random bits from the kernel, as hex.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
