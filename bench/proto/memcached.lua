-- bench/proto/memcached.lua: scripts/memcached.lua against memcached -t 1,
-- with memcaslap (libmemcached-tools) as the client: one thread, 50
-- connections, each sending one request at a time, keys of 64 bytes and
-- values of 1,024 (memcaslap's defaults), for a fixed time per run. The
-- distribution is given in a file of its own (-F), so a ~/.memaslap.cnf
-- left on the machine changes nothing. The figures are memcaslap's TPS
-- (operations per second, gets and sets together) and, steadier on a
-- machine shared with other work, the operations per second of CPU the
-- server used (user and system, from /proc) over the same run.
local CONNS = 50

local ROWS = {
  { key = "mix", what = "get/set 9:1, 50 connections", unit = "ops/s", target = 0.60,
    cmd = "0 0.1\n1 0.9\n" },
  { key = "set", what = "set only, 50 connections", unit = "ops/s", cmd = "0 1.0\n" },
  -- the same runs, per second of the server's CPU
  { key = "mix_cpu", what = "get/set 9:1, per server CPU second", unit = "ops/cpu-s" },
  { key = "set_cpu", what = "set only, per server CPU second", unit = "ops/cpu-s" },
}
local LOADS = { ROWS[1], ROWS[2] }

-- The memcaslap configuration for a row: key and value sizes, command mix.
local function config(ctx, row)
  local path = ("%s/memcaslap-%s.cnf"):format(ctx.tmp, row.key)
  local f = assert(io.open(path, "w"))
  f:write("key\n64 64 1\nvalue\n1024 1024 1\ncmd\n", row.cmd)
  f:close()
  return path
end

-- One memcaslap run against the server pid on port: its TPS and the
-- operations per second of the server's CPU, or nil and the output when it
-- printed no figure or reported a miss.
local function load(ctx, pid, port, cfg)
  local cpu = ctx.cpu(pid)
  local out = ctx.sh(("%stimeout 60 memcaslap -s 127.0.0.1:%d -T 1 -c %d -t %ds -F %s")
    :format(ctx.pin_load, port, CONNS, ctx.quick and 2 or 5, cfg))
  cpu = ctx.cpu(pid) - cpu
  local tps, ops = tonumber(out:match("TPS: (%d+)")), tonumber(out:match("Ops: (%d+)"))
  local misses = tonumber(out:match("get_misses: (%d+)") or "0")
  if not tps or not ops or misses > 0 or cpu <= 0 then return nil, out end
  return tps, ops / cpu
end

-- memcached refuses to run as root without -u.
local function reference_cmd(ctx, port)
  local root = ctx.sh("id -u"):match("^0%s") ~= nil
  return ("memcached -p %d -U 0 -t 1 -l 127.0.0.1%s"):format(port, root and " -u nobody" or "")
end

return {
  name = "memcached",
  reference = "memcached -t 1, client memcaslap -T 1 -c 50",
  needs = { "memcached", "memcaslap" },
  rows = ROWS,
  round = function(ctx)
    local res = {}
    for _, row in ipairs(LOADS) do
      local cfg = config(ctx, row)
      local r, rc = {}, {}
      -- a fresh server of each kind per row: the sets of one row do not
      -- fill the other's
      local pid, port = ctx.start(function(p) return reference_cmd(ctx, p) end)
      local ok, tps, per_cpu = pcall(load, ctx, pid, port, cfg)
      ctx.stop(pid)
      if ok and tps then
        r.ref, rc.ref = tps, per_cpu
      else
        io.stderr:write("memcached ", row.key, ": ", tostring(per_cpu), "\n")
      end
      local gpid, gport = ctx.start_glisten("scripts/memcached.lua")
      ok, tps, per_cpu = pcall(load, ctx, gpid, gport, cfg)
      ctx.stop(gpid)
      if ok and tps then
        r.glisten, rc.glisten = tps, per_cpu
      else
        io.stderr:write("glisten-lua ", row.key, ": ", tostring(per_cpu), "\n")
      end
      res[row.key], res[row.key .. "_cpu"] = r, rc
    end
    return res
  end,
}
