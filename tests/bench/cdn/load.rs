//! wrk's Lua scripts: the 10,000-object Zipf set (s = 1), a sequential pass
//! that fills a cache, and the JSON line wrk prints at the end.

/// Objects in the set.
pub const OBJECTS: u32 = 10_000;

const REPORT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// Requests drawn from a Zipf distribution over the set's `size`-byte objects.
pub fn zipf(size: u32) -> String {
    format!(
        r#"
local n = {OBJECTS}
local cdf = {{}}
local h = 0
for i = 1, n do h = h + 1 / i end
local acc = 0
for i = 1, n do acc = acc + (1 / i) / h; cdf[i] = acc end
math.randomseed(42)
request = function()
  local r = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", "/o/{size}/" .. lo)
end
{REPORT}"#
    )
}

/// Every object of the set in turn (`count` of them from `first`), over and over.
pub fn sequential(size: u32, first: u32, count: u32) -> String {
    format!(
        r#"
local i = 0
request = function()
  local k = {first} + (i % {count})
  i = i + 1
  return wrk.format("GET", "/o/{size}/" .. k)
end
{REPORT}"#
    )
}
