-- bench/proto/http.lua: scripts/http.lua against nginx, both driven by wrk
-- (one thread, 50 connections) on GET /, which each answers with a 5-byte
-- page: with keep-alive, and with "Connection: close" (a connection per
-- request). The reference is nginx with one worker and no master process,
-- `return 200 "hello"` for location /, access log off. glisten-lua runs
-- scripts/http.lua on one worker.
--
-- Besides requests per second, the "per CPU s" rows give requests per
-- second of the server's own CPU time (user + system, from /proc): wrk is
-- one thread on one CPU, and may be what limits requests per second, for
-- both servers alike; the CPU each server spends per request is its own.
-- See bench/protocols for the contract.
local M = {
  name = "http",
  reference = "nginx, one worker, return 200 \"hello\"",
  needs = { "nginx", "wrk" },
}

M.rows = {
  { key = "keepalive", what = "GET /, 50 conns, keep-alive", unit = "req/s", target = 0.60 },
  { key = "keepalive_cpu", what = "GET /, 50 conns, keep-alive", unit = "req/CPU s" },
  { key = "close", what = "GET /, 50 conns, no keep-alive", unit = "req/s" },
  { key = "close_cpu", what = "GET /, 50 conns, no keep-alive", unit = "req/CPU s" },
}

-- One wrk run against the server pid on port: requests per second, and
-- requests per second of the server's CPU time.
local function one(ctx, pid, port, close)
  local cpu = ctx.cpu(pid)
  local out = ctx.sh(("%swrk -t 1 -c 50 -d %d %shttp://127.0.0.1:%d/"):format(
    ctx.pin_load, ctx.quick and 1 or 3, close and "-H 'Connection: close' " or "", port))
  cpu = ctx.cpu(pid) - cpu
  local rps = tonumber(out:match("Requests/sec:%s*([%d.]+)"))
  local n = tonumber(out:match("(%d+) requests in"))
  if not rps or not n then error("wrk: " .. out:sub(1, 300)) end
  if out:find("Non-2xx", 1, true) then error("wrk saw answers other than 2xx: " .. out:sub(1, 300)) end
  return rps, cpu > 0 and n / cpu or nil
end

local function all(ctx, pid, port)
  local r = {}
  r.keepalive, r.keepalive_cpu = one(ctx, pid, port, false)
  r.close, r.close_cpu = one(ctx, pid, port, true)
  return r
end

-- nginx's configuration in ctx.tmp, every path it writes under ctx.tmp, so
-- it runs as any user.
local function nginx_conf(ctx, port)
  local dir = ctx.tmp .. "/nginx"
  os.execute(("mkdir -p %s"):format(dir))
  local conf = ([[
daemon off;
master_process off;
worker_processes 1;
error_log DIR/e.log;
pid DIR/nginx.pid;
events {}
http {
  access_log off;
  client_body_temp_path DIR/client_body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
  server {
    listen 127.0.0.1:PORT;
    location / { return 200 "hello"; }
  }
}
]]):gsub("DIR", dir):gsub("PORT", tostring(port))
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  return dir
end

function M.round(ctx)
  local pid, port = ctx.start(function(p)
    local dir = nginx_conf(ctx, p)
    return ("nginx -p %s -e %s/e.log -c %s/nginx.conf"):format(dir, dir, dir)
  end)
  local ref = ctx.against(pid, port, function(p, o) return all(ctx, p, o) end)
  local gpid, gport = ctx.start_glisten("scripts/http.lua")
  local gl = ctx.against(gpid, gport, function(p, o) return all(ctx, p, o) end)
  local r = {}
  for k, v in pairs(ref) do r[k] = { ref = v, glisten = gl[k] } end
  return r
end

return M
