//! The key layout and the server: every key of queue `NAME` shares the hash
//! tag `{forloop:NAME}`, so a queue would live in one Redis Cluster slot (the
//! client is not cluster-aware yet); the server comes from the address, else
//! `REDIS_URL`, else [`DEFAULT_URL`].

use forloop_core::kit::Env;

/// The default server when neither a URL nor `REDIS_URL` is given.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// The variable that names the server when the address does not.
pub const URL_ENV: &str = "REDIS_URL";

/// The keys of one queue, in the order the Lua scripts take them
/// (`src/lua/common.lua`).
/// The last three are the ledger's ([`crate::RedisLedger`]); each job adds
/// its own keys, [`job_key`].
pub(crate) const PARTS: [&str; 12] = [
    "ready", "leased", "delayed", "payload", "attrs", "dead", "reason", "seq", "wake", "jobs",
    "settled", "ledger",
];

/// The key `part` of queue `name`.
pub(crate) fn key(name: &str, part: &str) -> String {
    format!("{{forloop:{name}}}:{part}")
}

/// The key `part` (`submitted`, `done`, `dead`, `receipts`) of `job` in
/// queue `name`, as `src/lua/common.lua` spells it.
pub(crate) fn job_key(name: &str, job: &str, part: &str) -> String {
    key(name, &format!("job:{job}:{part}"))
}

/// The list of items waiting for a worker.
pub(crate) fn ready(name: &str) -> String {
    key(name, "ready")
}

/// The server: `url` when the address gave one, else [`URL_ENV`], else
/// [`DEFAULT_URL`]. The one place this driver reads the environment.
pub(crate) fn server_url(url: Option<&str>) -> String {
    server_url_in(url, &Env::from_process(&[URL_ENV]))
}

/// [`server_url`] with the environment given.
pub(crate) fn server_url_in(url: Option<&str>, env: &Env) -> String {
    url.or(env.get(URL_ENV)).unwrap_or(DEFAULT_URL).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_and_the_server_falls_back() {
        assert_eq!(ready("videos"), "{forloop:videos}:ready");
        assert_eq!(key("v", PARTS[8]), "{forloop:v}:wake");
        assert_eq!(job_key("v", "j-1", "done"), "{forloop:v}:job:j-1:done");
        let env = Env::empty().with(URL_ENV, "redis://r:1");
        assert_eq!(server_url_in(Some("redis://a"), &env), "redis://a");
        assert_eq!(server_url_in(None, &env), "redis://r:1");
        assert_eq!(server_url_in(None, &Env::empty()), DEFAULT_URL);
    }
}
