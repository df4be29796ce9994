-- A TCP proxy: each connection is relayed, byte for byte and both ways, to
-- one upstream server, whatever the protocol.
--   GLISTEN_UPSTREAM=127.0.0.1:6379 glisten-lua scripts/proxy.lua 7000
--   redis-cli -p 7000 set greeting hello     (the upstream's own client)
--   GLISTEN_UPSTREAM=127.0.0.1:8080 glisten-lua -w 2 scripts/proxy.lua 7001
--   printf 'hi\n' | nc -N 127.0.0.1 7001
--
-- Settings, from the environment, read when the script loads (by each
-- worker under -w N):
--   GLISTEN_UPSTREAM         where to relay: HOST:PORT, [IPV6]:PORT or
--                            unix:PATH; a name is looked up at each connect
--   GLISTEN_PROXY_TIMEOUT    seconds a connect to the upstream may take (5)
--   GLISTEN_PROXY_LINGER     seconds one side may stay silent once the
--                            other has ended its sending, before both are
--                            closed (30; see "Half-close" below)
--
-- How it works. with_init connects to the upstream (a client arriving while
-- it connects waits: its bytes stay in the kernel), then spawns a coroutine
-- that copies upstream -> client; handler copies client -> upstream, chunk
-- by chunk. The server must run in the default raw mode, so that handler
-- gets the bytes as they come.
--
-- Backpressure. sock:send waits while more than 64 KiB is queued for a peer
-- that does not read, and a side is read only by the copy that sends to the
-- other: handler waits in send, so the client's next bytes wait in the
-- kernel, whose TCP flow control then slows the client; the coroutine waits
-- in send, so it stops reading the upstream. A connection holds at most
-- about 64 KiB of input and 128 KiB of output each way, however fast one
-- side sends and however slowly the other reads.
--
-- Ends. The upstream refuses or does not answer within the timeout: the
-- client is closed at once, and one line logged. The client vanishes or
-- fails, or the upstream fails while the client is still sending: both are
-- closed, after what is queued for each is flushed (for up to 5 s).
-- with_close runs once in every case, and both sockets are closed when it
-- returns.
--
-- Half-close. A side that ends its sending (nc -N, shutdown(2), a server
-- that answers and closes) has its end passed on with sock:shutdown("send")
-- once what it sent is flushed, and the other way goes on: a client that
-- sends its request and its end of input gets the answer of an upstream
-- that answers only at the end of input (`wc -c`, `sort`), and a client
-- still sending after the upstream's end reaches it. The side that has not
-- ended may stay silent for GLISTEN_PROXY_LINGER seconds; then both are
-- closed, so an upstream that ignores the end of input holds nothing for
-- ever.
local glisten = require "glisten"

local connect, spawn, sleep, now = glisten.connect, glisten.spawn, glisten.sleep, glisten.now
local stderr = io.stderr

-- A number of seconds >= 0 from the environment, or `default`.
local function seconds(name, default)
  local v = os.getenv(name)
  if not v or v == "" then return default end
  local n = tonumber(v)
  if not n or n ~= n or n < 0 then
    error(("%s must be a number of seconds >= 0, not '%s'"):format(name, v), 0)
  end
  return n
end

local UPSTREAM = os.getenv("GLISTEN_UPSTREAM") or ""
if UPSTREAM == "" then
  error("set GLISTEN_UPSTREAM to the server to relay to: HOST:PORT, [IPV6]:PORT or unix:PATH", 0)
end
local TIMEOUT = seconds("GLISTEN_PROXY_TIMEOUT", 5)
local LINGER = seconds("GLISTEN_PROXY_LINGER", 30)
-- how often a half-closed connection looks at the side still sending
local STEP = math.min(0.1, math.max(LINGER / 4, 0.01))
-- The upstream socket's timeout, which its sends get: how often handler,
-- waiting for a slow upstream, looks whether its client is still there.
local CHECK = 1
-- The pump's receives wait for the upstream with a timeout of their own,
-- as the socket's is CHECK: at most an hour at a time, then again.
local WAIT = 3600

local HOST, PORT
if UPSTREAM:sub(1, 5) == "unix:" and #UPSTREAM > 5 then
  HOST = UPSTREAM -- glisten.connect takes "unix:PATH" alone
else
  local host, port = UPSTREAM:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = UPSTREAM:match("^([^:]+):(%d+)$") end
  HOST, PORT = host, tonumber(port)
  if not HOST or PORT < 1 or PORT > 65535 then
    error(("GLISTEN_UPSTREAM must be HOST:PORT, [IPV6]:PORT or unix:PATH, not '%s'")
      :format(UPSTREAM), 0)
  end
end

-- A socket connected to the upstream, or nil and why not.
local function open_upstream()
  if PORT then return connect(HOST, PORT, TIMEOUT) end
  return connect(HOST, TIMEOUT)
end

-- Waits while the other side of a half-closed connection is still at it:
-- until done() is true, or for LINGER seconds in which the counter
-- state[field] of what that side sent has not moved and its relay has not
-- been waiting to send (state[sending]: a slow reader is not silence).
-- Returns whether done() came true.
local function linger(state, field, sending, done)
  local seen, since = state[field], now()
  while not done() do
    sleep(STEP)
    if state[field] ~= seen or state[sending] then
      seen, since = state[field], now()
    elseif now() - since >= LINGER then
      return false
    end
  end
  return true
end

-- Copies upstream -> client until the upstream ends its sending (or fails),
-- then passes the end on and waits for the client to finish; the client
-- gone ends it at once. state.pump says what it is doing ("read": waiting
-- for the upstream, "send": waiting for the client, "ended": the upstream
-- has ended; nil once it returns); state.up_chunks and state.client_chunks
-- count what each side sent, and state.up_sending and state.client_sending
-- say that its relay waits to send it on, for the lingers.
local function pump(state)
  local up, client = state.up, state.socket
  local chunks = 0
  while true do
    state.pump = "read"
    local data, err = up:receive(nil, WAIT)
    if data then
      chunks = chunks + 1
      state.pump, state.up_chunks, state.up_sending = "send", chunks, true
      local sent = client:send(data)
      state.up_sending = false
      if not sent then -- the client is gone
        state.pump = nil
        up:close()
        client:close()
        return
      end
    elseif err ~= "timeout" then
      break -- the upstream ended its sending or failed, after its last bytes
    end
  end
  state.pump = "ended"
  client:shutdown("send") -- once what is queued for it is written
  -- the client may still send: until its end (with_close), a relay to the
  -- upstream that fails, or LINGER seconds of silence
  linger(state, "client_chunks", "client_sending",
    function() return state.closing or state.up_failed end)
  state.pump = nil
  if not state.closing then client:close() end -- with_close closes the upstream
end

function with_init(state)
  local client = state.socket
  local up, err = open_upstream()
  if not up then
    local ip, port = client:getpeername()
    stderr:write(("proxy: conn %d (%s:%s): upstream %s: %s\n"):format(
      client.id, tostring(ip), tostring(port), UPSTREAM, err))
    client:close()
    return
  end
  up:settimeout(CHECK)
  state.up, state.up_chunks, state.client_chunks = up, 0, 0
  state.pump = "read"
  spawn(pump, state)
end

function handler(msg, state)
  local up = state.up
  if not up or state.gone then return end -- what a vanished client left
  state.client_chunks = state.client_chunks + 1
  -- Waits while the upstream does not read. A wait gives up every CHECK
  -- seconds to see whether the client is still there: reset, or closed by
  -- idle_timeout, it ends the wait, and what the client left buffered is
  -- dropped, so with_close can run and close the upstream. A failure (the upstream is gone) is the pump's to act on:
  -- reading the same socket, it still relays what the upstream sent
  -- before it went.
  state.client_sending = true
  local n, err, taken = up:send(msg)
  local from = 1
  while not n and err == "timeout" do
    if not state.socket:getpeername() then
      state.gone = true
      break
    end
    from = from + taken
    n, err, taken = up:send(msg, from)
  end
  state.client_sending = false
  if not n and err ~= "timeout" then state.up_failed = true end
end

function with_close(state, reason)
  local up = state.up
  if not up then return end
  state.closing = true
  if reason == "closed" then
    -- The client has ended its sending (or vanished); its socket is still
    -- open for writing. Pass the end on once what it sent is written, and
    -- relay the upstream's answer until the upstream ends too, or stays
    -- silent for LINGER seconds. A client that vanished fails the pump's
    -- next send.
    up:shutdown("send")
    linger(state, "up_chunks", "up_sending",
      function() return state.pump == nil or state.pump == "ended" end)
  end
  -- flushes what the client sent, and wakes the pump if it still waits
  -- (its receive gives "closed")
  up:close()
end
