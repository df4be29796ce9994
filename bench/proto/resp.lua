-- bench/proto/resp.lua: scripts/resp.lua against redis-server, both driven
-- by redis-benchmark with 50 clients, one test at a time (PING inline, PING
-- as an array, SET, GET), without pipelining and with -P 16. The reference
-- is one redis-server (one thread, no persistence). glisten-lua runs
-- scripts/resp.lua on one worker, which keeps its keys in a Lua table; the
-- "shared store" rows run the same script on one worker with its keys in
-- glisten.shared instead, as several workers would.
--
-- Besides requests per second, the "per CPU s" rows give requests per
-- second of the server's own CPU time (user + system, from /proc): one
-- redis-benchmark is a single thread, and on a small machine it may be what
-- limits requests per second, for both servers alike; the CPU each server
-- spends per request is its own. See bench/protocols for the contract.
local M = {
  name = "resp",
  reference = "redis-server --save '' --appendonly no, one thread",
  needs = { "redis-server", "redis-benchmark" },
}

local TESTS = { "PING_INLINE", "PING_MBULK", "SET", "GET" }
local WHAT = { PING_INLINE = "PING inline", PING_MBULK = "PING", SET = "SET", GET = "GET" }

M.rows = {}
for _, t in ipairs(TESTS) do
  M.rows[#M.rows + 1] = { key = t, what = WHAT[t] .. ", 50 clients", unit = "req/s", target = 0.70 }
end
for _, t in ipairs(TESTS) do
  M.rows[#M.rows + 1] = { key = t .. "_P16", what = WHAT[t] .. ", 50 clients, -P 16", unit = "req/s" }
end
for _, t in ipairs(TESTS) do
  M.rows[#M.rows + 1] = { key = t .. "_CPU", what = WHAT[t] .. ", 50 clients", unit = "req/CPU s" }
end
for _, t in ipairs{ "SET", "GET" } do
  M.rows[#M.rows + 1] = { key = t .. "_SHARED", what = WHAT[t] .. ", 50 clients, shared store", unit = "req/s" }
  M.rows[#M.rows + 1] = { key = t .. "_SHARED_CPU", what = WHAT[t] .. ", 50 clients, shared store", unit = "req/CPU s" }
end

-- One redis-benchmark run of one test against the server pid on port:
-- requests per second, and requests per second of the server's CPU time.
local function one(ctx, pid, port, test, pipelined)
  local n
  if pipelined then n = ctx.quick and 200000 or 2000000
  else n = ctx.quick and 20000 or 200000 end
  local cpu = ctx.cpu(pid)
  local out = ctx.sh(("%sredis-benchmark -h 127.0.0.1 -p %d -c 50 -n %d%s -t %s --csv"):format(
    ctx.pin_load, port, n, pipelined and " -P 16" or "", test:lower()))
  cpu = ctx.cpu(pid) - cpu
  local rps = tonumber(out:match('"' .. test .. '","([%d.]+)"'))
  if not rps then error(("redis-benchmark -t %s: %s"):format(test:lower(), out:sub(1, 200))) end
  return rps, cpu > 0 and n / cpu or nil
end

-- Every row but the shared store's, for one server.
local function all(ctx, pid, port)
  local r = {}
  for _, t in ipairs(TESTS) do r[t], r[t .. "_CPU"] = one(ctx, pid, port, t, false) end
  for _, t in ipairs(TESTS) do r[t .. "_P16"] = one(ctx, pid, port, t, true) end
  return r
end

function M.round(ctx)
  local pid, port = ctx.start(function(p)
    return ("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize no"):format(p)
  end)
  local ref = ctx.against(pid, port, function(p, o) return all(ctx, p, o) end)
  for _, t in ipairs{ "SET", "GET" } do
    ref[t .. "_SHARED"], ref[t .. "_SHARED_CPU"] = ref[t], ref[t .. "_CPU"]
  end

  local gpid, gport = ctx.start_glisten("scripts/resp.lua")
  local gl = ctx.against(gpid, gport, function(p, o) return all(ctx, p, o) end)

  -- the same script with its keys in glisten.shared, through a wrapper
  local wrapper = ctx.tmp .. "/resp_shared.lua"
  local f = assert(io.open(wrapper, "w"))
  f:write(("return assert(loadfile(%q))(\"shared\")\n"):format(
    ctx.sh("pwd"):gsub("%s+$", "") .. "/scripts/resp.lua"))
  f:close()
  local spid, sport = ctx.start_glisten(wrapper)
  ctx.against(spid, sport, function(p, o)
    for _, t in ipairs{ "SET", "GET" } do gl[t .. "_SHARED"], gl[t .. "_SHARED_CPU"] = one(ctx, p, o, t, false) end
  end)

  local res = {}
  for _, row in ipairs(M.rows) do
    if ref[row.key] and gl[row.key] then
      res[row.key] = { ref = ref[row.key], glisten = gl[row.key] }
    end
  end
  return res
end

return M
