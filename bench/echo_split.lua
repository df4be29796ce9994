-- A line echo split in Lua on a raw connection, as a script without
-- packet = "line" would write it (no string made while a chunk holds whole
-- lines only). bench/run --callgrind counts its instructions per message
-- beside bench/echo_line.lua's, which splits in C.
local pending = {}
function handler(msg, state)
  local p = pending[state]
  if p then msg = p .. msg; pending[state] = nil end
  local start = 1
  while true do
    local nl = msg:find("\n", start, true)
    if not nl then break end
    state.socket:send(msg:sub(start, nl - 1), "\n")
    start = nl + 1
  end
  if start <= #msg then pending[state] = msg:sub(start) end
end

function with_close(state) pending[state] = nil end
