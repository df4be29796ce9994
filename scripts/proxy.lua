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
--   GLISTEN_PROXY_LINGER     seconds of silence from the upstream, once the
--                            client has finished sending, before the
--                            upstream is closed (2; see "Half-close" below)
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
-- client is closed at once, and one line logged. The upstream closes (or
-- fails): what it sent is flushed to the client (for up to 5 s), then the
-- client is closed. The client closes, vanishes or fails: what it sent is
-- flushed to the upstream, then the upstream is closed. with_close runs
-- once in every case, and both sockets are closed when it returns.
--
-- Half-close. glisten's sockets have no shutdown(SHUT_WR): a side can be
-- closed, not told "no more data" while the other way goes on. So when the
-- client shuts down its write side (nc -N, shutdown(2)), the upstream cannot
-- be told. The proxy goes on relaying the upstream's answer, and closes the
-- upstream once it has been silent for GLISTEN_PROXY_LINGER seconds (or at
-- once when it closes itself). A request that is answered before the
-- client's end of input (echo, redis, HTTP) gets its whole answer; an
-- upstream that waits for the end of input before it answers (`sort`, say)
-- sees it only when it is closed, too late to answer. The other way, an
-- upstream's end of input closes the client (after the flush): a client
-- still sending then gets a reset.
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
local LINGER = seconds("GLISTEN_PROXY_LINGER", 2)
-- how often with_close looks at the upstream while it lingers
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

-- Copies upstream -> client until either side ends, then closes both (the
-- closes flush what is queued). state.pump says what it is doing ("read":
-- waiting for the upstream, "send": waiting for the client; nil once it has
-- ended) and state.chunks counts what it relayed: with_close watches both.
local function pump(state)
  local up, client = state.up, state.socket
  local chunks = 0
  while true do
    state.pump = "read"
    local data, err = up:receive(nil, WAIT)
    if data then
      chunks = chunks + 1
      state.pump, state.chunks = "send", chunks
      if not client:send(data) then break end -- the client is gone
    elseif err ~= "timeout" then
      break -- the upstream closed or failed (after the last bytes it sent)
    end
  end
  state.pump = nil
  up:close()
  client:close()
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
  state.up, state.chunks = up, 0
  state.pump = "read"
  spawn(pump, state)
end

function handler(msg, state)
  local up = state.up
  if not up then return end
  -- Waits while the upstream does not read. A failure (the upstream is
  -- gone) needs nothing here: the pump, reading the same socket, ends the
  -- connection. A wait gives up every CHECK seconds to see whether the
  -- client is still there: reset, or closed by idle_timeout, it ends the
  -- wait, so with_close can run and close the upstream.
  local n, err, taken = up:send(msg)
  local from = 1
  while not n and err == "timeout" do
    if not state.socket:getpeername() then return end
    from = from + taken
    n, err, taken = up:send(msg, from)
  end
end

function with_close(state, reason)
  local up = state.up
  if not up then return end
  if reason == "closed" then
    -- The client has finished sending (or vanished); its socket is still
    -- open for writing. Relay the upstream's answer until it has been
    -- silent for LINGER seconds, as no shutdown(SHUT_WR) can tell it that
    -- the client is done. A client that vanished fails the pump's next send.
    local seen, since = state.chunks, now()
    while state.pump do
      sleep(STEP)
      if state.chunks ~= seen or state.pump ~= "read" then
        seen, since = state.chunks, now()
      elseif now() - since >= LINGER then
        break
      end
    end
  end
  -- flushes what the client sent, and wakes the pump if it still waits
  -- (its receive gives "closed")
  up:close()
end
