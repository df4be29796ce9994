-- The echo server a Lua user might write with luv (libuv) instead.
--   lua5.4 bench/echo_luv.lua PORT
local uv = require "luv"
local server = uv.new_tcp()
assert(server:bind("127.0.0.1", tonumber(arg[1]) or 0))
assert(server:listen(1024, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  client:nodelay(true)
  client:read_start(function(e, chunk)
    if e or not chunk then client:close() return end
    client:write(chunk)
  end)
end))
io.stderr:write(("listening on 127.0.0.1:%d\n"):format(server:getsockname().port))
uv.run()
