-- The echo server a Lua user might write with cqueues instead.
--   lua5.4 bench/echo_cqueues.lua PORT
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local cq = cqueues.new()
local srv = socket.listen{ host = "127.0.0.1", port = tonumber(arg[1]) or 0, reuseaddr = true,
  nodelay = true }
srv:listen()
local _, _, port = srv:localname()
io.stderr:write(("listening on 127.0.0.1:%d\n"):format(port))
cq:wrap(function()
  for con in srv:clients() do
    cq:wrap(function()
      con:setmode("bn", "bn")
      pcall(function()
        while true do
          local data = con:xread(-65536, "b")
          if not data then break end
          assert(con:xwrite(data, "bn"))
        end
      end)
      con:close()
    end)
  end
end)
assert(cq:loop())
