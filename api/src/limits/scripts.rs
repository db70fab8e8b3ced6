//! The Lua scripts Redis runs for the shared limits (`shared`): the minute policy and the daily
//! quota of a caller together, and a minute policy alone (the client IP's budget). Each runs
//! atomically in Redis, on Redis's clock.

/// The Lua both scripts start their minute policy with: Redis's clock in microseconds (`now`),
/// the policy's emission interval and window from the quota per minute in `ARGV[1]`, and the
/// subject's stored theoretical arrival time (`tat`) from `KEYS[1]`, carried over to this quota
/// when it was kept under another: the requests still owed stay owed, each taking the new
/// interval to come back, at most a window (`gcra::rescale`). The last key, which `keep_tat`
/// writes, says which quota: `<quota>:<tat>`, believed only while that TAT is the stored one,
/// so a TAT with no quota beside it, or one an earlier version wrote after it (during a rolling
/// upgrade), is taken as kept under this quota. A TAT carried over is stored even when the
/// request is refused, so the wait the refusal announces is the wait there is; unless it was
/// cut to a window (`cut`: how long until the stored TAT lets one request through, as
/// `gcra::wait_if_cut`), which is a decision's view and never replaces the stored TAT. A macro, not a
/// `const`, so that `concat!` can join it into each script at compile time.
macro_rules! gcra_preamble {
    () => {
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local quota = math.max(tonumber(ARGV[1]), 1)
local interval = math.max(math.floor(60000000 / quota), 1)
local window = interval * quota
local stored_tat = redis.call('GET', KEYS[1]) or '0'
local tat = tonumber(stored_tat)
local kept, kept_tat = string.match(redis.call('GET', KEYS[#KEYS]) or '', '^(%d+):(%d+)$')
kept = tonumber(kept)
local rescaled = kept and kept_tat == stored_tat and kept ~= quota and tat > now
local cut = false
if rescaled then
  local kept_interval = math.max(math.floor(60000000 / kept), 1)
  local owed = math.ceil((tat - now) * interval / kept_interval)
  if owed > window then
    cut = math.max(tat - now - math.floor((window - interval) * kept_interval / interval), 0)
  end
  tat = now + math.min(owed, window)
end
local function keep_tat(new_tat)
  local ttl = math.floor((new_tat - now) / 1000) + 1000
  local text = string.format('%.0f', new_tat)
  redis.call('SET', KEYS[1], text, 'PX', ttl)
  redis.call('SET', KEYS[#KEYS], string.format('%.0f', quota) .. ':' .. text, 'PX', ttl)
end
"#
    };
}

/// KEYS: the subject's TAT for the policy, its daily counter, the replicas' shares the counter
/// was started from, the quota the TAT was kept under.
/// ARGV: quota per minute, daily quota, the day's count to start from when Redis has none (''
/// when the caller has not read it: the script then answers `{-1}` and decides nothing), the
/// counter's time to live, the count the calling replica knows of (what Redis last told it plus
/// what it allowed on its own while Redis was unreachable), the part of it Redis has not
/// counted, how far ahead of now (microseconds) the replica's own TAT lies, the replica's name,
/// every request it counted that day, and, with a start, each replica's share of it (name,
/// count pairs). The count Redis has is raised by the part it has not counted (the replicas cut
/// off together each add their own: none is lost), less what the replica's share brought in
/// when the count was started again from the stored shares (Redis lost the day during the
/// outage and another replica restarted it), and never stays below what the replica knows of;
/// a count started here already holds every replica's share. The TAT is raised to the
/// replica's own: the minute budget it spent on its own is not granted again when Redis
/// answers.
/// Returns: minute allowed, remaining, microseconds until reset (or retry), daily allowed,
/// used today, and 1 when the stored TAT was left as it was, cut (the retry is then its wait,
/// not a TAT's distance from now). Times are whole microseconds, so the interval is rounded down and the burst
/// tolerance is exactly `quota` intervals (a quota above 60 million a minute is held to one
/// request per microsecond after its burst). A TAT is kept a second longer than it lies ahead
/// (after that it is in the past, which a missing one means too), however long the window.
pub(super) const SCRIPT: &str = concat!(
    r#"
local stored = redis.call('GET', KEYS[2])
if not stored and ARGV[3] == '' then
  return {-1}
end
"#,
    gcra_preamble!(),
    r#"
tat = math.max(tat, now + tonumber(ARGV[7]))
local unshared = tonumber(ARGV[6])
if stored and unshared > 0 then
  -- The last `unshared` of the replica's `own` requests: those its share in the count's start
  -- held are in the count already.
  local share = tonumber(redis.call('HGET', KEYS[3], ARGV[8]) or '0')
  local before = tonumber(ARGV[9]) - unshared
  unshared = unshared - math.min(unshared, math.max(share - before, 0))
end
local used = math.max(tonumber(stored or ARGV[3]) + (stored and unshared or 0), tonumber(ARGV[5]))
if not stored then
  redis.call('DEL', KEYS[3])
  for i = 10, #ARGV - 1, 2 do
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[4]))
end
if not stored or used > tonumber(stored) then
  -- Keep the start even if this request is refused, so the next one needs no seed.
  redis.call('SET', KEYS[2], used, 'EX', tonumber(ARGV[4]))
end
local daily_ok = used < tonumber(ARGV[2])
local new_tat = math.max(tat, now) + interval
local minute_ok = new_tat - now <= window
local remaining = 0
local pending = new_tat - now - window
if cut then
  pending = math.max(pending, cut)
end
if minute_ok then
  remaining = math.floor((window - (new_tat - now)) / interval)
  pending = new_tat - now
end
if minute_ok and daily_ok then
  keep_tat(new_tat)
  used = used + 1
  redis.call('SET', KEYS[2], used, 'EX', tonumber(ARGV[4]))
elseif rescaled and not cut then
  keep_tat(tat)
end
return {minute_ok and 1 or 0, remaining, math.floor(pending), daily_ok and 1 or 0, used, cut and 1 or 0}
"#
);

/// KEYS: the subject's TAT for the policy, the quota it was kept under. ARGV: quota per minute, how far ahead of now the
/// replica's own TAT lies (as in `SCRIPT`). Returns: allowed, remaining, microseconds until
/// reset (or retry), and 1 when the stored TAT was left as it was, cut. `SCRIPT`'s minute policy alone, for a budget with no daily quota (the
/// client IP's).
pub(super) const MINUTE_SCRIPT: &str = concat!(
    gcra_preamble!(),
    r#"
tat = math.max(tat, now + tonumber(ARGV[2]))
local new_tat = math.max(tat, now) + interval
if new_tat - now <= window then
  keep_tat(new_tat)
  return {1, math.floor((window - (new_tat - now)) / interval), new_tat - now, 0}
end
if rescaled and not cut then
  keep_tat(tat)
end
return {0, 0, math.max(new_tat - now - window, cut or 0), cut and 1 or 0}
"#
);
