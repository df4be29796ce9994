-- A line chat: every line a client sends goes to every other client.
--   glisten-lua scripts/chat.lua 9000          (one worker)
--   glisten-lua -w 4 scripts/chat.lua 9000     (four: the same behaviour)
--   nc 127.0.0.1 9000   (in two terminals)
--
-- Every connection subscribes to the topic "chat"; a line is published to
-- it, and each subscriber, on whichever worker, gets it in with_message.
-- A client that stops reading only fills its own bounded mailbox: lines for
-- it are then dropped (counted in glisten.stats().dropped) and nobody else
-- waits.
--
-- One client cannot make the server work for everyone: empty lines are
-- ignored, and a client may send RATE lines a second (BURST at once); past
-- that its handler waits, so its input waits in the kernel (TCP slows the
-- sender down) and every line still goes out, in order.
local glisten = require "glisten"

local RATE, BURST = 100, 100

-- Waits until state may publish one more line (a token bucket).
local function pace(state)
  local now = glisten.now()
  state.tokens = math.min(BURST, state.tokens + (now - state.at) * RATE)
  state.at = now
  if state.tokens < 1 then
    glisten.sleep((1 - state.tokens) / RATE)
    state.tokens, state.at = 1, glisten.now()
  end
  state.tokens = state.tokens - 1
end

return {
  with_init = function(state)
    local sock = state.socket
    sock:subscribe("chat")
    local here = glisten.shared:incr("chat:clients", 1, 0)
    sock:send(("* you are %d; %d other(s) here\n"):format(sock.id, here - 1))
    state.buf = ""
    state.tokens, state.at = BURST, glisten.now()
  end,

  handler = function(msg, state)
    local buf, start = state.buf .. msg, 1
    while true do -- one pass over the bytes, whatever the line lengths
      local nl = buf:find("\n", start, true)
      if not nl then break end
      local line = buf:sub(start, buf:byte(nl - 1) == 13 and nl - 2 or nl - 1)
      start = nl + 1
      if line ~= "" then
        pace(state)
        glisten.publish("chat", { from = state.socket.id, line = line })
      end
    end
    state.buf = buf:sub(start)
    if #state.buf > 4096 then
      state.socket:send("* line too long\n")
      state.socket:close()
    end
  end,

  with_message = function(msg, state)
    if msg.from ~= state.socket.id then state.socket:send(msg.line .. "\n") end
  end,

  with_close = function(state)
    glisten.shared:incr("chat:clients", -1, 0)
  end,
}
