-- activity.lua — wrk script for `make bench`: POSTs Teams message activities to /api/messages.
-- Every request carries a unique activity id (per-thread prefix + counter; herald drops redeliveries
-- of an id it has seen) and one of BENCH_CONVERSATIONS (default 1000) conversation ids, round robin.
-- Env: BENCH_SERVICE_URL (the null connector, e.g. http://127.0.0.1:PORT), BENCH_CONVERSATIONS,
--      BENCH_TENANTS (default 1; conversation n belongs to tenant n % BENCH_TENANTS),
--      BENCH_RUN (a tag mixed into ids so successive runs against one herald never collide),
--      BENCH_RATE + BENCH_PACED_CONNS: paced mode, each connection waits a random 0.5-1.5 x
--      PACED_CONNS/RATE s after each answer before the next request (wrk's delay(); wrk measures latency
--      from the moment the request is written, so the pause is not counted),
--      BENCH_FLOOR=1: GET /floor instead (pointed at the null connector: what the rig alone costs),
--      BENCH_AUTH_TOKENS_FILE: a file of channel JWTs, one a line; each request carries
--      "Authorization: Bearer <token>", the tokens taken round robin (thread t of n takes tokens
--      t, t+n, t+2n, ... from BENCH_AUTH_OFFSET [0] on, so a run can resume where the last one stopped;
--      one line = the same token every time). Unset: no Authorization header (dev mode).

local service_url = os.getenv("BENCH_SERVICE_URL") or "http://127.0.0.1:9"
local nconv = tonumber(os.getenv("BENCH_CONVERSATIONS") or "1000")
local ntenants = tonumber(os.getenv("BENCH_TENANTS") or "1")
local run = os.getenv("BENCH_RUN") or tostring(os.time())

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local counter = 0
local prefix
local headers = { ["Content-Type"] = "application/json" }

-- Everything but the id, the conversation and the text is the same for every request.
local fmt = '{"type":"message","id":"%s","timestamp":"2026-01-01T00:00:00.000Z",' ..
  '"serviceUrl":"' .. service_url .. '","channelId":"msteams",' ..
  '"from":{"id":"29:user-%d","name":"Bench User","aadObjectId":"00000000-0000-0000-0000-%012d"},' ..
  '"conversation":{"conversationType":"personal","tenantId":"72f988bf-0000-0000-0000-%012d","id":"a:bench-conv-%d"},' ..
  '"recipient":{"id":"28:00000000-0000-0000-0000-000000000001","name":"Bench Bot"},' ..
  '"locale":"en-US","textFormat":"plain","text":"hello %d",' ..
  '"entities":[{"type":"clientInfo","locale":"en-US","country":"US","platform":"Web","timezone":"Europe/Paris"}],' ..
  '"channelData":{"tenant":{"id":"72f988bf-0000-0000-0000-%012d"}}}'

local tokens_file = os.getenv("BENCH_AUTH_TOKENS_FILE")
local tokens, ntokens, token_offset = nil, 0, tonumber(os.getenv("BENCH_AUTH_OFFSET") or "0")
local token_step = tonumber(os.getenv("BENCH_THREADS_N") or "1")

function init(args)
  prefix = run .. "-" .. tostring(tid or 0) .. "-"
  if tokens_file and tokens_file ~= "" then
    tokens = {}
    local f = assert(io.open(tokens_file, "r"))
    for line in f:lines() do
      if line ~= "" then tokens[#tokens + 1] = line end
    end
    f:close()
    ntokens = #tokens
    assert(ntokens > 0, "BENCH_AUTH_TOKENS_FILE holds no token")
  end
  -- spread threads over the conversation space
  counter = 0
  math.randomseed(os.time() + (tid or 0) * 7)
end

local floor = os.getenv("BENCH_FLOOR") == "1"

function request()
  if floor then  -- rig floor: a bare GET to the null connector, same pacing, no bot in the path
    return wrk.format("GET", "/floor")
  end
  counter = counter + 1
  local conv = (counter * 7919 + (tid or 0) * 131) % nconv
  local tenant = conv % ntenants
  local body = string.format(fmt, prefix .. counter, conv, conv, tenant, conv, counter, tenant)
  if tokens then
    local i = (token_offset + (counter - 1) * token_step + (tid or 0)) % ntokens + 1
    return wrk.format("POST", "/api/messages",
      { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tokens[i] }, body)
  end
  return wrk.format("POST", "/api/messages", headers, body)
end

local rate = tonumber(os.getenv("BENCH_RATE") or "")
local paced_conns = tonumber(os.getenv("BENCH_PACED_CONNS") or "")
if rate and paced_conns and rate > 0 then
  -- Closed loop: the achieved rate is conns / (pause + latency). A per-thread controller corrects the
  -- pause once a second (os.time() is all the clock wrk's Lua has) towards this thread's share of RATE.
  local nthreads = tonumber(os.getenv("BENCH_THREADS_N") or "1")
  local target = rate / nthreads
  local mean_ms = paced_conns / rate * 1000
  local scale, sec, in_sec, full = 1.0, nil, 0, false
  function delay()
    local now = os.time()
    if sec == nil then sec = now end
    if now ~= sec then
      if full and in_sec > 0 then       -- a whole second seen: adjust (damped)
        scale = scale * math.sqrt(in_sec / target)
        if scale < 0.1 then scale = 0.1 elseif scale > 10 then scale = 10 end
      end
      full, sec, in_sec = true, now, 0
    end
    in_sec = in_sec + 1
    return math.floor(mean_ms * scale * (0.5 + math.random()) + 0.5)
  end
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("BENCH requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, non2xx, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
