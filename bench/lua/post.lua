-- POST one JSON body per request, for the stability-gateway benchmark.
--
-- Script arguments (after `--` on the wrk command line):
--   1  path of the body file (JSON)
--   2  Accept header value
--   3  mode: "fixed" sends the file as is on every request (cache hits);
--            "unique" replaces the text __SEED__ in it with a seed no other request of this
--            run uses (cache misses);
--            "cycle" replaces __SEED__ with seeds first .. first + count - 1 in turn (hits
--            on a working set of `count` entries, each thread starting at its own place)
--   4  first seed of this run (unique and cycle modes); unique: each thread takes its own
--      range above it
--   5  count (cycle mode)
--
-- done() prints one line "WRK_JSON {...}" that the bench parses, rather than scraping wrk's
-- text report. Latencies are in microseconds, as wrk records them (send to last byte).
-- No response() callback: defining one makes wrk buffer every body into Lua, which would
-- slow the client down and measure wrk rather than the server.

local THREAD_SEED_SPAN = 10000000
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local prefix, suffix, fixed_request
local seed = 0
local first, count, turn = 0, 0, 0
local headers = {}

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  headers["Content-Type"] = "application/json"
  headers["Accept"] = args[2]
  local mode = args[3] or "fixed"
  if mode == "unique" or mode == "cycle" then
    local at = assert(string.find(body, "__SEED__", 1, true), "no __SEED__ in the body")
    prefix = string.sub(body, 1, at - 1)
    suffix = string.sub(body, at + string.len("__SEED__"))
  end
  if mode == "unique" then
    seed = tonumber(args[4] or "1") + id * THREAD_SEED_SPAN
  elseif mode == "cycle" then
    first = tonumber(args[4] or "1")
    count = tonumber(args[5] or "1")
    turn = (id * 7919) % count
  else
    fixed_request = wrk.format("POST", nil, headers, body)
  end
end

function request()
  if fixed_request then
    return fixed_request
  end
  if count > 0 then
    turn = (turn + 1) % count
    return wrk.format("POST", nil, headers, prefix .. tostring(first + turn) .. suffix)
  end
  seed = seed + 1
  return wrk.format("POST", nil, headers, prefix .. tostring(seed) .. suffix)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\nWRK_JSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
    "\"errors\":{\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d}," ..
    "\"latency_us\":{\"min\":%d,\"mean\":%.1f,\"stdev\":%.1f,\"max\":%d," ..
    "\"p50\":%d,\"p75\":%d,\"p90\":%d,\"p99\":%d,\"p999\":%d}}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
