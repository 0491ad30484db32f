//! Schedules in Redis, through fred.
//!
//! Under a prefix `P` (by default `msg:schedules`, written `{P}` in key
//! names so that all keys share one hash slot on a Redis Cluster):
//!
//! | key | |
//! |---|---|
//! | `{P}:wake` | a sorted set of unpaused schedule ids by wake time (due time, or a claim's lease end) |
//! | `{P}:due` | a sorted set of all schedule ids by due time, for `list` |
//! | `{P}:keys` | a hash from idempotency key to schedule id |
//! | `{P}:s:<id>` | a hash per schedule: its message's parts, options, recurrence and state |
//!
//! Every change is one Lua script, so it is atomic: a claim takes the
//! earliest-waking ids and moves them to the lease's end in one step, so
//! two runners never claim one schedule at once. Runners poll: one sleeps
//! until the next wake time it knows of, and at most the
//! [poll interval](RedisStore::with_poll_interval) (by default 1 s), so a
//! schedule another process makes due sooner waits at most that long.
//! Schedules made in the runner's own process are noticed at once.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::Value;
use fred::types::scripts::Script;
use futures::future::BoxFuture;
use msg_core::{Bytes, Error, Message, MessageParts, PublishOptions, Result, Uuid};

use super::{Claim, Next, Store};
use crate::schedule::{Cursor, Filter, IfExists, Page, Schedule, ScheduleId, due_time};
use crate::when::Recurrence;

/// The fields a schedule is read from, in the order the scripts return
/// them.
const FIELDS: [&str; 15] = [
    "id",
    "key",
    "topic",
    "message_id",
    "message_key",
    "headers",
    "payload",
    "ttl_ms",
    "reply_to",
    "recurrence",
    "due_at",
    "paused",
    "fires",
    "claim",
    "wake_at",
];

const INSERT: &str = r"
local id = ARGV[2]
local key = ARGV[3]
if key ~= '' then
  local existing = redis.call('HGET', KEYS[3], key)
  if existing then
    if ARGV[4] == 'keep' then return existing end
    id = existing
    redis.call('DEL', ARGV[1] .. id)
  end
  redis.call('HSET', KEYS[3], key, id)
end
local h = ARGV[1] .. id
redis.call('HSET', h, 'id', id, 'key', key, unpack(ARGV, 5))
local due = redis.call('HGET', h, 'due_at')
redis.call('HSET', h, 'wake_at', due, 'paused', '0', 'fires', '0', 'claim', '')
redis.call('ZADD', KEYS[1], due, id)
redis.call('ZADD', KEYS[2], due, id)
return id
";

const REMOVE: &str = r"
local h = ARGV[1] .. ARGV[2]
local f = redis.call('HMGET', h, 'claim', 'wake_at', 'key')
if not f[2] then return false end
redis.call('DEL', h)
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
if f[3] and f[3] ~= '' then redis.call('HDEL', KEYS[3], f[3]) end
if f[1] ~= '' and tonumber(f[2]) > tonumber(ARGV[3]) then return 1 end
return 0
";

const RESCHEDULE: &str = r"
local h = ARGV[1] .. ARGV[2]
if redis.call('EXISTS', h) == 0 then return 0 end
redis.call('HSET', h, 'due_at', ARGV[3], 'wake_at', ARGV[3], 'claim', '')
if ARGV[4] == '' then
  redis.call('HDEL', h, 'recurrence')
else
  redis.call('HSET', h, 'recurrence', ARGV[4])
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
if redis.call('HGET', h, 'paused') == '0' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
end
return 1
";

const SET_PAUSED: &str = r"
local h = ARGV[1] .. ARGV[2]
if redis.call('EXISTS', h) == 0 then return 0 end
redis.call('HSET', h, 'paused', ARGV[3])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[2])
else
  redis.call('ZADD', KEYS[1], redis.call('HGET', h, 'wake_at'), ARGV[2])
end
return 1
";

const CLAIM: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[5])
local out = {}
for i, id in ipairs(ids) do
  local h = ARGV[1] .. id
  redis.call('ZADD', KEYS[1], ARGV[3], id)
  redis.call('HSET', h, 'claim', ARGV[4], 'wake_at', ARGV[3])
  out[i] = redis.call('HMGET', h, unpack(ARGV, 6))
end
return out
";

const FINISH: &str = r"
for i = 3, #ARGV, 4 do
  local id = ARGV[i]
  local h = ARGV[1] .. id
  if redis.call('HGET', h, 'claim') == ARGV[2] then
    local kind = ARGV[i + 1]
    local at = ARGV[i + 2]
    if kind == 'remove' then
      local key = redis.call('HGET', h, 'key')
      redis.call('DEL', h)
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      if key and key ~= '' then redis.call('HDEL', KEYS[3], key) end
    else
      if kind == 'due' then
        redis.call('HSET', h, 'due_at', at)
        redis.call('HINCRBY', h, 'fires', ARGV[i + 3])
        redis.call('ZADD', KEYS[2], at, id)
      end
      redis.call('HSET', h, 'wake_at', at, 'claim', '')
      if redis.call('HGET', h, 'paused') == '0' then
        redis.call('ZADD', KEYS[1], at, id)
      end
    end
  end
end
return 0
";

const FETCH: &str = r"
local nf = tonumber(ARGV[2])
local fields = {unpack(ARGV, 3, 2 + nf)}
local out = {}
for i = 3 + nf, #ARGV do
  out[#out + 1] = redis.call('HMGET', ARGV[1] .. ARGV[i], unpack(fields))
end
return out
";

const BACKLOG: &str = "return redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])";

const NEXT_WAKE: &str = r"
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then return first[2] end
return false
";

const PAGE: &str = r"
return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES', 'LIMIT', ARGV[3], ARGV[4])
";

/// The scripts, loaded on first use and reloaded after a server restart.
#[derive(Debug)]
struct Scripts {
    insert: Script,
    remove: Script,
    reschedule: Script,
    set_paused: Script,
    claim: Script,
    finish: Script,
    fetch: Script,
    backlog: Script,
    next_wake: Script,
    page: Script,
}

/// Schedules in Redis.
#[derive(Debug)]
pub struct RedisStore {
    client: Client,
    /// `{prefix}:wake`, `{prefix}:due`, `{prefix}:keys`.
    keys: [String; 3],
    /// `{prefix}:s:`, followed by a schedule id.
    hash: String,
    scripts: Scripts,
    poll: Duration,
}

impl RedisStore {
    /// The store over `client` (connected or not: it is connected by
    /// [`migrate`](Store::migrate)), under the prefix `msg:schedules`.
    pub fn new(client: Client) -> Self {
        let lua = Script::from_lua;
        Self {
            client,
            keys: Default::default(),
            hash: String::new(),
            scripts: Scripts {
                insert: lua(INSERT),
                remove: lua(REMOVE),
                reschedule: lua(RESCHEDULE),
                set_paused: lua(SET_PAUSED),
                claim: lua(CLAIM),
                finish: lua(FINISH),
                fetch: lua(FETCH),
                backlog: lua(BACKLOG),
                next_wake: lua(NEXT_WAKE),
                page: lua(PAGE),
            },
            poll: Duration::from_secs(1),
        }
        .with_prefix("msg:schedules")
    }

    /// A store on the server at `url` (`redis://host:port/db`).
    pub fn connect_url(url: &str) -> Result<Self> {
        let config = fred::types::config::Config::from_url(url)
            .map_err(|e| Error::invalid_config_with("the Redis URL of the schedule store", e))?;
        let client = fred::types::Builder::from_config(config)
            .build()
            .map_err(redis_error)?;
        Ok(Self::new(client))
    }

    /// Keeps the schedules under `prefix` (its keys are `{prefix}:...`).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        let p = format!("{{{prefix}}}");
        self.keys = [format!("{p}:wake"), format!("{p}:due"), format!("{p}:keys")];
        self.hash = format!("{p}:s:");
        self
    }

    /// How soon a runner notices a schedule another process made due
    /// sooner than anything it knew of; by default 1 s.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    async fn run(&self, script: &Script, args: Vec<Value>) -> Result<Value> {
        script
            .evalsha_with_reload(&self.client, self.keys.to_vec(), args)
            .await
            .map_err(redis_error)
    }

    /// Schedules by id, as `HMGET` returns them; a vanished one is skipped.
    async fn fetch(&self, ids: &[String], now: i64) -> Result<Vec<Schedule>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            Value::from(self.hash.as_str()),
            (FIELDS.len() as i64).into(),
        ];
        args.extend(FIELDS.iter().map(|f| Value::from(*f)));
        args.extend(ids.iter().map(|id| Value::from(id.as_str())));
        let rows = self.run(&self.scripts.fetch, args).await?;
        rows.into_array()
            .into_iter()
            .filter_map(|row| decode(row, now).transpose())
            .collect()
    }
}

fn redis_error(e: fred::error::Error) -> Error {
    use fred::error::ErrorKind;
    match e.kind() {
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure => {
            Error::store_retryable(e)
        }
        _ => Error::store_permanent(e),
    }
}

/// A schedule from its fields in [`FIELDS`] order; `None` for a schedule
/// that does not exist (all fields nil).
fn decode(row: Value, now: i64) -> Result<Option<Schedule>> {
    let mut fields = row.into_array().into_iter();
    let mut next = || fields.next().unwrap_or(Value::Null);
    let text = |v: Value| v.into_string().filter(|s| !s.is_empty());
    let Some(id) = text(next()) else {
        return Ok(None);
    };
    let corrupt = |what: &str| Error::Decode(format!("schedule {id}: {what}").into());
    let int = |v: Value| v.as_i64();
    let key = text(next());
    let topic = text(next()).ok_or_else(|| corrupt("no topic"))?;
    let message_id = text(next()).ok_or_else(|| corrupt("no message id"))?;
    let message_key = text(next());
    let headers = text(next()).ok_or_else(|| corrupt("no headers"))?;
    let payload = next().into_owned_bytes().unwrap_or_default();
    let ttl_ms = int(next());
    let reply_to = text(next());
    let recurrence = text(next());
    let due_at = int(next()).ok_or_else(|| corrupt("no due time"))?;
    let paused = text(next()).as_deref() == Some("1");
    let fires = int(next()).unwrap_or(0);
    let claim = text(next());
    let wake_at = int(next()).unwrap_or(due_at);
    let mut options = PublishOptions::new();
    if let Some(ttl) = ttl_ms {
        options = options.ttl(Duration::from_millis(u64::try_from(ttl).unwrap_or(0)));
    }
    if let Some(reply_to) = reply_to {
        options = options.reply_to(reply_to);
    }
    Ok(Some(Schedule {
        id: id.parse()?,
        key,
        topic,
        message: Message::from_parts(MessageParts {
            id: Uuid::parse_str(&message_id).map_err(|_| corrupt("message id"))?,
            key: message_key,
            payload: Bytes::from(payload),
            headers: serde_json::from_str(&headers).map_err(|_| corrupt("headers"))?,
        }),
        options,
        due: due_time(due_at),
        recurrence: recurrence
            .map(|r| serde_json::from_str::<Recurrence>(&r))
            .transpose()
            .map_err(|_| corrupt("recurrence"))?,
        paused,
        fires: u64::try_from(fires).unwrap_or(0),
        firing: claim.is_some() && wake_at > now,
    }))
}

fn encode_fields(schedule: &Schedule) -> Result<Vec<Value>> {
    let mut fields: Vec<(&str, Value)> = vec![
        ("topic", schedule.topic.as_str().into()),
        ("message_id", schedule.message.id().to_string().into()),
        (
            "headers",
            serde_json::to_string(&schedule.message.headers().iter().collect::<Vec<_>>())
                .map_err(|e| Error::Encode(e.into()))?
                .into(),
        ),
        ("payload", Value::Bytes(schedule.message.payload().clone())),
        ("due_at", schedule.due_millis().into()),
    ];
    if let Some(key) = schedule.message.key() {
        fields.push(("message_key", key.into()));
    }
    if let Some(ttl) = schedule.options.ttl {
        fields.push((
            "ttl_ms",
            i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).into(),
        ));
    }
    if let Some(reply_to) = &schedule.options.reply_to {
        fields.push(("reply_to", reply_to.as_str().into()));
    }
    if let Some(recurrence) = &schedule.recurrence {
        let json = serde_json::to_string(recurrence).map_err(|e| Error::Encode(e.into()))?;
        fields.push(("recurrence", json.into()));
    }
    Ok(fields
        .into_iter()
        .flat_map(|(name, value)| [Value::from(name), value])
        .collect())
}

impl Store for RedisStore {
    fn migrate(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // Nothing to create; connect, so that a wrong URL fails here.
            if !self.client.is_connected() {
                self.client.init().await.map_err(redis_error)?;
            }
            Ok(())
        })
    }

    fn insert(&self, schedule: Schedule, if_exists: IfExists) -> BoxFuture<'_, Result<ScheduleId>> {
        Box::pin(async move {
            let mut args = vec![
                Value::from(self.hash.as_str()),
                schedule.id.to_string().into(),
                schedule.key.as_deref().unwrap_or("").into(),
                match if_exists {
                    IfExists::Keep => "keep",
                    IfExists::Replace => "replace",
                }
                .into(),
            ];
            args.extend(encode_fields(&schedule)?);
            let id = self.run(&self.scripts.insert, args).await?;
            id.into_string()
                .ok_or_else(|| Error::Decode("the store returned no schedule id".into()))?
                .parse()
        })
    }

    fn remove(&self, id: ScheduleId, now: i64) -> BoxFuture<'_, Result<Option<bool>>> {
        Box::pin(async move {
            let args = vec![self.hash.as_str().into(), id.to_string().into(), now.into()];
            let firing = self.run(&self.scripts.remove, args).await?;
            Ok(firing.as_i64().map(|f| f == 1))
        })
    }

    fn get(&self, id: ScheduleId, now: i64) -> BoxFuture<'_, Result<Option<Schedule>>> {
        Box::pin(async move { Ok(self.fetch(&[id.to_string()], now).await?.pop()) })
    }

    fn list(&self, filter: Filter, now: i64) -> BoxFuture<'_, Result<Page>> {
        Box::pin(async move {
            const CHUNK: i64 = 256;
            let min = filter
                .after
                .map(|c| c.due)
                .into_iter()
                .chain(filter.due_after)
                .max();
            let min = min.map_or("-inf".to_owned(), |m| m.to_string());
            let max = filter
                .due_before
                .map_or("+inf".to_owned(), |b| format!("({b}"));
            let mut found = Vec::new();
            let mut offset = 0;
            while found.len() <= filter.limit {
                let args = vec![
                    Value::from(min.as_str()),
                    max.as_str().into(),
                    offset.into(),
                    CHUNK.into(),
                ];
                let page = self.run(&self.scripts.page, args).await?.into_array();
                if page.is_empty() {
                    break;
                }
                offset += (page.len() / 2) as i64;
                let ids: Vec<String> = page
                    .chunks(2)
                    .filter_map(|pair| {
                        let id = pair[0].clone().into_string()?;
                        let due = pair[1].as_f64()? as i64;
                        let past = |c: Cursor| (due, id.as_str()) > (c.due, &*c.id.to_string());
                        filter.after.is_none_or(past).then_some(id)
                    })
                    .collect();
                found.extend(
                    self.fetch(&ids, now)
                        .await?
                        .into_iter()
                        .filter(|s| filter.matches(s)),
                );
            }
            found.sort_by_key(|s| (s.due_millis(), s.id));
            found.truncate(filter.limit + 1);
            Ok(Page::of(found, filter.limit))
        })
    }

    fn reschedule(
        &self,
        id: ScheduleId,
        due: i64,
        recurrence: Option<Recurrence>,
    ) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let recurrence = recurrence
                .map(|r| serde_json::to_string(&r))
                .transpose()
                .map_err(|e| Error::Encode(e.into()))?
                .unwrap_or_default();
            let args = vec![
                self.hash.as_str().into(),
                id.to_string().into(),
                due.into(),
                recurrence.into(),
            ];
            Ok(self.run(&self.scripts.reschedule, args).await?.as_i64() == Some(1))
        })
    }

    fn set_paused(&self, id: ScheduleId, paused: bool) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let args = vec![
                self.hash.as_str().into(),
                id.to_string().into(),
                if paused { "1" } else { "0" }.into(),
            ];
            Ok(self.run(&self.scripts.set_paused, args).await?.as_i64() == Some(1))
        })
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<Schedule>>> {
        Box::pin(async move {
            let mut args = vec![
                Value::from(self.hash.as_str()),
                claim.now.into(),
                claim.lease_until.into(),
                claim.token.to_string().into(),
                i64::try_from(claim.limit).unwrap_or(i64::MAX).into(),
            ];
            args.extend(FIELDS.iter().map(|f| Value::from(*f)));
            let rows = self.run(&self.scripts.claim, args).await?;
            let mut schedules = rows
                .into_array()
                .into_iter()
                .filter_map(|row| decode(row, claim.now).transpose())
                .collect::<Result<Vec<_>>>()?;
            for s in &mut schedules {
                s.firing = false;
            }
            schedules.sort_by_key(|s| (s.due, s.id));
            Ok(schedules)
        })
    }

    fn finish(&self, token: Uuid, outcomes: Vec<(ScheduleId, Next)>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut args = vec![Value::from(self.hash.as_str()), token.to_string().into()];
            for (id, next) in outcomes {
                let (kind, at, fires) = match next {
                    Next::Remove => ("remove", 0, 0),
                    Next::Due { at, fires } => ("due", at, i64::from(fires)),
                    Next::Retry(at) => ("retry", at, 0),
                };
                args.extend([id.to_string().into(), kind.into(), at.into(), fires.into()]);
            }
            self.run(&self.scripts.finish, args).await.map(drop)
        })
    }

    fn next_wake(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move {
            let score = self.run(&self.scripts.next_wake, Vec::new()).await?;
            Ok(score.as_f64().map(|s| s as i64))
        })
    }

    fn backlog(&self, now: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let count = self.run(&self.scripts.backlog, vec![now.into()]).await?;
            Ok(count.as_u64().unwrap_or(0))
        })
    }

    fn poll_interval(&self) -> Duration {
        self.poll
    }
}
