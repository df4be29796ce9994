-- Addresses and socket options: a dual-stack "::" (and "*") whose IPv4
-- peers are named as IPv4, SO_REUSEPORT across processes, and
-- sock:setoption / getoption / getpeercred on real loopback sockets.
local glisten = H.glisten

local LONG = 60 -- bounds a hang only

-- A connected pair on 127.0.0.1: fn(accepted, connected), both closed after.
local function pair(fn)
  local l = assert(glisten.listen(0))
  local c = H.connect(l.port)
  local s = assert(l:accept(5))
  local ok, err = pcall(fn, s, c)
  s:close(); c:close(); l:close()
  if not ok then error(err, 0) end
end

describe("a dual-stack server", function()
  after_each(H.no_leaks)

  -- Runs in the ipv6 group (ctest skips it, saying why, without ::1).
  it("on :: serves IPv4 and IPv6, and names an IPv4 peer as inet #ipv6", function()
    H.serving({ host = "::", handler = function(msg, state)
      local s = state.socket
      local pip, _, pfam = s:getpeername()
      local sip, sport, sfam = s:getsockname()
      s:send(("%s %s %s %d %s\n"):format(pip, pfam, sip, sport, sfam))
    end }, function(srv)
      assert.equal("::", srv.host)
      local c = H.connect(srv.port, "127.0.0.1")
      c:send("x")
      assert.equal(("127.0.0.1 inet 127.0.0.1 %d inet"):format(srv.port), c:receive("*l"))
      c:close()
      c = H.connect(srv.port, "::1")
      c:send("x")
      assert.equal(("::1 inet6 ::1 %d inet6"):format(srv.port), c:receive("*l"))
      c:close()
    end)
  end)

  it("on * is :: here, and takes both families #ipv6", function()
    H.serving({ host = "*", handler = function(msg, state) state.socket:send(msg) end }, function(srv)
      assert.equal("::", srv.host)
      assert.matches("^glisten.server %(:::%d+%)$", tostring(srv))
      for _, host in ipairs{ "127.0.0.1", "::1" } do
        local c = H.connect(srv.port, host)
        c:send("hi")
        assert.equal("hi", c:receive(2))
        c:close()
      end
    end)
  end)

  it("logs an IPv4 peer of :: as IPv4, and counts it under its IPv4 address #ipv6", function()
    local script = H.script([[
      return { handler = function(msg) error("boom", 0) end }
    ]])
    local p = H.start("--host '*' --max-connections-per-address 1 " .. script)
    assert.matches("listening on %[::%]:%d+\n", p:stderr())
    local c = H.connect(p.port, "127.0.0.1", LONG)
    local _, cport = c:getsockname()
    c:send("x")
    assert.is_true(H.wait_for(function() return p:stderr():match("script error") ~= nil end, LONG))
    assert.matches(("conn %%d+ %%(127%%.0%%.0%%.1:%d%%): script error: boom"):format(cport), p:stderr())
    c:close()
    assert.equal(0, p:stop())
  end)

  it("listen on * works on any machine: :: or 0.0.0.0", function()
    local l = assert(glisten.listen(0, "*"))
    assert.truthy(l.host == "::" or l.host == "0.0.0.0")
    local c = H.connect(l.port, "127.0.0.1")
    local s = assert(l:accept(5))
    assert.same({ "127.0.0.1", select(2, c:getsockname()), "inet" }, { s:getpeername() })
    s:close(); c:close(); l:close()
  end)
end)

describe("reuseport", function()
  after_each(H.no_leaks)

  -- The script answers each connection with its process's id.
  local function pid_script()
    return H.script([[
      local f = io.open("/proc/self/stat"); local pid = f:read("a"):match("^%d+"); f:close()
      return { handler = function(msg, state) state.socket:send(pid .. "\n") end }
    ]])
  end

  it("lets two processes serve one port, and both accept", function()
    local script = pid_script()
    local a = H.start("--reuseport " .. script)
    local b = H.start("--reuseport " .. script .. " " .. a.port)
    assert.equal(a.port, b.port)
    local seen, n, count = {}, 0, 0
    -- the kernel spreads connections by a hash of their addresses: 200
    -- connections all landing on one of two is a chance of 2^-199
    while n < 2 and count < 200 do
      count = count + 1
      local c = H.connect(a.port, nil, LONG)
      c:send("?\n")
      local pid = assert(c:receive("*l"))
      c:close()
      if not seen[pid] then seen[pid] = true; n = n + 1 end
    end
    assert.is_true(seen[tostring(a.pid)] and seen[tostring(b.pid)],
      "one process took all " .. count .. " connections")
    -- a third that does not ask for it cannot have the port
    local rc, _, err = H.run(script .. " " .. a.port)
    assert.equal(1, rc)
    assert.matches("Address already in use", err)
    assert.equal(0, a:stop())
    assert.equal(0, b:stop())
  end)

  it("is a boolean: the option raises on anything else, the flag takes =true or =false", function()
    assert.has_error(function()
      glisten.serve{ reuseport = "yes", handler = function() end }
    end, "option 'reuseport' must be a boolean")
    local rc, _, err = H.run("--reuseport=maybe scripts/echo.lua")
    assert.equal(2, rc)
    assert.matches("%-%-reuseport needs true or false", err)
    local l = assert(glisten.listen(0, { reuseport = true }))
    local l2 = assert(glisten.listen(l.port, { reuseport = true }))
    local none, e = glisten.listen(l.port, { reuseport = false })
    assert.is_nil(none)
    assert.matches("Address already in use", e)
    l2:close(); l:close()
  end)
end)

describe("socket options", function()
  after_each(H.no_leaks)

  it("reports the defaults: TCP_NODELAY on both ends, keepalive and linger off", function()
    pair(function(s, c)
      for _, x in ipairs{ s, c } do
        assert.is_true(x:getoption("tcp-nodelay"))
        assert.is_false(x:getoption("keepalive"))
        assert.same({ on = false, timeout = 0 }, x:getoption("linger"))
        assert.equal("integer", math.type(x:getoption("tcp-keepidle")))
      end
      assert.is_true(s:getoption("reuseaddr")) -- the listener's, inherited
    end)
  end)

  it("sets and reads back each option", function()
    pair(function(s, c)
      assert.equal(1, s:setoption("tcp-nodelay", false))
      assert.is_false(s:getoption("tcp-nodelay"))
      assert.equal(1, s:setoption("keepalive", true))
      assert.is_true(s:getoption("keepalive"))
      assert.equal(1, c:setoption("reuseaddr", true))
      assert.is_true(c:getoption("reuseaddr"))
      assert.equal(1, s:setoption("linger", { on = true, timeout = 3 }))
      assert.same({ on = true, timeout = 3 }, s:getoption("linger"))
      assert.equal(1, s:setoption("linger", { on = false }))
      assert.is_false(s:getoption("linger").on)
      assert.equal(1, s:setoption("tcp-keepidle", 60))
      assert.equal(60, s:getoption("tcp-keepidle"))
      assert.equal(1, s:setoption("tcp-keepintvl", 10))
      assert.equal(10, s:getoption("tcp-keepintvl"))
      assert.equal(1, s:setoption("tcp-keepcnt", 4))
      assert.equal(4, s:getoption("tcp-keepcnt"))
      -- still a working connection
      c:send("ok\n")
      assert.equal("ok", s:receive("*l"))
    end)
  end)

  it("linger {on = true, timeout = 0} makes close a reset", function()
    pair(function(s, c)
      assert.equal(1, c:setoption("linger", { on = true, timeout = 0 }))
      c:close()
      local data, err = s:receive("*l")
      assert.is_nil(data)
      assert.truthy(err == "closed" or err == "Connection reset by peer", err)
    end)
  end)

  it("raises on misuse", function()
    pair(function(s)
      assert.has_error(function() s:setoption("nodelay", true) end,
        "bad argument #1 to 'setoption' (unknown socket option 'nodelay' (tcp-nodelay, keepalive, reuseaddr, linger, tcp-keepidle, tcp-keepintvl, tcp-keepcnt))")
      assert.has_error(function() s:getoption("sndbuf") end)
      assert.has_error(function() s:setoption("keepalive", 1) end,
        "bad argument #2 to 'setoption' (boolean expected, got number)")
      assert.has_error(function() s:setoption("keepalive") end)
      assert.has_error(function() s:setoption("linger", true) end)
      assert.has_error(function() s:setoption("linger", { timeout = 1 }) end,
        "bad argument #2 to 'setoption' (boolean 'on' field expected)")
      assert.has_error(function() s:setoption("linger", { on = true, timeout = "x" }) end)
      assert.has_error(function() s:setoption("tcp-keepidle", 1.5) end)
      assert.has_error(function() s:setoption("tcp-keepcnt", -1) end)
      assert.has_error(function() s:setoption("tcp-keepcnt", "many") end)
    end)
  end)

  it("returns nil, err where the system refuses, and on a closed socket", function()
    pair(function(s)
      assert.same({ nil, "Invalid argument" }, { s:setoption("tcp-keepidle", 0) })
      assert.same({ nil, "not a unix socket" }, { s:getpeercred() })
      s:close()
      assert.same({ nil, "closed" }, { s:setoption("keepalive", true) })
      assert.same({ nil, "closed" }, { s:getoption("keepalive") })
      assert.same({ nil, "closed" }, { s:getpeercred() })
    end)
    local dir = H.tmpdir .. "/sockopt"
    assert(os.execute("mkdir -p " .. dir))
    local l = assert(glisten.listen("unix:" .. dir .. "/o.sock"))
    local c = H.connect_unix(dir .. "/o.sock")
    local s = assert(l:accept(5))
    assert.same({ nil, "Operation not supported" }, { s:setoption("tcp-nodelay", true) })
    assert.same({ nil, "Operation not supported" }, { c:getoption("tcp-keepcnt") })
    assert.equal(1, s:setoption("keepalive", true))
    s:close(); c:close(); l:close()
    os.execute("rm -rf " .. dir)
  end)
end)
