-- bench/proto/memcached.lua: scripts/memcached.lua against memcached -t 1,
-- with memcaslap (libmemcached-tools) as the client: one thread, 50
-- connections, each sending one request at a time, keys of 64 bytes and
-- values of 1,024 (memcaslap's defaults), for a fixed time per run. The
-- distribution is given in a file of its own (-F), so a ~/.memaslap.cnf
-- left on the machine changes nothing. The figure is memcaslap's TPS
-- (operations per second, gets and sets together).
local CONNS = 50

local ROWS = {
  { key = "mix", what = "get/set 9:1, 50 connections", unit = "ops/s", target = 0.60,
    cmd = "0 0.1\n1 0.9\n" },
  { key = "set", what = "set only, 50 connections", unit = "ops/s", cmd = "0 1.0\n" },
}

-- The memcaslap configuration for a row: key and value sizes, command mix.
local function config(ctx, row)
  local path = ("%s/memcaslap-%s.cnf"):format(ctx.tmp, row.key)
  local f = assert(io.open(path, "w"))
  f:write("key\n64 64 1\nvalue\n1024 1024 1\ncmd\n", row.cmd)
  f:close()
  return path
end

-- One memcaslap run against port; its TPS, or nil (and the output) when it
-- printed none or reported a miss or an error.
local function load(ctx, port, cfg)
  local out = ctx.sh(("%stimeout 60 memcaslap -s 127.0.0.1:%d -T 1 -c %d -t %ds -F %s")
    :format(ctx.pin_load, port, CONNS, ctx.quick and 2 or 5, cfg))
  local tps = tonumber(out:match("TPS: (%d+)"))
  local misses = tonumber(out:match("get_misses: (%d+)") or "0")
  if not tps or misses > 0 then return nil, out end
  return tps
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
    for _, row in ipairs(ROWS) do
      local cfg = config(ctx, row)
      local r = {}
      -- a fresh server of each kind per row: the sets of one row do not
      -- fill the other's
      local port = ctx.free_port()
      local pid = ctx.start(reference_cmd(ctx, port), port)
      local ok, tps, out = pcall(load, ctx, port, cfg)
      ctx.stop(pid)
      if ok and tps then r.ref = tps else io.stderr:write("memcached ", row.key, ": ", tostring(out or tps), "\n") end
      local gpid, gport = ctx.start_glisten("scripts/memcached.lua")
      ok, tps, out = pcall(load, ctx, gport, cfg)
      ctx.stop(gpid)
      if ok and tps then r.glisten = tps else io.stderr:write("glisten-lua ", row.key, ": ", tostring(out or tps), "\n") end
      res[row.key] = r
    end
    return res
  end,
}
