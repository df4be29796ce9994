-- The glisten-lua command: arguments, exit codes, messages, options, and
-- graceful shutdown on signals.
local glisten = H.glisten

local ECHO = [[
function handler(msg, state) state.socket:send(msg) end
]]

describe("glisten-lua arguments", function()
  after_each(H.no_leaks)
  it("--help prints usage on stdout and exits 0", function()
    local rc, out = H.run("--help")
    assert.equal(0, rc)
    assert.matches("usage: glisten%-lua %[options%] SCRIPT %[PORT%]", out)
    assert.matches("%-%-idle%-timeout", out)
  end)

  it("--version prints the version and exits 0", function()
    local rc, out = H.run("--version")
    assert.equal(0, rc)
    assert.matches("^glisten%-lua %d+%.%d+%.%d+ %(Lua 5%.4", out)
  end)

  it("exits 2 with usage on stderr for bad arguments", function()
    local script = H.script(ECHO)
    for _, args in ipairs{
      "",
      "--bogus " .. script,
      "--port abc " .. script,
      "--port 70000 " .. script,
      "--idle-timeout -1 " .. script,
      "--max-connections 2.5 " .. script,
      script .. " 8080 extra",
      script .. " notaport",
      "--host",
    } do
      local rc, out, err = H.run(args)
      assert.equal(2, rc, "args: " .. args)
      assert.equal("", out, "args: " .. args)
      assert.matches("usage: glisten%-lua", err, 1, false)
      assert.matches("^glisten%-lua: ", err)
    end
  end)
end)

describe("glisten-lua loading a script", function()
  after_each(H.no_leaks)
  it("exits 1 naming the file when the script is missing", function()
    local rc, _, err = H.run("/nonexistent/x.lua")
    assert.equal(1, rc)
    assert.matches("cannot open /nonexistent/x.lua", err)
  end)

  it("exits 1 with file and line for a syntax error", function()
    local script = H.script("function handler(msg, state)\n  state.socket:send(msg\nend\n")
    local rc, _, err = H.run(script)
    assert.equal(1, rc)
    assert.matches(script:gsub("%p", "%%%0") .. ":3:", err)
  end)

  it("exits 1 with a traceback when the script raises while loading", function()
    local script = H.script("local x = nil\nlocal y = x.field\n")
    local rc, _, err = H.run(script)
    assert.equal(1, rc)
    assert.matches(":2: attempt to index a nil value", err)
    assert.matches("stack traceback", err)
  end)

  it("exits 1 when the script defines no handler and starts nothing", function()
    local rc, _, err = H.run(H.script("local x = 1\n"))
    assert.equal(1, rc)
    assert.matches("defines no handler", err)
    rc, _, err = H.run(H.script("handler = 42\n"))
    assert.equal(1, rc)
    assert.matches("'handler' must be a function", err)
  end)

  it("writes out what a failing script sent and closed before it exits 1", function()
    local size = 32 * 1024 * 1024 -- more than loopback's buffers hold
    local l = assert(glisten.listen(0, { max_receive = 2 * size }))
    local script = H.script(([[
      local glisten = require "glisten"
      local c = assert(glisten.connect("127.0.0.1", %d, { timeout = 5, max_output = 2 * %d }))
      c:send(("d"):rep(%d - 1) .. "!")
      c:close()
      error("failing after close")
    ]]):format(l.port, size, size))
    local base = H.tmpdir .. "/failclose"
    os.execute(("(timeout 30 %s %s 2>%s.e; echo $? > %s.rc) &"):format(
      H.quote(H.bin), H.quote(script), base, base))
    local a = assert(l:accept(5))
    l:close()
    -- the command has failed and is writing out before it exits
    assert.is_true(H.wait_for(function() return (H.readfile(base .. ".e") or ""):find("failing after close") end, 10))
    a:settimeout(10)
    local got = assert(a:receive("*a"))
    assert.equal(size, #got)
    assert.equal("!", got:sub(-1))
    assert.is_true(H.wait_for(function() return (H.readfile(base .. ".rc") or ""):match("%d") end, 10))
    assert.equal(1, tonumber(H.readfile(base .. ".rc")))
    a:close()
  end)

  it("runs a script whose only work is a coroutine or a timer, and exits 0 when it is done", function()
    local rc, out, err = H.run(H.script([[
      local glisten = require "glisten"
      glisten.spawn(function() glisten.sleep(0.1); print("spawned done") end)
    ]]))
    assert.equal(0, rc, err)
    assert.equal("spawned done\n", out)
    rc, out, err = H.run(H.script([[
      local glisten = require "glisten"
      glisten.after(0.1, function() print("timer done") end)
    ]]))
    assert.equal(0, rc, err)
    assert.equal("timer done\n", out)
    -- their errors are logged, each with what it came from
    rc, _, err = H.run(H.script([[
      local glisten = require "glisten"
      glisten.after(0, function() error("timer boom") end)
      glisten.spawn(function() error("spawn boom") end)
    ]]))
    assert.equal(0, rc, err)
    assert.matches("error in timer: [^\n]*timer boom", err)
    assert.matches("error in spawned function: [^\n]*spawn boom", err)
  end)

  it("--check reports a good script with exit 0 and a bad one with exit 1", function()
    local good = H.script(ECHO)
    local rc, out = H.run("--check " .. good)
    assert.equal(0, rc)
    assert.matches("ok", out)
    rc = H.run("--check " .. H.script("function handler(\n"))
    assert.equal(1, rc)
    -- an option value the real start would refuse is refused by --check too
    local err
    rc, out, err = H.run("--check " .. H.script(
      "return { handler = function() end, idle_timeout = 'x' }"))
    assert.equal(1, rc)
    assert.matches("option 'idle_timeout' must be a number", err)
    assert.not_matches("ok", out)
  end)

  it("exits 1 with a clear message when the port cannot be bound", function()
    local srv = assert(glisten.serve{ port = 0, handler = function() end })
    local rc, _, err = H.run(H.script(ECHO) .. " " .. srv.port)
    srv:close()
    assert.equal(1, rc)
    assert.matches("cannot listen on 127%.0%.0%.1:" .. srv.port .. ": Address already in use", err)
  end)

  it("exits 1 for an invalid option in the script's table", function()
    local rc, _, err = H.run(H.script("return { handler = print, max_line = 'long' }"))
    assert.equal(1, rc)
    assert.matches("option 'max_line' must be an integer", err)
  end)
end)

describe("glisten-lua serving", function()
  after_each(H.no_leaks)

  local function echo_check(p)
    local c = H.connect(p.port)
    c:send("ping")
    assert.equal("ping", c:receive(4))
    c:close()
  end

  local function stop(p)
    p:signal("TERM")
    assert.equal(0, p:wait(10))
  end

  it("prints 'listening on HOST:PORT' once, with the real port", function()
    local p = H.start(H.script(ECHO))
    local lines = {}
    for l in p:stderr():gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.same({ "listening on 127.0.0.1:" .. p.port }, lines)
    echo_check(p)
    stop(p)
  end)

  it("serves the globals of a script", function()
    local p = H.start(H.script(ECHO) .. " 0")
    echo_check(p)
    stop(p)
  end)

  it("serves a returned table, with its options; flags override them", function()
    local script = H.script([[
      return {
        idle_timeout = 30,
        handler = function(msg, state) state.socket:send(msg) end,
        with_close = function(state, reason) io.stderr:write("closed: ", reason, "\n") end,
      }
    ]])
    local p = H.start("--idle-timeout 0.2 " .. script)
    local c = H.connect(p.port)
    c:send("x"); assert.equal("x", c:receive(1))
    H.assert_closed(c) -- the flag's 0.2 s won over the table's 30 s
    c:close()
    assert.is_true(H.wait_for(function() return p:stderr():find("closed: timeout") end))
    stop(p)
  end)

  it("takes the port from the script's table when none is given", function()
    local probe = assert(glisten.listen(0))
    local port = probe.port
    probe:close()
    local p = H.start(H.script(("return { port = %d, handler = function(m, s) s.socket:send(m) end }"):format(port)))
    assert.equal(port, p.port)
    echo_check(p)
    stop(p)
  end)

  it("runs the loop of a script that calls glisten.serve itself", function()
    local p = H.start(H.script([[
      local glisten = require "glisten"
      local srv = assert(glisten.serve{ port = 0, handler = function(m, s) s.socket:send("own:" .. m) end })
    ]]))
    local c = H.connect(p.port)
    c:send("x"); assert.equal("own:x", c:receive(5))
    c:close()
    stop(p)
  end)

  it("binds ::1 with --host", function()
    local probe = glisten.listen(0, "::1")
    if not probe then return pending("no IPv6 loopback here") end
    probe:close()
    local p = H.start("--host ::1 " .. H.script(ECHO))
    assert.matches("listening on %[::1%]:%d+", p:stderr())
    local c = H.connect(p.port, "::1")
    c:send("6"); assert.equal("6", c:receive(1))
    c:close()
    stop(p)
  end)

  it("applies --max-line and --max-receive", function()
    for _, case in ipairs{
      { flag = "--max-line 4", pattern = "*l", send = "toolong\n", want = "nil line too long" },
      { flag = "--max-receive 4", pattern = "*a", send = "toolong", want = "nil too long" },
    } do
      local p = H.start(case.flag .. " " .. H.script(([[
        function with_init(state)
          local got, err = state.socket:receive(%q)
          state.socket:send(tostring(got) .. " " .. tostring(err) .. "\n")
        end
        function handler() end
      ]]):format(case.pattern)))
      local c = H.connect(p.port)
      c:send(case.send)
      assert.equal(case.want, c:receive("*l"))
      c:close()
      stop(p)
    end
  end)
end)

describe("glisten-lua on SIGTERM and SIGINT", function()
  after_each(H.no_leaks)

  local LOGGING = [[
    function handler(msg, state)
      if msg:find("slow") then glisten.sleep(0.3) end
      state.socket:send(msg)
    end
    function with_close(state, reason)
      io.stderr:write("with_close ", reason, "\n")
      state.socket:send("bye " .. reason .. "\n")
    end
  ]]

  it("exits 0 at once when nothing is open", function()
    for _, sig in ipairs{ "TERM", "INT" } do
      local p = H.start(H.script(LOGGING))
      local t0 = glisten.now()
      p:signal(sig)
      assert.equal(0, p:wait(5))
      assert.is_true(glisten.now() - t0 < 2)
    end
  end)

  it("stops accepting, lets open connections finish within the grace period", function()
    local p = H.start("--shutdown-timeout 5 " .. H.script(LOGGING))
    local c = H.connect(p.port)
    c:send("a"); assert.equal("a", c:receive(1))
    p:signal("TERM")
    assert.is_true(H.wait_for(function() return p:stderr():find("stopping") end))
    -- no new connections
    assert.is_nil(glisten.connect("127.0.0.1", p.port, 1))
    -- the open one still works, even for slow requests
    c:send("slow"); assert.equal("slow", c:receive(4))
    c:close()
    assert.equal(0, p:wait(5))
    assert.matches("with_close closed", p:stderr())
  end)

  it("closes what is left after the grace period with reason shutdown, flushing output", function()
    local p = H.start("--shutdown-timeout 0.3 " .. H.script(LOGGING))
    local c = H.connect(p.port)
    c:send("a"); assert.equal("a", c:receive(1))
    local t0 = glisten.now()
    p:signal("TERM")
    assert.equal("bye shutdown", c:receive("*l"))
    H.assert_closed(c)
    c:close()
    assert.equal(0, p:wait(5))
    assert.is_true(glisten.now() - t0 >= 0.25)
    assert.matches("with_close shutdown", p:stderr())
  end)

  it("cuts short a callback in progress when the grace period ends", function()
    local p = H.start("--shutdown-timeout 0.2 " .. H.script([[
      function handler(msg, state) state.socket:send("zz\n"); glisten.sleep(60) end
      function with_close(state, reason) io.stderr:write("with_close ", reason, "\n") end
    ]]))
    local c = H.connect(p.port)
    c:send("go"); assert.equal("zz", c:receive("*l"))
    p:signal("TERM")
    H.assert_closed(c)
    c:close()
    assert.equal(0, p:wait(5))
    assert.matches("with_close shutdown", p:stderr())
  end)

  it("exits at once on a second signal", function()
    local p = H.start("--shutdown-timeout 30 " .. H.script(LOGGING))
    local c = H.connect(p.port)
    c:send("a"); assert.equal("a", c:receive(1))
    p:signal("TERM")
    assert.is_true(H.wait_for(function() return p:stderr():find("stopping") end))
    local t0 = glisten.now()
    p:signal("TERM")
    assert.equal(1, p:wait(5))
    assert.is_true(glisten.now() - t0 < 2)
    assert.matches("second signal", p:stderr())
    c:close()
  end)
end)
