-- A line chat: every line a client sends goes to every other client.
--   glisten-lua scripts/chat.lua 9000
--   nc 127.0.0.1 9000   (in two terminals)
--
-- Each connection's coroutine owns its socket; other connections reach it
-- with glisten.post(id, line), which runs with_message in that coroutine.
-- A client that stops reading only fills its own bounded mailbox: posts to
-- it fail with "mailbox full" and nobody else waits.
local glisten = require "glisten"

local clients = {} -- connection id -> true

local function broadcast(from, line)
  for id in pairs(clients) do
    if id ~= from then glisten.post(id, line) end
  end
end

return {
  with_init = function(state)
    local id = state.socket.id
    clients[id] = true
    state.buf = ""
    local others = -1
    for _ in pairs(clients) do others = others + 1 end
    state.socket:send(("* you are %d; %d other(s) here\n"):format(id, others))
  end,

  handler = function(msg, state)
    local buf = state.buf .. msg
    for line in buf:gmatch("([^\n]*)\n") do
      broadcast(state.socket.id, (line:gsub("\r$", "")))
    end
    state.buf = buf:match("[^\n]*$")
    if #state.buf > 4096 then
      state.socket:send("* line too long\n")
      state.socket:close()
    end
  end,

  with_message = function(line, state)
    state.socket:send(line .. "\n")
  end,

  with_close = function(state)
    clients[state.socket.id] = nil
  end,
}
