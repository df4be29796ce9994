-- A handshake before handler mode: with_init reads a hello line with
-- receive("*l"); every later chunk goes to handler.
--   glisten-lua scripts/handshake.lua 9001
--   printf 'HELLO alice\nhi there\n' | nc -N 127.0.0.1 9001
function with_init(state)
  local sock = state.socket
  local line, err = sock:receive("*l", 10)
  local name = line and line:match("^HELLO (%w+)$")
  if not name then
    sock:send("ERR expected: HELLO <name>\n")
    sock:close()
    return
  end
  state.name = name
  sock:send("WELCOME " .. name .. "\n")
end

function handler(msg, state)
  state.socket:send(state.name .. ": " .. msg)
end
