-- The server of the chaos run (tests/chaos.c), served by glisten-lua with
-- one worker or several. A line protocol whose commands make the server
-- read, write, post and fail on a peer's request:
--
--   echo TEXT    -> TEXT
--   sink N       the next N bytes are dropped, then -> sunk N
--   flood N      -> N bytes of 'f' (the send waits while the peer does not read)
--   post ID TEXT glisten.post(ID, TEXT) -> posted true | posted nil ERR
--   stats        -> dropped N (glisten.stats().dropped: posts that found no one)
--   quit         -> bye, and the server closes (reason "local")
--   boom N       -> N bytes of 'f', then the handler raises (reason "error")
--
-- On opening, a connection is sent "id ID WORKER"; a post to it arrives as
-- "msg TEXT"; when the peer closes or the server stops, with_close says
-- "bye" on the socket still open. Every connection writes "init ID" when it
-- opens and "close ID REASON" when it ends, one line each, to the file
-- CHAOS_LOG.W (W: the worker), which the run reads: each id must appear
-- exactly once in each.
local glisten = require "glisten"

local prefix = assert(os.getenv("CHAOS_LOG"), "CHAOS_LOG is not set")
local log = assert(io.open(prefix .. "." .. glisten.worker_id(), "a"))
log:setvbuf("line") -- one write per line, so a line is whole as soon as it is there

local MAX_LINE = 4096
local CHUNK = ("f"):rep(65536)

local function flood(sock, n)
  while n > 0 do
    local piece = n >= #CHUNK and CHUNK or CHUNK:sub(1, n)
    if not sock:send(piece) then return end -- the peer went away
    n = n - #piece
  end
end

local function command(line, state)
  local sock = state.socket
  local verb, rest = line:match("^(%S+) ?(.*)$")
  if verb == "echo" then
    sock:send(rest .. "\n")
  elseif verb == "sink" then
    state.sink = assert(math.tointeger(tonumber(rest)), "sink: bad count")
    state.sunk = state.sink
    if state.sink == 0 then sock:send("sunk 0\n") end
  elseif verb == "flood" then
    flood(sock, assert(math.tointeger(tonumber(rest)), "flood: bad count"))
  elseif verb == "post" then
    local id, text = rest:match("^(%d+) (.*)$")
    local ok, err = glisten.post(assert(math.tointeger(tonumber(id))), text)
    sock:send(("posted %s %s\n"):format(tostring(ok), tostring(err)))
  elseif verb == "stats" then
    sock:send("dropped " .. glisten.stats().dropped .. "\n")
  elseif verb == "quit" then
    sock:send("bye\n")
    sock:close()
    state.done = true
  elseif verb == "boom" then
    -- what it sent before raising must still reach the peer
    flood(sock, assert(math.tointeger(tonumber(rest)), "boom: bad count"))
    error("boom, as asked by the peer")
  else
    error("unknown command: " .. tostring(verb))
  end
end

return {
  with_init = function(state)
    state.sink, state.line = 0, ""
    log:write("init ", state.socket.id, "\n")
    state.socket:send(("id %d %d\n"):format(state.socket.id, glisten.worker_id()))
  end,

  handler = function(msg, state)
    local pos = 1
    while pos <= #msg and not state.done do
      if state.sink > 0 then
        local take = math.min(state.sink, #msg - pos + 1)
        state.sink, pos = state.sink - take, pos + take
        if state.sink == 0 then state.socket:send("sunk " .. state.sunk .. "\n") end
      else
        local nl = msg:find("\n", pos, true)
        if not nl then
          state.line = state.line .. msg:sub(pos)
          assert(#state.line <= MAX_LINE, "line too long")
          return
        end
        local line = state.line .. msg:sub(pos, nl - 1)
        state.line, pos = "", nl + 1
        command(line, state)
      end
    end
  end,

  with_message = function(text, state)
    state.socket:send("msg " .. text .. "\n")
  end,

  with_close = function(state, reason)
    log:write("close ", state.socket.id, " ", reason, "\n")
    if reason == "closed" or reason == "shutdown" then
      -- No timeout: to a peer that never reads this send waits until the
      -- shutdown's deadline cuts it short, and the command still exits 0.
      state.socket:send("bye\n")
    end
  end,
}
