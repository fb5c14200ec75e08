-- wrk script: each request registers the next pre-generated citizen; stops when the tokens run out.
-- Env: TOKENS_FILE (one token per line), CAMPAIGN, THREADS.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("THREADS"))
  local path = "/v1/campaigns/" .. os.getenv("CAMPAIGN") .. "/registrations"
  tokens = {}
  local i = 0
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    if i % nthreads == id then table.insert(tokens, line) end
    i = i + 1
  end
  requests_made = 0
  created = 0
  repeated = 0
  other = 0
  prefix = path
end

function request()
  requests_made = requests_made + 1
  local token = tokens[requests_made]
  if token == nil then
    wrk.thread:stop()
    token = tokens[1]
  end
  return wrk.format("POST", prefix, {["Authorization"] = "Bearer " .. token,
                                     ["Content-Type"] = "application/json"}, "{}")
end

function response(status, headers, body)
  if status == 201 then created = created + 1
  elseif status == 200 then repeated = repeated + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local c, r, o = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created"); r = r + t:get("repeated"); o = o + t:get("other")
  end
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "created": %d, "repeated": %d, "other": %d, ' ..
    '"errors_connect": %d, "errors_timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, c, r, o, summary.errors.connect, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
