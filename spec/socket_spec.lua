-- The socket object: receive patterns and timeouts, send and backpressure,
-- close, names, misuse.
local glisten = H.glisten

-- Runs fn(server_socket, client_socket) over a fresh loopback pair made
-- with the low-level listen/accept flow.
local function pair(fn)
  local l = assert(glisten.listen(0))
  local c = H.connect(l.port)
  local s = assert(l:accept(5))
  l:close()
  s:settimeout(5)
  local ok, err = pcall(fn, s, c)
  s:close(); c:close()
  if not ok then error(err, 0) end
end

describe("socket:receive", function()
  after_each(H.no_leaks)

  it('"*l" and "l" return lines without their end of line', function()
    pair(function(s, c)
      c:send("one\r\ntwo\nthree\n")
      assert.equal("one", s:receive("*l"))
      assert.equal("two", s:receive("l"))
      assert.equal("three\n", s:receive())  -- nothing: whatever has arrived
    end)
  end)

  it('"*L" keeps the end of line', function()
    pair(function(s, c)
      c:send("one\r\n")
      assert.equal("one\r\n", s:receive("*L"))
    end)
  end)

  it("assembles a line that arrives in pieces", function()
    pair(function(s, c)
      glisten.spawn(function()
        for ch in ("split line\n"):gmatch(".") do c:send(ch); glisten.sleep(0.002) end
      end)
      assert.equal("split line", s:receive("*l"))
    end)
  end)

  it("a number n returns exactly n bytes", function()
    pair(function(s, c)
      c:send("abcdefgh")
      assert.equal("abc", s:receive(3))
      assert.equal("", s:receive(0))
      assert.equal("defgh", s:receive(5))
    end)
  end)

  it("a number larger than one read waits for all of it", function()
    pair(function(s, c)
      local big = ("0123456789"):rep(30000) -- 300 kB
      glisten.spawn(function() c:send(big) end)
      assert.equal(big, s:receive(#big))
    end)
  end)

  it('"*a" and "a" read until the peer closes', function()
    pair(function(s, c)
      c:send("part 1, ")
      glisten.spawn(function() glisten.sleep(0.05); c:send("part 2"); c:close() end)
      assert.equal("part 1, part 2", s:receive("*a"))
      assert.equal("", s:receive("a"))
    end)
  end)

  it('returns nil, "closed", partial when the peer closes first', function()
    pair(function(s, c)
      c:send("no newline")
      c:close()
      assert.same({ nil, "closed", "no newline" }, { s:receive("*l") })
      assert.same({ nil, "closed", "" }, { s:receive(10) })
    end)
    pair(function(s, c)
      c:send("abc")
      c:close()
      assert.same({ nil, "closed", "abc" }, { s:receive(10) })
    end)
  end)

  it('returns nil, "timeout", partial after the timeout', function()
    pair(function(s, c)
      c:send("par")
      local t0 = glisten.now()
      assert.same({ nil, "timeout", "par" }, { s:receive("*l", 0.1) })
      assert.is_true(glisten.now() - t0 >= 0.09)
      assert.same({ nil, "timeout", "" }, { s:receive(5, 0.05) })
      s:settimeout(0.05)
      assert.same({ nil, "timeout", "" }, { s:receive() })
      -- the connection still works after a timeout
      c:send("ok\n")
      assert.equal("ok", s:receive("*l"))
    end)
  end)

  it("refuses a line longer than max_line instead of buffering it", function()
    local reason
    H.serving({
      max_line = 16,
      with_init = function(state)
        local line, err = state.socket:receive("*l")
        state.socket:send(tostring(line) .. "|" .. tostring(err) .. "\n")
        local again = { state.socket:receive(17) } -- the bytes are all still there
        state.socket:send(again[1] .. "\n")
        state.socket:close()
      end,
      handler = function() end,
      with_close = function(_, r) reason = r end,
    }, function(srv)
      local c = H.connect(srv.port)
      c:send(("x"):rep(17) .. ("y"):rep(100))
      assert.equal("nil|line too long", c:receive("*l"))
      assert.equal(("x"):rep(17), c:receive("*l"))
      c:close()
    end)
    assert.equal("local", reason)
  end)

  it("counts a line with no end of line yet against max_line, but for a last \\r", function()
    local l = assert(glisten.listen(0, { max_line = 8 }))
    local c1, c2 = H.connect(l.port), H.connect(l.port)
    local s1, s2 = assert(l:accept(5)), assert(l:accept(5))
    l:close()
    c1:send("123456789") -- 9 bytes and no end of line: too long already
    assert.same({ nil, "line too long" }, { s1:receive("*l", 5) })
    c2:send("12345678\r") -- 8 bytes and maybe the start of \r\n: not yet
    assert.same({ nil, "timeout", "12345678\r" }, { s2:receive("*l", 0.2) })
    c2:send("12345678\r\n")
    assert.equal("12345678", s2:receive("*l", 5))
    for _, x in ipairs{ c1, c2, s1, s2 } do x:close() end
  end)

  it('refuses "*a" past max_receive bytes, and keeps them for the script', function()
    H.serving({
      max_receive = 1000,
      with_init = function(state)
        local all, err = state.socket:receive("*a")
        state.socket:send(tostring(all) .. "|" .. tostring(err) .. "\n")
        local got = state.socket:receive(1500) -- nothing was lost
        state.socket:send(#got .. " " .. got:sub(1, 3) .. got:sub(-3) .. "\n")
        state.socket:close()
      end,
      handler = function() end,
    }, function(srv)
      local c = H.connect(srv.port)
      c:send("abc" .. ("x"):rep(1494) .. "xyz")
      assert.equal("nil|too long", c:receive("*l"))
      assert.equal("1500 abcxyz", c:receive("*l"))
      c:close()
    end)
  end)

  it('lets "*a" hold exactly max_receive bytes', function()
    H.serving({
      max_receive = 1000,
      with_init = function(state)
        -- 1000 bytes are not too many: it waits for more, until the timeout
        local all, err, partial = state.socket:receive("*a", 0.2)
        state.socket:send(tostring(all) .. "|" .. err .. "|" .. #partial .. "\n")
      end,
      handler = function() end,
    }, function(srv)
      local c = H.connect(srv.port)
      c:send(("x"):rep(1000))
      assert.equal("nil|timeout|1000", c:receive("*l"))
      c:close()
    end)
  end)

  it("accepts a line of exactly max_line bytes, with or without \\r", function()
    H.serving({
      max_line = 8,
      handler = function() end,
      with_init = function(state)
        for _ = 1, 2 do state.socket:send(state.socket:receive("*l") .. "\n") end
      end,
    }, function(srv)
      local c = H.connect(srv.port)
      c:send("12345678\n12345678\r\n")
      assert.equal("12345678", c:receive("*l"))
      assert.equal("12345678", c:receive("*l"))
      c:close()
    end)
  end)

  it("does not pass bytes taken by receive to handler", function()
    local msgs = {}
    H.serving({
      with_init = function(state)
        state.hello = state.socket:receive("*l")
      end,
      handler = function(msg, state)
        msgs[#msgs + 1] = msg
        local n = tonumber(msg:match("^N(%d)"))
        if n then msgs[#msgs + 1] = "body:" .. state.socket:receive(n) end
        state.socket:send("k")
      end,
    }, function(srv)
      local c = H.connect(srv.port)
      c:send("HELLO\nfirst")
      assert.equal("k", c:receive(1))
      c:send("N3")
      glisten.sleep(0.05)
      c:send("abc")
      assert.equal("k", c:receive(1))
      c:send("last")
      assert.equal("k", c:receive(1))
      assert.same({ "first", "N3", "body:abc", "last" }, msgs)
      c:close()
    end)
  end)

  it("raises on misuse", function()
    pair(function(s)
      assert.has_error(function() s:receive("*x") end)
      assert.has_error(function() s:receive(-1) end)
      assert.has_error(function() s:receive({}) end)
      assert.has_error(function() s.receive(42) end)
      assert.has_error(function() s:send({}) end)
      assert.has_error(function() s:send() end)
      assert.has_error(function() s:settimeout("soon") end)
    end)
  end)

  it("raises on a NaN timeout instead of waiting forever", function()
    pair(function(s, c)
      local nan = 0 / 0
      local l = assert(glisten.listen(0))
      local calls = {
        function() s:receive("*l", nan) end,
        function() s:settimeout(nan) end,
        function() l:accept(nan) end,
        function() glisten.sleep(nan) end,
        function() glisten.connect("127.0.0.1", l.port, nan) end,
        function() glisten.connect("127.0.0.1", l.port, { timeout = nan }) end,
        function() glisten.after(nan, print) end,
      }
      for i, call in ipairs(calls) do
        local ok, err = pcall(call)
        assert.is_false(ok, "call " .. i .. " did not raise")
        assert.matches("not NaN", tostring(err))
      end
      l:close()
      c:send("still fine\n") -- nothing was left waiting
      assert.equal("still fine", s:receive("*l", 5))
    end)
  end)

  it("methods refuse a self that is not a socket, with a clear error", function()
    pair(function(s)
      local l = assert(glisten.listen(0))
      local others = { 42, "x", {}, l, io.stdout, coroutine.create(print), glisten.shared,
        setmetatable({ io.stdout, id = s.id }, getmetatable(s)), { l }, { 1 } }
      for _, v in ipairs(others) do
        for _, m in ipairs{ "send", "receive", "close", "settimeout", "getpeername" } do
          local ok, err = pcall(s[m], v, "x")
          assert.is_false(ok)
          assert.matches("glisten.socket expected", tostring(err))
        end
      end
      l:close()
      local changed = setmetatable({ {}, id = s.id }, getmetatable(s))
      assert.has_error(function() changed:send("x") end,
        "calling 'send' on bad self (glisten.socket expected, got one whose handle ([1]) was changed)")
      assert.equal(1, s:send("x")) -- the real socket still works
      assert.equal("integer", math.type(s.id)) -- a plain field
      assert.is_false(getmetatable(s[1])) -- the handle's metatable is hidden
      assert.is_nil(s.nosuchthing)
    end)
  end)

  it("lets only a served connection's own callbacks receive on it, whatever the load", function()
    local err
    H.serving({
      handler = function(msg, state)
        glisten.spawn(function()
          err = select(2, pcall(state.socket.receive, state.socket, "*l"))
        end)
        state.socket:send("ok")
      end,
    }, function(srv)
      local c = H.connect(srv.port)
      c:send("x"); assert.equal("ok", c:receive(2))
      assert.is_true(H.wait_for(function() return err end))
      assert.matches("only its own callbacks can receive", err)
      c:close()
    end)
  end)

  it("raises when two coroutines read one socket at once", function()
    pair(function(s, c)
      glisten.spawn(function() s:receive("*l") end)
      glisten.sleep(0.01)
      assert.has_error(function() s:receive("*l") end, nil)
      c:send("done\n")
      glisten.sleep(0.02)
    end)
  end)
end)

describe("socket:send", function()
  after_each(H.no_leaks)

  it("returns the number of bytes taken, and honours i and j", function()
    pair(function(s, c)
      assert.equal(5, s:send("hello"))
      assert.equal(3, s:send("abcdef", 2, 4))
      assert.equal(2, s:send("abcdef", -2))
      assert.equal(0, s:send(""))
      assert.equal("hellobcdef", c:receive(10))
    end)
  end)

  it('returns nil, "closed" on a closed socket and never raises', function()
    pair(function(s, c)
      s:close()
      local n, err = s:send("x")
      assert.is_nil(n)
      assert.equal("closed", err)
      assert.same({ nil, "closed", "" }, { s:receive() })
      assert.same({ nil, "closed" }, { s:getpeername() })
      assert.equal(1, s:close()) -- closing twice is fine
    end)
  end)

  it("makes the sender wait while a peer does not read, without stopping the loop", function()
    local CHUNKS = 512
    local progress, done = 0, false
    local other_ok = false
    H.serving({
      handler = function(msg, state)
        if msg == "flood" then
          local chunk = ("z"):rep(65536)
          for i = 1, CHUNKS do -- 32 MiB: more than loopback's auto-tuned buffers hold
            assert(state.socket:send(chunk))
            progress = i
          end
          done = true
        else
          state.socket:send(msg)
        end
      end,
      max_output = 8 * 1024 * 1024,
    }, function(srv)
      local sink = H.connect(srv.port)
      sink:send("flood")
      assert.is_true(H.wait_for(function() return progress > 0 end))
      glisten.sleep(0.2)
      local stuck = progress
      assert.is_false(done)
      assert.is_true(stuck < CHUNKS)
      -- the server keeps serving others meanwhile
      local other = H.connect(srv.port)
      other:send("ping")
      other_ok = other:receive(4) == "ping"
      other:close()
      -- and the sender is still parked: it did not queue everything
      assert.is_true(progress <= stuck + 1)
      -- once the peer reads, the sender finishes
      local got = assert(sink:receive(CHUNKS * 65536))
      assert.equal(CHUNKS * 65536, #got)
      assert.is_true(H.wait_for(function() return done end))
      sink:close()
    end)
    assert.is_true(other_ok)
  end)

  it('times out a waiting send with the socket timeout: nil, "timeout", 0', function()
    local result
    H.serving({
      handler = function(msg, state)
        state.socket:settimeout(0.2)
        local chunk = ("z"):rep(65536)
        for _ = 1, 2000 do -- up to 128 MiB: far past what loopback buffers absorb
          local n, err, taken = state.socket:send(chunk)
          if not n then result = { err, taken }; break end
        end
      end,
    }, function(srv)
      local sink = H.connect(srv.port)
      sink:send("go")
      assert.is_true(H.wait_for(function() return result end, 5))
      assert.same({ "timeout", 0 }, result)
      sink:close()
    end)
  end)

  it("takes a send larger than max_output in pieces as the peer reads", function()
    local size = 8 * 1024 * 1024
    local ret
    H.serving({
      max_output = 100000,
      handler = function(msg, state)
        ret = { state.socket:send(("q"):rep(size - 1) .. "!") }
      end,
    }, function(srv)
      local sink = H.connect(srv.port)
      sink:send("go")
      glisten.sleep(0.2)
      assert.is_nil(ret) -- waiting for the peer, holding at most max_output queued
      local got = assert(sink:receive(size))
      assert.equal(size, #got)
      assert.equal(("q"):rep(size - 1) .. "!", got)
      assert.is_true(H.wait_for(function() return ret end))
      sink:close()
    end)
    assert.same({ size }, ret)
  end)

  it("keeps a big send from a plain script whole while coroutines send too", function()
    -- this runs outside any glisten coroutine: the big send runs the loop
    -- while it waits, and the spawned sender's timers fire meanwhile
    local size = 8 * 1024 * 1024
    local l = assert(glisten.listen(0, { max_receive = 2 * size }))
    local c = assert(glisten.connect("127.0.0.1", l.port, { timeout = 10, max_output = 100000 }))
    local s = assert(l:accept(5))
    l:close()
    local got, small = nil, 0
    glisten.spawn(function() got = s:receive(size + 100, 10) end)
    glisten.spawn(function()
      for _ = 1, 100 do glisten.sleep(0.001); small = small + (c:send("b") or 0) end
    end)
    assert.equal(size, c:send(("a"):rep(size)))
    assert.is_true(H.wait_for(function() return got ~= nil end, 10))
    local runs = 0
    for run in got:gmatch("a+") do runs = runs + 1; assert.equal(size, #run) end
    assert.equal(1, runs)
    assert.equal(100, select(2, got:gsub("b", "")))
    assert.equal(100, small) -- every small send was taken whole
    c:close(); s:close()
  end)

  it('gives up on a timeout with nil, "timeout" and the bytes it took, all of which arrive', function()
    local size = 8 * 1024 * 1024
    local ret
    H.serving({
      max_output = 100000,
      handler = function(msg, state)
        state.socket:settimeout(0.2)
        local data = {}
        for k = 1, size / 8 do data[k] = ("%7d|"):format(k) end
        ret = { state.socket:send(table.concat(data)) }
      end,
    }, function(srv)
      local sink = H.connect(srv.port)
      sink:send("go")
      assert.is_true(H.wait_for(function() return ret end, 5))
      assert.is_nil(ret[1])
      assert.equal("timeout", ret[2])
      local taken = ret[3]
      assert.is_true(taken > 100000 and taken < size, "taken: " .. tostring(taken))
      -- exactly the bytes taken arrive, in order, and nothing after them
      local got = assert(sink:receive(taken))
      local want = {}
      for k = 1, taken // 8 + 1 do want[k] = ("%7d|"):format(k) end
      assert.equal(table.concat(want):sub(1, taken), got)
      assert.same({ nil, "timeout", "" }, { sink:receive(1, 0.2) })
      sink:close()
    end)
  end)

  it("close() flushes queued output before closing", function()
    local size = 3 * 1024 * 1024
    H.serving({
      handler = function(msg, state)
        state.socket:send(("w"):rep(size))
        state.socket:close()
      end,
    }, function(srv)
      local c = H.connect(srv.port)
      c:send("go")
      glisten.sleep(0.1) -- let the server queue and close while we do not read
      local all = assert(c:receive("*a"))
      assert.equal(size, #all)
      c:close()
    end)
  end)
end)

describe("socket names and ids", function()
  after_each(H.no_leaks)

  it("getpeername and getsockname return ip, port, family", function()
    pair(function(s, c)
      local ip, port, fam = s:getsockname()
      assert.equal("127.0.0.1", ip)
      assert.equal("inet", fam)
      local cip, cport, cfam = c:getpeername()
      assert.same({ ip, port, fam }, { cip, cport, cfam })
      local pip, pport = s:getpeername()
      assert.equal("127.0.0.1", pip)
      assert.equal(select(2, c:getsockname()), pport)
    end)
  end)

  it("reports inet6 on ::1", function()
    local l = glisten.listen(0, "::1")
    if not l then return pending("no IPv6 loopback here") end
    local c = H.connect(l.port, "::1")
    local s = assert(l:accept(5))
    assert.same({ "::1", l.port, "inet6" }, { s:getsockname() })
    assert.equal("inet6", select(3, c:getpeername()))
    s:close(); c:close(); l:close()
  end)

  it("gives every socket a distinct integer id", function()
    pair(function(s, c)
      assert.equal("number", math.type(s.id) and "number")
      assert.equal("integer", math.type(s.id))
      assert.are_not.equal(s.id, c.id)
      assert.matches("glisten.socket " .. s.id, tostring(s))
    end)
  end)
end)
