-- scripts/proxy.lua, the TCP proxy, under the glisten-lua command, between
-- real peers: upstreams scripts/echo.lua, redis-server, socat and scripts
-- of the spec's own; clients glisten sockets in this runner, nc -N and
-- redis-cli. (spec/proxy_spec.lua is about the PROXY protocol.)
local glisten = H.glisten

-- Every wait here only bounds a hang; a busy machine must never reach it.
local LONG = 60

-- A client whose every call waits at most LONG seconds.
local function connect(port) return H.connect(port, nil, LONG) end

local runner_pid = tonumber(H.readfile("/proc/self/stat"):match("^(%d+)"))

-- Starts scripts/proxy.lua relaying to `upstream` (HOST:PORT or unix:PATH),
-- with GLISTEN_PROXY_LINGER `linger` (1 s unless given) and `flags` before
-- the script. Under the sanitizers its quarantine is capped at 4 MiB, as
-- a full one would look like memory held (the chaos run does the same).
local function proxy(upstream, linger, flags)
  local asan = os.getenv("ASAN_OPTIONS")
  asan = (asan and asan ~= "" and asan .. ":" or "") .. "quarantine_size_mb=4"
  return H.start((flags or "") .. " scripts/proxy.lua", {
    prefix = ("export GLISTEN_UPSTREAM=%s GLISTEN_PROXY_LINGER=%s ASAN_OPTIONS=%s;"):format(
      H.quote(upstream), linger or 1, H.quote(asan)),
  })
end

-- Open descriptors of process pid.
local function fds(pid)
  local out = H.peer(("ls /proc/%d/fd"):format(pid))
  local n = 0
  for _ in out:gmatch("%d+") do n = n + 1 end
  return n
end

-- Waits until process pid holds `base` descriptors again (its listener and
-- nothing else: every client and upstream socket closed).
local function assert_fds(pid, base)
  local now
  assert(H.wait_for(function()
    now = fds(pid)
    return now == base
  end, LONG), ("%d descriptors open, %d expected"):format(now, base))
end

-- Resident memory of process pid, in bytes.
local function rss(pid)
  local status = assert(H.readfile("/proc/" .. pid .. "/status"))
  return tonumber(status:match("VmRSS:%s*(%d+) kB")) * 1024
end

-- Peers that are not glisten-lua (redis-server, socat), started in the
-- background with a watchdog that ends them should this runner die, and
-- ended by their pid after each spec.
local peers, npeer = {}, 0
local function background(cmd)
  npeer = npeer + 1
  local base = ("%s/proxy_peer%d"):format(H.tmpdir, npeer)
  local sh = ("(%s >%s.out 2>&1 & c=$!; echo $c >%s.pid; "
    .. "(while kill -0 %d && kill -0 $c; do sleep 1; done 2>/dev/null; "
    .. "kill -0 %d 2>/dev/null || kill -9 $c 2>/dev/null) & "
    .. "wait $c) >/dev/null 2>&1 &"):format(cmd, base, base, runner_pid, runner_pid)
  os.execute("env -u LD_PRELOAD sh -c " .. H.quote(sh))
  local p = {}
  assert(H.wait_for(function()
    p.pid = tonumber((H.readfile(base .. ".pid") or ""):match("^(%d+)\n"))
    return p.pid ~= nil
  end, 10), "no pid for: " .. cmd)
  function p:alive() return os.execute(("kill -0 %d 2>/dev/null"):format(self.pid)) == true end
  function p:stop()
    os.execute(("kill %d 2>/dev/null"):format(self.pid))
    assert(H.wait_for(function() return not self:alive() end, LONG))
  end
  function p:output() return H.readfile(base .. ".out") or "" end
  peers[#peers + 1] = p
  return p
end

local function cleanup()
  for _, p in ipairs(peers) do
    if p:alive() then p:stop() end
  end
  peers = {}
  H.no_leaks()
end

-- A port nothing listens on (now).
local function free_port()
  local l = assert(glisten.listen(0))
  local port = l.port
  l:close()
  return port
end

-- Waits until something accepts on 127.0.0.1:port.
local function wait_listening(port)
  assert(H.wait_for(function()
    local s = glisten.connect("127.0.0.1", port, 1)
    if s then s:close() end
    return s ~= nil
  end, LONG), "nothing listens on port " .. port)
end

-- Asserts that c's peer ended the connection: closed, or reset (a socket
-- closed with bytes in it unread resets).
local function assert_ended(c)
  local data, err = c:receive()
  assert(data == nil and (err == "closed" or err:match("reset")),
    ("expected the connection to end; got %s, %s"):format(tostring(data), tostring(err)))
end

-- echo, with a line on stderr as each connection opens and closes (an
-- upstream whose connections the spec counts); a chunk starting with
-- "STALL" makes it stop reading.
local COUNTED_ECHO = [[
function with_init(state) io.stderr:write("open\n") end
function handler(msg, state)
  if msg:sub(1, 5) == "STALL" then glisten.sleep(600) end
  state.socket:send(msg)
end
function with_close(state, reason) io.stderr:write("close ", reason, "\n") end
]]

describe("scripts/proxy.lua", function()
  after_each(cleanup)

  it("relays to scripts/echo.lua both ways: glisten clients, each its own, and nc -N", function()
    local echo = H.start("scripts/echo.lua")
    local p = proxy("127.0.0.1:" .. echo.port)
    local base = fds(p.pid)
    local a, b = connect(p.port), connect(p.port)
    a:send("from a")
    b:send("from b")
    assert.equal("from b", b:receive(6))
    assert.equal("from a", a:receive(6))
    -- 200 small writes in a row, each read back in order
    local t = {}
    for i = 1, 200 do
      t[i] = ("line %03d\n"):format(i)
      a:send(t[i])
    end
    for i = 1, 200 do assert.equal(t[i], a:receive("*L")) end
    a:close()
    b:close()
    -- nc -N shuts down its write side at the end of its input: the echo of
    -- what it sent still reaches it, then the connection ends
    local text = "hello\nworld\r\nno newline at the end"
    local out, ok = H.peer(("nc -N 127.0.0.1 %d"):format(p.port), text)
    assert.is_true(ok, out)
    assert.equal(text, out)
    local bin = "\0\1\2\255" .. H.random_bytes(1024 * 1024)
    out, ok = H.peer(("nc -N 127.0.0.1 %d"):format(p.port), bin)
    assert.is_true(ok)
    assert.equal(#bin, #out)
    assert.is_true(bin == out, "the binary echo differs")
    assert_fds(p.pid, base)
    assert.equal(0, p:stop())
    assert.equal(0, echo:stop())
    assert.not_matches("error", p:stderr())
  end)

  it("carries 20 MB of random bytes to echo and back, byte for byte, also with -w 2", function()
    local echo = H.start("scripts/echo.lua")
    local big = H.random_bytes(20 * 1000 * 1000)
    for _, flags in ipairs{ "", "-w 2" } do
      local p = proxy("127.0.0.1:" .. echo.port, 1, flags)
      local base = fds(p.pid)
      local c = connect(p.port)
      local sent
      glisten.spawn(function()
        for i = 1, #big, 65536 do c:send(big, i, math.min(i + 65535, #big)) end
        sent = true
      end)
      local back, err = c:receive(#big)
      assert.is_nil(err)
      assert.is_true(sent)
      assert.equal(#big, #back)
      assert.is_true(back == big, "the 20 MB differ")
      c:close()
      assert_fds(p.pid, base)
      assert.equal(0, p:stop())
      assert.not_matches("error", p:stderr())
    end
    assert.equal(0, echo:stop())
  end)

  -- Loopback's buffers may hold tens of megabytes, so the flood goes on to
  -- the first refusal (backpressure found, not assumed), at most 256 MiB:
  -- a proxy that read without waiting would take it all, into its memory.
  it("holds bounded memory for a client that sends without reading, and loses no byte", function()
    local echo = H.start("scripts/echo.lua")
    local p = proxy("127.0.0.1:" .. echo.port)
    local c = connect(p.port)
    c:send("warm-up")
    assert.equal("warm-up", c:receive(7))
    local rss0 = rss(p.pid)
    local peak, flooding = rss0, true
    glisten.spawn(function()
      while flooding do
        peak = math.max(peak, rss(p.pid))
        glisten.sleep(0.05)
      end
    end)
    local taken, why = 0, "never refused"
    c:settimeout(2)
    while taken < 256 * 1024 * 1024 do
      local n, err, part = c:send(H.stream(taken + 1, taken + 65536))
      if not n then
        taken, why = taken + part, err
        break
      end
      taken = taken + n
    end
    flooding = false
    peak = math.max(peak, rss(p.pid))
    -- the client's sends were refused: the proxy stopped reading it, as
    -- echo stopped reading the proxy, blocked on its own output
    assert.equal("timeout", why)
    assert.is_true(peak - rss0 < 32 * 1024 * 1024,
      ("the proxy's RSS grew by %.1f MiB while %.1f MiB were sent"):format(
        (peak - rss0) / 2 ^ 20, taken / 2 ^ 20))
    -- and every byte comes back, in order
    c:settimeout(LONG)
    H.read_stream(c, 0, taken)
    c:close()
    assert.equal(0, p:stop())
    assert.equal(0, echo:stop())
  end)

  it("serves redis-cli against redis-server: SET and GET, and 10,000 commands through --pipe", function()
    local port = free_port()
    local redis = background(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no"):format(port))
    wait_listening(port)
    local p = proxy("127.0.0.1:" .. port)
    local base = fds(p.pid)
    local cli = ("redis-cli -p %d "):format(p.port)
    assert.equal("OK\n", H.peer(cli .. "set greeting hello"))
    assert.equal("hello\n", H.peer(cli .. "get greeting"))
    assert.equal("1\n2\n2\n", H.peer(cli, "incr n\nincr n\nget n\n"))
    local cmds = {}
    for i = 1, 10000 do
      local k, v = "key:" .. i, "value " .. i
      cmds[i] = ("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"):format(#k, k, #v, v)
    end
    local out = H.peer(cli .. "--pipe", table.concat(cmds))
    assert.matches("errors: 0, replies: 10000", out)
    assert.equal("10002\n", H.peer(cli .. "dbsize"))
    assert.equal("value 1234\n", H.peer(cli .. "get key:1234"))
    assert_fds(p.pid, base)
    redis:stop()
    -- the upstream gone: each client is closed at once, and logged
    out = H.peer(cli .. "get greeting")
    assert.is_truthy(out:find("closed") or out:find("reset"), out)
    assert.matches("Connection refused", p:stderr())
    assert.equal(0, p:stop())
  end)

  it("relays the answer to a client that shut down its write side (nc -N, a socat upstream)", function()
    local port = free_port()
    background(("socat TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork SYSTEM:'sed -u s/^/got=/'"):format(port))
    wait_listening(port)
    local p = proxy("127.0.0.1:" .. port, 3)
    local base = fds(p.pid)
    local out, ok = H.peer(("nc -N 127.0.0.1 %d"):format(p.port), "one\ntwo\nthree\n")
    assert.is_true(ok, out)
    assert.equal("got=one\ngot=two\ngot=three\n", out)
    assert_fds(p.pid, base)
    assert.equal(0, p:stop())
  end)

  it("relays a large answer made at the end of input to a half-closed client that reads it slowly, then closes", function()
    -- the upstream answers (8 MiB) only once it reads the end of input the
    -- proxy passed on; the answer waits in the proxy's send to nc, whose
    -- output goes to a pipe nobody reads for a while: the linger counts
    -- only silence from the upstream, never a wait to send to the client
    local N = 8 * 1024 * 1024
    local up = H.start(H.script(H.STREAM .. ([[
      function handler() end
      function with_close(state, reason)
        if reason == "closed" then state.socket:send(S.stream(1, %d)) end
      end
    ]]):format(N)))
    local p = proxy("127.0.0.1:" .. up.port)
    local base = fds(p.pid)
    local out, ok = H.peer(("sh -c %s"):format(H.quote(
      ("nc -N 127.0.0.1 %d | (sleep 3; cat)"):format(p.port))), "go\n")
    assert.is_true(ok)
    assert.equal(N, #out)
    assert.is_true(out == H.stream(1, N), "the answer differs")
    assert_fds(p.pid, base)
    assert.equal(0, p:stop())
    assert.equal(0, up:stop())
  end)

  it("passes the client's end of input on: an upstream that answers only then (wc -c) is heard", function()
    local port = free_port()
    background(("socat TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork SYSTEM:'wc -c'"):format(port))
    wait_listening(port)
    local p = proxy("127.0.0.1:" .. port, LONG) -- no linger can cut it short
    local base = fds(p.pid)
    for _, input in ipairs({ "some input\n", ("x"):rep(300000) }) do
      local out, ok = H.peer(("nc -N 127.0.0.1 %d"):format(p.port), input)
      assert.is_true(ok, out)
      assert.equal(tostring(#input), out:match("^%s*(%d+)%s*$"))
    end
    assert_fds(p.pid, base)
    assert.equal(0, p:stop())
  end)

  it("passes the upstream's end on, and what the client sends after it still reaches the upstream", function()
    -- the upstream greets, ends its sending, and reads on; it tells on
    -- stderr how many bytes it got when the client ends
    local up = H.start(H.script([[
      function with_init(state)
        state.socket:send("hello\n")
        assert(state.socket:shutdown("send"))
        state.got = 0
      end
      function handler(msg, state) state.got = state.got + #msg end
      function with_close(state, reason)
        io.stderr:write(("got %d %s\n"):format(state.got, reason))
      end
    ]]))
    local p = proxy("127.0.0.1:" .. up.port, LONG)
    local base = fds(p.pid)
    local c = connect(p.port)
    assert.equal("hello", c:receive("*l"))
    H.assert_closed(c) -- the upstream's end, passed on
    for _ = 1, 10 do assert.equal(1000, c:send(("y"):rep(1000))) end
    c:close()
    assert.truthy(H.wait_for(function() return up:stderr():match("got %d+ %a+\n") end, LONG), up:stderr())
    assert.equal("got 10000 closed\n", up:stderr():match("got %d+ %a+\n"))
    assert_fds(p.pid, base)
    assert.equal(0, p:stop())
    assert.equal(0, up:stop())
  end)

  it("flushes what the upstream sent before it closed, then closes the client", function()
    local N = 4 * 1024 * 1024
    local up = H.start(H.script(H.STREAM .. ([[
      function with_init(state)
        state.socket:send(S.stream(1, %d))
        state.socket:close()
      end
      function handler() end
    ]]):format(N)))
    local p = proxy("127.0.0.1:" .. up.port)
    local base = fds(p.pid)
    for _ = 1, 2 do
      local c = connect(p.port)
      glisten.sleep(0.2) -- a late reader: the bytes wait in the proxy and the kernel
      H.read_stream(c, 0, N)
      H.assert_closed(c)
      c:close()
    end
    assert_fds(p.pid, base)
    assert.equal(0, p:stop())
    assert.equal(0, up:stop())
  end)

  it("closes the client at once when the upstream refuses, logs it, and goes on serving", function()
    local port = free_port()
    local p = proxy("127.0.0.1:" .. port)
    local base = fds(p.pid)
    for _ = 1, 3 do
      local c = connect(p.port)
      c:send("anyone there?")
      assert_ended(c)
      c:close()
    end
    assert.equal(3, H.count_lines(p.base .. ".e",
      "^proxy: conn %d+ %(127%.0%.0%.1:%d+%): upstream 127%.0%.0%.1:" .. port .. ": Connection refused$"))
    -- the same proxy relays once the upstream is there
    local echo = H.start("scripts/echo.lua " .. port)
    local c = connect(p.port)
    c:send("now")
    assert.equal("now", c:receive(3))
    c:close()
    assert_fds(p.pid, base)
    assert.equal(0, p:stop())
    assert.equal(0, echo:stop())
  end)

  it("closes the upstream when the client vanishes, whatever the proxy was doing", function()
    local up = H.start(H.script(COUNTED_ECHO))
    local log = up.base .. ".e"
    local p = proxy("127.0.0.1:" .. up.port)
    local base = fds(p.pid)
    local function closes() return H.count_lines(log, "^close ") end
    local function reset(c)
      c:setoption("linger", { on = true, timeout = 0 })
      c:close()
    end

    -- idle, after a round trip: a reset
    local c = connect(p.port)
    c:send("hi")
    assert.equal("hi", c:receive(2))
    reset(c)
    assert.is_true(H.wait_for(function() return closes() == 1 end, LONG))
    -- idle: a plain close (the upstream is closed after the linger)
    c = connect(p.port)
    c:send("bye")
    assert.equal("bye", c:receive(3))
    c:close()
    assert.is_true(H.wait_for(function() return closes() == 2 end, LONG))
    -- while the upstream's echo is piling up towards a client that does not
    -- read (the proxy waits to send to it)
    c = connect(p.port)
    local taken = H.flood(c, 65536, 0.5)
    assert.is_true(taken > 0)
    reset(c)
    assert.is_true(H.wait_for(function() return closes() == 3 end, LONG))
    -- while the upstream does not read (the proxy waits to send to it)
    c = connect(p.port)
    c:send("STALL")
    taken = H.flood(c, 65536, 0.5)
    assert.is_true(taken > 0)
    reset(c)
    -- the upstream's own callback sleeps, so its with_close waits: the
    -- proxy's descriptors say that it closed its side
    assert_fds(p.pid, base)
    assert.equal(4, H.count_lines(log, "^open$"))
    assert.equal(0, p:stop())
    assert.not_matches("error", p:stderr())
    up:signal("KILL")
  end)

  it("relays to an upstream on a Unix socket (unix:PATH)", function()
    local path = H.tmpdir .. "/proxy_echo.sock"
    local echo = H.start("scripts/echo.lua unix:" .. H.quote(path))
    local p = proxy("unix:" .. path)
    local c = connect(p.port)
    c:send("over unix")
    assert.equal("over unix", c:receive(9))
    c:close()
    assert.equal(0, p:stop())
    assert.equal(0, echo:stop())
  end)

  it("refuses to start without a usable GLISTEN_UPSTREAM", function()
    for _, case in ipairs{
      { "", "set GLISTEN_UPSTREAM" },
      { "nowhere", "GLISTEN_UPSTREAM must be HOST:PORT" },
      { "127.0.0.1:0", "GLISTEN_UPSTREAM must be HOST:PORT" },
      { "127.0.0.1:99999", "GLISTEN_UPSTREAM must be HOST:PORT" },
    } do
      local out, ok = H.peer(("env GLISTEN_UPSTREAM=%s %s --check scripts/proxy.lua"):format(
        H.quote(case[1]), H.quote(H.bin)))
      assert.is_falsy(ok)
      assert.matches(case[2], out, 1, true)
    end
    local out, ok = H.peer(("env GLISTEN_UPSTREAM=127.0.0.1:1 GLISTEN_PROXY_LINGER=soon %s --check scripts/proxy.lua")
      :format(H.quote(H.bin)))
    assert.is_falsy(ok)
    assert.matches("GLISTEN_PROXY_LINGER must be a number of seconds", out, 1, true)
  end)
end)
