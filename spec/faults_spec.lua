-- Faults: bad input must meet a clear error and lose nothing. Running out
-- of descriptors, peers that vanish, garbage bytes, peers that never read,
-- one peer flooding, the connection cap, and scripts failing at run time.
-- Everything runs on 127.0.0.1 and is bounded in count and time.
local glisten = H.glisten

local ECHO = [[
function handler(msg, state) state.socket:send(msg) end
]]

-- H.start remembers every process; H.no_leaks (after each test) ends any
-- a failed test left running.
local start, cleanup = H.start, H.no_leaks
local function stop(p) return p:stop() end

-- Whether the process is still running (not exited, not a zombie).
local function alive(p)
  local rc = H.readfile(p.base .. ".rc")
  if rc and rc:match("%d") then return false end
  local stat = H.readfile("/proc/" .. p.pid .. "/stat")
  return stat ~= nil and stat:match("%) (%a)") ~= "Z"
end

local CLK_TCK
-- CPU time (user + system) the process has used so far, in seconds.
local function cpu_seconds(pid)
  if not CLK_TCK then
    local f = io.popen("getconf CLK_TCK")
    CLK_TCK = tonumber(f:read("a")) or 100
    f:close()
  end
  local stat = assert(H.readfile("/proc/" .. pid .. "/stat"))
  local fields = {}
  for w in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
  -- fields[1] is field 3 (state): utime and stime are fields 14 and 15
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK
end

-- Resident memory of the process, in bytes.
local function rss(pid)
  local status = assert(H.readfile("/proc/" .. pid .. "/status"))
  return tonumber(status:match("VmRSS:%s*(%d+) kB")) * 1024
end

local random_bytes = H.random_bytes

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Sends chunk after chunk, each send with a timeout of `timeout` seconds,
-- until the first refusal: a send that gives up because a peer that does
-- not read has filled the kernel's buffers, then the queue. No fixed size:
-- the kernel may hold any amount. Returns the bytes taken and the refusal
-- ("timeout", or why the socket failed).
local function flood(sock, chunk, timeout)
  local taken = 0
  sock:settimeout(timeout)
  while taken < 1024 * 1024 * 1024 do -- a bound against a hang only
    local n, err, part = sock:send(chunk)
    if not n then return taken + part, err end
    taken = taken + n
  end
  return taken, "never refused"
end

describe("running out of descriptors", function()
  after_each(cleanup)

  it("neither dies nor spins, and serves the clients left waiting once descriptors free up", function()
    local p = start(H.script(ECHO), { prefix = "ulimit -n 64;" })
    assert.matches("Max open files%s+64%s", H.readfile("/proc/" .. p.pid .. "/limits"))
    local N = 100
    local clients, got = {}, {}
    local function expected(i) return ("hello %03d"):format(i) end
    for i = 1, N do
      -- the kernel completes every handshake (backlog 1024); the server
      -- can hold fewer than 64 of them
      clients[i] = H.connect(p.port)
      clients[i]:send(expected(i) .. "\n")
      glisten.spawn(function()
        local line, err = clients[i]:receive("*l", 30)
        got[i] = line or err
      end)
    end
    -- those the server could accept are echoed; then the count stops growing
    assert.is_true(H.wait_for(function() return count(got) > 0 end, 5))
    local served
    assert.is_true(H.wait_for(function()
      local n = count(got)
      glisten.sleep(1)
      if n == count(got) then served = n; return true end
    end, 30))
    assert.is_true(served < N, "the descriptor limit did not bite: " .. served .. " served")
    assert.is_true(served > 10)
    for i in pairs(got) do assert.equal(expected(i), got[i]) end
    assert.matches("Too many open files", p:stderr())

    -- stuck: alive, and not burning CPU while it waits for descriptors
    local cpu0 = cpu_seconds(p.pid)
    glisten.sleep(1)
    local used = cpu_seconds(p.pid) - cpu0
    assert.is_true(alive(p))
    assert.is_true(used < 0.5, ("used %.2f s of CPU in 1 s while out of descriptors"):format(used))
    assert.equal(served, count(got)) -- still stuck: nobody new was served

    -- the served clients leave; every waiting client gets its echo
    for i in pairs(got) do clients[i]:close() end
    assert.is_true(H.wait_for(function() return count(got) == N end, 15),
      ("only %d of %d clients were served"):format(count(got), N))
    for i = 1, N do assert.equal(expected(i), got[i]) end
    assert.is_true(alive(p))

    -- and new clients too
    for i = 1, N do clients[i]:close() end
    local c = H.connect(p.port)
    c:send("after"); assert.equal("after", c:receive(5))
    c:close()
    assert.equal(0, stop(p))
  end)
end)

describe("peers that vanish", function()
  after_each(cleanup)

  it("end only their own connection; with_close runs once for each", function()
    local inits, closes, reasons, partials = 0, {}, {}, {}
    local waiting, blocked_sends = 0, {}
    local chunk = ("v"):rep(65536)
    local base = glisten.stats().connections
    H.serving({
      with_init = function(state)
        inits = inits + 1
        local s = state.socket
        while true do
          local line, err, partial = s:receive("*l")
          if not line then
            if partial ~= "" then partials[#partials + 1] = partial end
            return
          end
          if line == "BIG" then
            -- until a send is refused: the kernel's buffers and the queue
            -- are full; then a send with no timeout waits for the peer
            local _, err = flood(s, chunk, 0.2)
            if err ~= "timeout" then
              blocked_sends[#blocked_sends + 1] = "flood: " .. tostring(err)
              return
            end
            s:settimeout(nil)
            waiting = waiting + 1
            local n, serr = s:send(chunk)
            blocked_sends[#blocked_sends + 1] = n and "sent" or serr
            return
          else
            s:send("ok " .. line .. "\n")
          end
        end
      end,
      handler = function() end,
      with_close = function(state, reason)
        local id = state.socket.id
        closes[id] = (closes[id] or 0) + 1
        reasons[#reasons + 1] = reason
      end,
    }, function(srv)
      local steady = H.connect(srv.port)
      local n = 0
      local function steady_ok()
        n = n + 1
        steady:send("steady " .. n .. "\n")
        assert.equal("ok steady " .. n, steady:receive("*l"))
      end
      steady_ok()
      local peers = 1
      for _ = 1, 5 do
        -- connects and closes at once
        local c = H.connect(srv.port)
        c:close()
        -- closes in the middle of a line
        c = H.connect(srv.port)
        c:send("first\nhalf a li")
        assert.equal("ok first", c:receive("*l"))
        c:close()
        -- closes with a reply unread while the server waits to send more:
        -- the kernel resets the connection
        c = H.connect(srv.port)
        local waited = waiting
        c:send("BIG\n")
        assert.equal(chunk:sub(1, 100), c:receive(100))
        assert.is_true(H.wait_for(function() return waiting > waited end, 60),
          "the server never came to wait to send")
        c:close()
        -- sends many requests and closes without reading any reply
        c = H.connect(srv.port)
        c:send(("req\n"):rep(5000))
        c:close()
        peers = peers + 4
        steady_ok()
      end
      assert.is_true(H.wait_for(function() return count(closes) == peers - 1 end, 5),
        ("with_close ran for %d of %d vanished peers"):format(count(closes), peers - 1))
      -- only the steady connection is left, both of its ends in this process
      assert.is_true(H.wait_for(function() return glisten.stats().connections == base + 2 end, 5))
      assert.equal(2, glisten.stats().connections - base)
      steady_ok()
      steady:close()
      assert.is_true(H.wait_for(function() return count(closes) == peers end, 5))
      glisten.sleep(0.05)
      assert.equal(peers, inits)
    end)
    for id, k in pairs(closes) do assert.equal(1, k, "with_close ran " .. k .. " times for " .. id) end
    -- each waiting send learned that its peer was gone
    assert.same({ "closed", "closed", "closed", "closed", "closed" }, blocked_sends)
    for _, r in ipairs(reasons) do assert.equal("closed", r) end
    assert.equal(5, #partials)
    for _, part in ipairs(partials) do assert.equal("half a li", part) end
    assert.equal(base, glisten.stats().connections)
  end)

  it("leave their last words readable, even by a client that is still sending", function()
    -- The server answers a line too long with an error and closes with
    -- input unread, so its kernel resets the connection right after the
    -- answer. A peer reading from the kernel gets the answer, then the
    -- reset; so must a glisten client that is still sending.
    H.serving({
      max_line = 1024,
      with_init = function(state)
        local _, err = state.socket:receive("*l")
        state.socket:send("ERR " .. tostring(err) .. "\n")
        state.socket:close()
      end,
      handler = function() end,
    }, function(srv)
      local c = H.connect(srv.port)
      local chunk = ("j"):rep(65536)
      local send_err
      glisten.spawn(function()
        for _ = 1, 1024 do -- up to 64 MiB: past what loopback buffers absorb
          local n, err = c:send(chunk)
          if not n then send_err = err; return end
        end
        send_err = "all sent"
      end)
      local line, err = c:receive("*l")
      assert.is_true(H.wait_for(function() return send_err end, 5))
      c:close()
      assert.equal("closed", send_err)
      assert.equal("ERR too long", line, "the answer was lost: " .. tostring(err))
    end)
  end)
end)

describe("garbage bytes", function()
  after_each(cleanup)

  -- 4 MiB of random bytes that start with a NUL and invalid UTF-8.
  local function garbage()
    return "\0\255\254\192\128\237\160\128" .. random_bytes(4 * 1024 * 1024)
  end

  -- Sends data 64 KiB at a time to a connection the server has closed;
  -- returns whether a send failed before all of it was taken.
  local function refused(c, data)
    for i = 1, #data // 65536 do
      if not c:send(data, (i - 1) * 65536 + 1, i * 65536) then return true end
    end
    return false
  end

  it("meet ERR and a close from scripts/handshake.lua; the server keeps serving", function()
    -- handshake.lua plus a with_close that reports what happened
    local p = start("--max-line 1024 " .. H.script([[
      local t = dofile("scripts/handshake.lua")
      t.with_close = function(state, reason)
        io.stderr:write("with_close ", reason, " ", tostring(state.name), "\n")
      end
      return t
    ]]))
    local junk = garbage()

    -- a first line of garbage
    local c = H.connect(p.port)
    c:send(junk:sub(1, 4096) .. "\n")
    assert.equal("ERR expected: HELLO <name>", c:receive("*l"))
    H.assert_closed(c)
    -- the server closed for good: megabytes more are refused, not buffered
    assert.is_true(refused(c, junk), "4 MiB more were taken by a closed connection")
    c:close()

    -- garbage with no end of line, past max_line: the line mode ends the
    -- connection ("error"), with nothing more of it buffered
    local nl_free = junk:gsub("\n", "\0")
    c = H.connect(p.port)
    c:send(nl_free:sub(1, 4096))
    H.assert_closed(c)
    assert.is_true(refused(c, nl_free), "a 4 MiB line was taken")
    c:close()
    assert.is_true(H.wait_for(function()
      return p:stderr():find("with_close local nil", 1, true)
        and p:stderr():find("with_close error nil", 1, true)
    end))

    -- the server is alive and serves a good client
    assert.is_true(alive(p))
    local good = H.connect(p.port)
    good:send("HELLO bob\n" .. string.pack(">s4", "hey"))
    assert.equal("WELCOME bob", good:receive("*l"))
    assert.equal(string.pack(">s4", "bob: hey"), good:receive(12))
    good:close()
    assert.is_true(H.wait_for(function() return p:stderr():find("with_close closed bob") end))
    assert.equal(0, stop(p))
  end)

  it("pass through a line-based script intact, and a line too long is refused clearly", function()
    local p = start("--max-line 16384 " .. H.script([[
      function with_init(state)
        local s = state.socket
        while true do
          local line, err = s:receive("*l")
          if not line then
            io.stderr:write(("conn %d: %s\n"):format(s.id, err))
            if err == "too long" then
              s:send("ERR line too long\n")
              s:close()
            end
            return
          end
          s:send(#line .. "\n")
        end
      end
      function handler() end
    ]]))
    local junk = garbage()
    -- the length of each line the server should see ("\r\n" ends a line too)
    local lengths = {}
    for line in junk:gmatch("([^\n]*)\n") do
      assert(#line <= 16384, "an unlucky draw: run again")
      lengths[#lengths + 1] = tostring(#line - (line:sub(-1) == "\r" and 1 or 0))
    end
    assert.is_true(#lengths > 1000)

    -- 4 MiB in, every line answered while the rest streams in
    local c = H.connect(p.port)
    glisten.spawn(function()
      for i = 1, #junk // 65536 + 1 do c:send(junk, (i - 1) * 65536 + 1, i * 65536) end
    end)
    local replies = {}
    for i = 1, #lengths do
      local r, err = c:receive("*l")
      if not r then error(("reply %d of %d: %s"):format(i, #lengths, err)) end
      replies[i] = r
    end
    assert.same(lengths, replies)
    c:close()
    assert.is_true(H.wait_for(function() return p:stderr():find("conn %d+: closed") end))

    -- a line of binary bytes past max_line: ERR and a close
    local nl_free = junk:gsub("\n", "\0")
    c = H.connect(p.port)
    c:send(nl_free:sub(1, 20000))
    assert.equal("ERR line too long", c:receive("*l"))
    H.assert_closed(c)
    assert.is_true(refused(c, nl_free), "a 4 MiB line was taken")
    c:close()
    assert.matches("conn %d+: too long", p:stderr())

    -- still serving
    assert.is_true(alive(p))
    c = H.connect(p.port)
    c:send("abc\n")
    assert.equal("3", c:receive("*l"))
    c:close()
    assert.equal(0, stop(p))
  end)
end)

describe("peers that never read", function()
  after_each(cleanup)

  it("hold bounded memory, do not stop others, and are closed by --idle-timeout", function()
    local p = start("--idle-timeout 3 " .. H.script([[
      local chunk = ("x"):rep(65536)
      function with_init(state)
        state.mode = state.socket:receive("*l", 5)
      end
      function handler(msg, state)
        local s = state.socket
        if state.mode == "BIG" then -- each byte asks for 1 MiB
          for _ = 1, #msg do
            for _ = 1, 16 do
              if not s:send(chunk) then return end
            end
          end
        elseif state.mode == "AMPLIFY" then
          s:send(msg:rep(16))
        else
          s:send(msg)
        end
      end
      function with_close(state, reason)
        io.stderr:write("with_close ", tostring(state.mode), " ", reason, "\n")
      end
    ]]))
    local rss0 = rss(p.pid)

    -- asks for 1 GiB of replies and never reads
    local big = H.connect(p.port)
    big:send("BIG\n" .. ("g"):rep(1024))
    -- sends as fast as it can, each byte asking for 16 back, and never reads
    local amp = H.connect(p.port)
    amp:send("AMPLIFY\n")
    local flood = random_bytes(65536)
    local flooded, flooding = 0, true
    glisten.spawn(function()
      amp:settimeout(0.1)
      local deadline = glisten.now() + 1.5
      while glisten.now() < deadline do
        local n = amp:send(flood)
        if n then flooded = flooded + n end
      end
      flooding = false
    end)

    -- meanwhile memory stays bounded, and another client is served
    local other = H.connect(p.port)
    other:send("PLAIN\n")
    local peak = rss0
    for i = 1, 15 do
      local msg = "ping " .. i
      other:send(msg)
      assert.equal(msg, other:receive(#msg))
      peak = math.max(peak, rss(p.pid))
      glisten.sleep(0.1)
    end
    assert.is_true(H.wait_for(function() return not flooding end, 5))
    peak = math.max(peak, rss(p.pid))
    other:close()
    assert.is_true(flooded > 0)
    -- asked of the server: 1 GiB, plus 16 times what the flood got in
    local asked = 1024 * 1024 * 1024 + 16 * flooded
    assert.is_true(peak - rss0 < 64 * 1024 * 1024,
      ("RSS grew by %.1f MiB (asked for %.0f MiB)"):format((peak - rss0) / 2 ^ 20, asked / 2 ^ 20))

    -- with nothing moving for 3 s, both are closed with reason "timeout"
    assert.is_true(H.wait_for(function()
      local e = p:stderr()
      return e:find("with_close BIG timeout") and e:find("with_close AMPLIFY timeout")
    end, 30), p:stderr())
    -- and their clients find them closed after what the buffers held
    for _, s in ipairs{ big, amp } do
      local got, err = 0, nil
      repeat
        local data
        data, err = s:receive(65536, 5)
        if data then got = got + #data end
      until not data
      assert.equal("closed", err)
      assert.is_true(got < 64 * 1024 * 1024)
      s:close()
    end
    assert.is_true(alive(p))
    assert.equal(0, stop(p))
  end)
end)

describe("one peer flooding", function()
  after_each(cleanup)

  it("does not starve another doing request and response", function()
    local p = start(H.script([[
      function with_init(state)
        state.sink = state.socket:receive("*l", 5) == "FLOOD"
      end
      function handler(msg, state)
        if not state.sink then state.socket:send(msg) end
      end
    ]]))
    local flooder = H.connect(p.port)
    flooder:settimeout(30)
    flooder:send("FLOOD\n")
    local chunk = ("f"):rep(65536)
    local flooded, stop_flood, flood_done, flood_err = 0, false, false, nil
    glisten.spawn(function()
      -- until the other client is done; the count bounds a hang only
      while not stop_flood and flooded < 64 * 1024 * 1024 * 1024 do
        local n, err = flooder:send(chunk)
        if not n then flood_err = err; break end
        flooded = flooded + n
      end
      flood_done = true
    end)

    local pinger = H.connect(p.port)
    pinger:send("ECHO\n")
    assert.is_true(H.wait_for(function() return flooded >= 1024 * 1024 end, 30))
    local at_start = flooded
    local trips = 0
    for i = 1, 50 do
      local msg = ("ping %d;"):format(i)
      pinger:send(msg)
      assert.equal(msg, pinger:receive(#msg))
      trips = i
    end
    local flood_ran = not flood_done
    stop_flood = true
    local during = flooded - at_start
    assert.equal(50, trips)
    assert.is_true(flood_ran, "the flood stopped before the round trips were done: " .. tostring(flood_err))
    assert.is_true(during > 0, "the flood made no progress during the round trips")
    assert.is_true(H.wait_for(function() return flood_done end, 60))
    assert.is_nil(flood_err)
    flooder:close(); pinger:close()
    assert.equal(0, stop(p))
  end)
end)

describe("too many connections", function()
  after_each(cleanup)

  it("past --max-connections waits unserved, then is served with nothing lost", function()
    local p = start("--max-connections 2 " .. H.script(ECHO))
    local a, b = H.connect(p.port), H.connect(p.port)
    a:send("a"); assert.equal("a", a:receive(1))
    b:send("b"); assert.equal("b", b:receive(1))
    local c = H.connect(p.port)
    c:send("sent early;")
    assert.same({ nil, "timeout", "" }, { c:receive(1, 0.3) })
    c:send("and more")
    assert.same({ nil, "timeout", "" }, { c:receive(1, 0.2) })
    -- the first two still work
    a:send("a2"); assert.equal("a2", a:receive(2))
    b:send("b2"); assert.equal("b2", b:receive(2))
    a:close()
    assert.equal("sent early;and more", c:receive(19))
    c:send("later"); assert.equal("later", c:receive(5))
    -- and the cap holds again: a fourth waits until another leaves
    local d = H.connect(p.port)
    d:send("d")
    assert.same({ nil, "timeout", "" }, { d:receive(1, 0.3) })
    b:close()
    assert.equal("d", d:receive(1))
    c:close(); d:close()
    assert.equal(0, stop(p))
  end)
end)

describe("a script error at run time", function()
  after_each(cleanup)

  it("is logged with the connection id, the peer address and a traceback; serving goes on", function()
    local p = start(H.script([[
      function with_init(state) state.socket:send("id " .. state.socket.id .. "\n") end
      local function explode(msg) error("cannot handle " .. msg) end
      function handler(msg, state)
        if msg:find("boom") then explode(msg) end
        state.socket:send(msg)
      end
    ]]))
    local good = H.connect(p.port)
    assert.matches("^id %d+$", good:receive("*l"))
    good:send("1"); assert.equal("1", good:receive(1))

    local bad = H.connect(p.port)
    local id = tonumber(bad:receive("*l"):match("^id (%d+)$"))
    local _, port = bad:getsockname()
    bad:send("boom")
    H.assert_closed(bad)
    bad:close()
    assert.is_true(H.wait_for(function() return p:stderr():find("stack traceback") end))
    local err = p:stderr()
    assert.matches(("conn %d %%(127%%.0%%.0%%.1:%d%%)"):format(id, port), err)
    assert.matches("cannot handle boom", err)
    assert.matches("stack traceback:", err)
    assert.matches("stack traceback:.-explode", err) -- the frame that raised

    -- the process carries on: the open connection and new ones are served
    assert.is_true(alive(p))
    good:send("2"); assert.equal("2", good:receive(1))
    local late = H.connect(p.port)
    assert.matches("^id %d+$", late:receive("*l"))
    late:send("3"); assert.equal("3", late:receive(1))
    late:close(); good:close()
    assert.equal(0, stop(p))
  end)
end)

describe("the log", function()
  after_each(cleanup)

  -- The peer's bytes reach the log through the script's error (and a Lua
  -- warning): ESC, BEL, CR, a newline and a line made to look like
  -- glisten's own, a NUL with text after it, a backslash, and a C1 control
  -- (CSI) in UTF-8. Catches any of them written raw, a forged line of its
  -- own, a message cut at the NUL, and an escape that reads two ways.
  it("escapes what a peer or a script wrote: no control character, no line of its own, nothing cut at a NUL", function()
    local p = start(H.script([[
      function handler(msg, state)
        state.got = (state.got or "") .. msg
        if state.got:sub(-3) ~= "END" then return end
        warn("@on")
        warn("peer sent ", state.got)
        error("peer sent " .. state.got, 0)
      end
    ]]))
    local c = H.connect(p.port)
    local _, port = c:getsockname()
    c:send("\27[31mred\7\r\nglisten: conn 1 (127.0.0.1:1): script error: forged\0after the NUL \\x1b \194\155END")
    H.assert_closed(c)
    c:close()
    assert.is_true(H.wait_for(function() return p:stderr():find("stack traceback") end))
    assert.equal(0, stop(p))
    local err = p:stderr()
    -- no control character but the newline that ends each line
    local bad = err:find("[%z\1-\9\11-\31\127]") or err:find("\194[\128-\159]")
    assert.is_nil(bad, "a control character at byte " .. tostring(bad) .. " of:\n" .. err)
    -- the lines: glisten's own, one per message
    local lines = {}
    for line in err:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    local logged = {}
    for _, line in ipairs(lines) do
      assert.is_nil(line:find("^glisten: conn 1 "), "a forged line: " .. line)
      if line:find("^glisten: ") then logged[#logged + 1] = line end
    end
    assert.equal(1, #logged, err)
    local peer = "\\x1b[31mred\\x07\\r\\nglisten: conn 1 (127.0.0.1:1): script error: forged"
    local want = ("glisten: conn %%d+ %%(127%%.0%%.0%%.1:%d%%): script error: "):format(port)
    assert.matches("^" .. want, logged[1])
    assert.truthy(logged[1]:find("peer sent " .. peer .. "\\x00after the NUL \\\\x1b \\xc2\\x9bEND"
      .. "\\nstack traceback:\\n\\t", 1, true), logged[1])
    -- Lua's warn takes C strings: its text ends at the NUL, escaped up to it
    local warned = 0
    for _, line in ipairs(lines) do
      if line:find("^Lua warning: ") then
        warned = warned + 1
        assert.equal("Lua warning: peer sent " .. peer, line)
      end
    end
    assert.equal(1, warned, err)
  end)
end)

describe("running out of memory (max_memory)", function()
  after_each(cleanup)

  -- "fill\n" takes all but a few bytes of what the state may hold (blocks
  -- of shrinking size, until not even a small one fits), so no new
  -- coroutine, connection or message fits; a coroutine already waiting
  -- lets it all go 2 s later (time enough for the first of many clients to
  -- arrive while full, however busy the machine), and a timer armed before (due at 0.2 s,
  -- when there is no memory for its coroutine) notes that it ran. The
  -- fill is never preempted (--callback-slice 0), so however long it takes
  -- on a busy machine, both come due after it, the timer first. "timer\n"
  -- answers whether it ran, "errors\n" stats().errors; anything else is
  -- echoed.
  local FILL = [[
local glisten = require "glisten"
local hoard, timer_ran
function handler(msg, state)
  if msg == "fill\n" then
    glisten.spawn(function() glisten.sleep(2); hoard = nil; collectgarbage() end)
    glisten.sleep(0) -- it is waiting now, holding all it needs to wake
    glisten.after(0.2, function() timer_ran = true end)
    local full = false
    for _, size in ipairs{ 4096, 256, 16 } do
      full = not pcall(function()
        while true do hoard = { hoard, ("x"):rep(size) .. tostring(hoard) } end
      end)
    end
    state.socket:send(full and "full " or "no limit ")
    state.socket:send(glisten.worker_id() .. "\n")
  elseif msg == "timer\n" then
    state.socket:send(tostring(timer_ran) .. "\n")
  elseif msg == "errors\n" then
    state.socket:send(glisten.stats().errors .. "\n")
  else
    state.socket:send(msg)
  end
end
]]

  -- Sends line on a new connection; returns what came back, or nil and why.
  local function ask(port, line)
    local c, err = glisten.connect("127.0.0.1", port, 5)
    if not c then return nil, err end
    c:settimeout(5)
    c:send(line)
    local got, why = c:receive("*l")
    c:close()
    return got, why
  end

  it("refuses and closes what it cannot serve, loses no process, and recovers", function()
    local p = start("--max-memory 3000000 --callback-slice 0 " .. H.script(FILL))
    assert.equal("full 1", ask(p.port, "fill\n"))
    -- While full, many clients at once: each is served or closed, none hangs.
    local outcomes, done = {}, 0
    for i = 1, 200 do
      glisten.spawn(function()
        local got, why = ask(p.port, ("hello %d\n"):format(i))
        local k = got == ("hello %d"):format(i) and "echoed" or tostring(why)
        outcomes[k] = (outcomes[k] or 0) + 1
        done = done + 1
      end)
    end
    local finished = H.wait_for(function() return done == 200 end, 30)
    assert.is_true(finished, done .. " of 200 finished")
    for k in pairs(outcomes) do
      assert.is_true(k == "echoed" or k == "closed", "an outcome: " .. k)
    end
    assert.is_true(alive(p))
    -- Once the memory is let go, every client is served again, and the
    -- timer that had no memory for its coroutine has run (it retries).
    assert.is_true(H.wait_for(function() return ask(p.port, "ping\n") == "ping" end, 10))
    assert.is_true(H.wait_for(function() return ask(p.port, "timer\n") == "true" end, 10))
    local ok = 0
    done = 0
    for i = 1, 100 do
      glisten.spawn(function()
        if ask(p.port, ("again %d\n"):format(i)) == ("again %d"):format(i) then ok = ok + 1 end
        done = done + 1
      end)
    end
    assert.is_true(H.wait_for(function() return done == 100 end, 30))
    assert.equal(100, ok)
    assert.is_true(tonumber(ask(p.port, "errors\n")) > 0)
    assert.equal(0, stop(p))
    assert.matches("cannot serve a new connection: not enough memory", p:stderr())
    assert.matches("timer: cannot run yet: not enough memory", p:stderr())
  end)

  -- The handler fills the state and fails with "not enough memory",
  -- keeping all it took; with_close then needs 128 KiB more (two strings
  -- of 64 KiB), which only
  -- the reserve for a with_close after running out of memory gives.
  it("gives with_close a reserve after a callback ran out of memory, so it can finish", function()
    local p = start("--max-memory 3000000 " .. H.script([[
function handler(msg, state)
  hoard = {}
  for _, size in ipairs{ 4096, 256, 16 } do
    pcall(function() while true do hoard[#hoard + 1] = ("x"):rep(size) .. #hoard end end)
  end
  hoard[#hoard + 1] = ("y"):rep(65536) .. #hoard -- fails: the callback ends here
end
function with_close(state, reason, detail)
  local s = ("z"):rep(64 * 1024) .. tostring(detail):sub(1, 40)
  io.stderr:write("with_close ", reason, " made ", #s, " bytes\n")
  hoard = nil -- and the worker is itself again
end
]]))
    for round = 1, 3 do
      local c = H.connect(p.port)
      c:send("fill\n")
      local got, err = c:receive("*l")
      assert.is_nil(got)
      assert.equal("closed", err)
      c:close()
      assert.is_true(H.wait_for(function()
        local _, n = p:stderr():gsub("with_close error made 65576 bytes", "")
        return n >= round
      end, 10), p:stderr())
      assert.not_matches("error in with_close", p:stderr())
    end
    assert.equal(0, stop(p))
  end)

  it("caps each worker, and refuses a cap below what the state holds", function()
    local p = start("-w 2 --max-memory 3000000 " .. H.script(FILL))
    local full = {}
    for _ = 1, 40 do -- connections go to either worker: until both were full
      local got = ask(p.port, "fill\n")
      local id = got and got:match("^full (%d)$")
      if id then full[id] = true end
      if full["1"] and full["2"] then break end
      assert.is_true(H.wait_for(function() return ask(p.port, "ping\n") == "ping" end, 10))
    end
    assert.is_true(full["1"] and full["2"], "both workers reported a full state")
    assert.equal(0, stop(p))
    local rc, _, err = H.run("--max-memory 1000 " .. H.script(FILL))
    assert.equal(2, rc)
    assert.matches("max_memory.*already holds more than 1000 bytes", err)
    -- --check refuses the same cap from a returned table
    rc, _, err = H.run("--check " .. H.script("return { handler = print, max_memory = 1000 }"))
    assert.equal(1, rc)
    assert.matches("max_memory.*already holds more than 1000 bytes", err)
  end)

  it("names the script whose main chunk runs out of memory", function()
    local hog = H.script("local t = {}\nfor i = 1, 1e7 do t[i] = ('x'):rep(100) .. i end\n")
    for _, workers in ipairs{ "", "-w 2 " } do
      local rc, _, err = H.run(workers .. "--max-memory 2000000 " .. hog)
      assert.equal(1, rc)
      assert.matches(hog:gsub("%p", "%%%0") .. ": not enough memory while loading it %(max_memory%)", err)
    end
  end)
end)
