-- A line chat: every line a client sends goes to every other client.
--   glisten-lua scripts/chat.lua 9000          (one worker)
--   glisten-lua -w 4 scripts/chat.lua 9000     (four: the same behaviour)
--   nc 127.0.0.1 9000   (in two terminals)
--
-- packet = "line": handler gets one line at a time, without its end of
-- line, however the bytes arrived; the splitting is glisten's, in C. A line
-- longer than max_line ends that connection (with_close gets "error",
-- "line longer than max_line"); nothing more of it is buffered.
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
  packet = "line",
  max_line = 4096,

  with_init = function(state)
    local sock = state.socket
    sock:subscribe("chat")
    local here = glisten.shared:incr("chat:clients", 1, 0)
    sock:send(("* you are %d; %d other(s) here\n"):format(sock.id, here - 1))
    state.tokens, state.at = BURST, glisten.now()
  end,

  handler = function(line, state)
    if line == "" then return end
    pace(state)
    glisten.publish("chat", { from = state.socket.id, line = line })
  end,

  with_message = function(msg, state)
    if msg.from ~= state.socket.id then state.socket:send(msg.line, "\n") end
  end,

  with_close = function(state)
    glisten.shared:incr("chat:clients", -1, 0)
  end,
}
