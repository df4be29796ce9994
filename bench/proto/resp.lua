-- bench/proto/resp.lua: scripts/resp.lua against redis-server, both driven
-- by redis-benchmark (50 clients, -t ping,set,get), without pipelining and
-- with -P 16. The reference is one redis-server (one thread, no
-- persistence). glisten-lua runs scripts/resp.lua on one worker, which keeps
-- its keys in a Lua table; the "shared store" rows run the same script on
-- one worker with its keys in glisten.shared instead, as several workers
-- would. See bench/protocols for the contract.
local M = {
  name = "resp",
  reference = "redis-server --save '' --appendonly no, one thread",
  needs = { "redis-server", "redis-benchmark" },
}

M.rows = {
  { key = "PING_INLINE", what = "PING inline, 50 clients", unit = "req/s", target = 0.70 },
  { key = "PING_MBULK", what = "PING, 50 clients", unit = "req/s", target = 0.70 },
  { key = "SET", what = "SET, 50 clients", unit = "req/s", target = 0.70 },
  { key = "GET", what = "GET, 50 clients", unit = "req/s", target = 0.70 },
  { key = "PING_INLINE_P16", what = "PING inline, 50 clients, -P 16", unit = "req/s" },
  { key = "PING_MBULK_P16", what = "PING, 50 clients, -P 16", unit = "req/s" },
  { key = "SET_P16", what = "SET, 50 clients, -P 16", unit = "req/s" },
  { key = "GET_P16", what = "GET, 50 clients, -P 16", unit = "req/s" },
  { key = "SET_SHARED", what = "SET, 50 clients, shared store", unit = "req/s" },
  { key = "GET_SHARED", what = "GET, 50 clients, shared store", unit = "req/s" },
}

-- redis-benchmark's requests per second by test name, with suffix added to
-- each name; one run without pipelining, or with -P 16.
local function benchmark(ctx, port, pipelined, tests, suffix)
  local n
  if pipelined then n = ctx.quick and 200000 or 2000000
  else n = ctx.quick and 20000 or 200000 end
  local out = ctx.sh(("%sredis-benchmark -h 127.0.0.1 -p %d -c 50 -n %d%s -t %s --csv"):format(
    ctx.pin_load, port, n, pipelined and " -P 16" or "", tests))
  local r = {}
  for test, rps in out:gmatch('"([%w_]+)","([%d.]+)"') do r[test .. suffix] = tonumber(rps) end
  return r
end

local function all(ctx, port)
  local r = benchmark(ctx, port, false, "ping,set,get", "")
  for k, v in pairs(benchmark(ctx, port, true, "ping,set,get", "_P16")) do r[k] = v end
  return r
end

function M.round(ctx)
  local res = {}
  local port = ctx.free_port()
  local pid = ctx.start(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize no"):format(port), port)
  local ok, ref = pcall(all, ctx, port)
  ctx.stop(pid)
  if not ok then error(ref) end
  ref.SET_SHARED, ref.GET_SHARED = ref.SET, ref.GET

  local gpid, gport = ctx.start_glisten("scripts/resp.lua")
  local gok, gl = pcall(all, ctx, gport)
  ctx.stop(gpid)
  if not gok then error(gl) end

  -- the same script with its keys in glisten.shared, through a wrapper
  local wrapper = ctx.tmp .. "/resp_shared.lua"
  local f = assert(io.open(wrapper, "w"))
  f:write(("return assert(loadfile(%q))(\"shared\")\n"):format(ctx.sh("pwd"):gsub("%s+$", "") .. "/scripts/resp.lua"))
  f:close()
  local spid, sport = ctx.start_glisten(wrapper)
  local sok, sh = pcall(benchmark, ctx, sport, false, "set,get", "_SHARED")
  ctx.stop(spid)
  if not sok then error(sh) end
  for k, v in pairs(sh) do gl[k] = v end

  for _, row in ipairs(M.rows) do
    if ref[row.key] and gl[row.key] then
      res[row.key] = { ref = ref[row.key], glisten = gl[row.key] }
    end
  end
  return res
end

return M
