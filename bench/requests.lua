-- wrk script: each request is the next line of REQUESTS_FILE, made ahead of time so the measured
-- loop signs nothing: METHOD \t PATH \t BODY \t Header-Name \t value [\t name \t value ...].
-- Lines are dealt to threads round-robin (THREADS of them); a thread stops when its lines run
-- out, and a request made after that is a harmless GET /ready, not a repeat of real work. wrk
-- itself runs for its -d duration whatever its threads do, so a thread that runs out leaves a
-- file REQUESTS_FILE.done.<thread> and the caller stops wrk (SIGINT, which makes it report).
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function split(line)
  local fields = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do table.insert(fields, field) end
  return fields
end

function init(args)
  local nthreads = tonumber(os.getenv("THREADS"))
  lines = {}
  local i = 0
  for line in io.lines(os.getenv("REQUESTS_FILE")) do
    if i % nthreads == id then table.insert(lines, line) end
    i = i + 1
  end
  made, ok, other = 0, 0, 0
end

function request()
  made = made + 1
  local line = lines[made]
  if line == nil then
    if made == #lines + 1 then io.open(os.getenv("REQUESTS_FILE") .. ".done." .. id, "w"):close() end
    wrk.thread:stop()
    return wrk.format("GET", "/ready")
  end
  local f = split(line)
  local headers = {}
  for k = 4, #f - 1, 2 do headers[f[k]] = f[k + 1] end
  local body = f[3]
  if body == "" then body = nil end
  return wrk.format(f[1], f[2], headers, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local o, x = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); x = x + t:get("other") end
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "ok": %d, "other": %d, "errors_connect": %d, ' ..
    '"errors_timeout": %d, "errors_status": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, o, x, summary.errors.connect, summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99), latency.max))
end
