//! The key layout and the server: every key of queue `NAME` shares the hash
//! tag `{forloop:NAME}`, so a queue would live in one Redis Cluster slot (the
//! client is not cluster-aware yet); the server comes from the address, else
//! `REDIS_URL`, else [`DEFAULT_URL`].

use forloop_core::kit::Env;

/// The default server when neither a URL nor `REDIS_URL` is given.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// The variable that names the server when the address does not.
pub const URL_ENV: &str = "REDIS_URL";

/// The keys of one queue, by name. The Lua scripts take them as `KEYS[1]`
/// to `KEYS[12]` in the order of [`QueueKeys::in_script_order`], and name
/// them there once (`src/lua/common.lua`, `K_READY` ...; a test holds the
/// two lists together). The last three are the ledger's
/// ([`crate::RedisLedger`]); each job adds its own keys, [`job_key`].
pub(crate) struct QueueKeys {
    /// Members waiting for a worker, FIFO (list).
    pub(crate) ready: String,
    /// Leases `ID:ATTEMPT:NONCE` → deadline (sorted set).
    pub(crate) leased: String,
    /// Members → when a nacked item is due again (sorted set).
    pub(crate) delayed: String,
    /// Id → the stored item (hash).
    pub(crate) payload: String,
    /// Id → attributes of items stored before envelopes (hash).
    pub(crate) attrs: String,
    /// Dead-lettered members, oldest first (list).
    pub(crate) dead: String,
    /// Id → why it died (hash).
    pub(crate) reason: String,
    /// The id counter (string).
    pub(crate) seq: String,
    /// Markers that wake blocked pullers (list).
    pub(crate) wake: String,
    /// Job → manifest (hash).
    pub(crate) jobs: String,
    /// Job → first and last settlement (hash).
    pub(crate) settled: String,
    /// Every job with keys, for `delete` (set).
    pub(crate) ledger: String,
}

impl QueueKeys {
    /// The keys of queue `name`.
    pub(crate) fn new(name: &str) -> Self {
        Self {
            ready: key(name, "ready"),
            leased: key(name, "leased"),
            delayed: key(name, "delayed"),
            payload: key(name, "payload"),
            attrs: key(name, "attrs"),
            dead: key(name, "dead"),
            reason: key(name, "reason"),
            seq: key(name, "seq"),
            wake: key(name, "wake"),
            jobs: key(name, "jobs"),
            settled: key(name, "settled"),
            ledger: key(name, "ledger"),
        }
    }

    /// The keys as every script takes them: `KEYS[1]` is `ready`, ...
    pub(crate) fn in_script_order(&self) -> [&str; 12] {
        [
            &self.ready,
            &self.leased,
            &self.delayed,
            &self.payload,
            &self.attrs,
            &self.dead,
            &self.reason,
            &self.seq,
            &self.wake,
            &self.jobs,
            &self.settled,
            &self.ledger,
        ]
    }
}

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
        assert_eq!(QueueKeys::new("v").wake, "{forloop:v}:wake");
        assert_eq!(job_key("v", "j-1", "done"), "{forloop:v}:job:j-1:done");
        let env = Env::empty().with(URL_ENV, "redis://r:1");
        assert_eq!(server_url_in(Some("redis://a"), &env), "redis://a");
        assert_eq!(server_url_in(None, &env), "redis://r:1");
        assert_eq!(server_url_in(None, &Env::empty()), DEFAULT_URL);
    }

    /// `common.lua` names the keys once, `local K_READY, ... = KEYS[1], ...`:
    /// each `KEYS[i]` it names `K_PART` is `PART`'s key in
    /// [`QueueKeys::in_script_order`].
    #[test]
    fn the_scripts_name_each_key_as_the_driver_does() {
        let lua = include_str!("lua/common.lua");
        let start = lua.find("local K_").expect("common.lua names its keys");
        let end = start + lua[start..].find("\n\n").expect("a blank line after them");
        let words: Vec<&str> = lua[start..end]
            .split(|c: char| c == ',' || c == '=' || c.is_whitespace())
            .filter(|word| !word.is_empty() && *word != "local")
            .collect();
        let names: Vec<String> = words
            .iter()
            .filter_map(|word| word.strip_prefix("K_"))
            .map(str::to_lowercase)
            .collect();
        let places: Vec<usize> = words
            .iter()
            .filter_map(|word| word.strip_prefix("KEYS[")?.strip_suffix(']')?.parse().ok())
            .collect();
        let keys = QueueKeys::new("v");
        let order = keys.in_script_order();
        assert_eq!(names.len(), order.len(), "common.lua names {names:?}");
        assert_eq!(places.len(), order.len(), "common.lua takes {places:?}");
        for (name, place) in names.iter().zip(places) {
            assert_eq!(
                order[place - 1],
                key("v", name),
                "common.lua calls KEYS[{place}] K_{}",
                name.to_uppercase()
            );
        }
    }
}
