-- Runaway callbacks: a callback that never returns lets the other
-- connections of its worker run (callback_slice), fails past
-- max_callback_time, and never keeps the command from stopping on a signal.
-- Bounds on waits are generous failure limits, never measurements.
local glisten = H.glisten

-- "spin" loops forever in a place that can yield; "stuck" loops forever
-- inside string.gsub's callback, where nothing can yield; "pspin" loops
-- inside a pcall; "nap" waits 1.5 s, which is no run time at all; anything
-- else is echoed.
local RUNAWAY = [[
local n = 0
function handler(msg, state)
  if msg:find("^spin") then while true do n = n + 1 end end
  if msg:find("^pspin") then pcall(function() while true do n = n + 1 end end) end
  if msg:find("^stuck") then
    string.gsub("x", "x", function() while true do n = n + 1 end end)
  end
  if msg:find("^nap") then glisten.sleep(1.5) end
  state.socket:send(msg)
end
function with_close(state, reason, detail)
  io.stderr:write("with_close ", reason, " ", tostring(detail), "\n")
end
]]

local function echo_ok(port, text)
  local c = H.connect(port, nil, 10)
  c:send(text .. "\n")
  local got, err = c:receive("*l")
  c:close()
  return got == text, err
end

describe("a callback that never returns", function()
  after_each(H.no_leaks)

  it("leaves its worker serving every other connection", function()
    local p = H.start(H.script(RUNAWAY))
    local spinners = {}
    for i = 1, 3 do
      spinners[i] = H.connect(p.port)
      spinners[i]:send(i == 3 and "pspin\n" or "spin\n")
    end
    glisten.sleep(0.1)
    for i = 1, 20 do assert.is_true(echo_ok(p.port, "hello " .. i)) end
    -- the spinners are still running, their connections open
    assert.is_nil(p:stderr():find("with_close [^c]"))
    for _, s in ipairs(spinners) do s:close() end
    p:signal("KILL")
    p:wait(10)
  end)

  it("with max_callback_time, fails with \"callback ran too long\" and closes with \"error\"", function()
    local p = H.start("--max-callback-time 0.3 " .. H.script(RUNAWAY))
    for _, what in ipairs{ "spin", "pspin", "stuck" } do
      local c = H.connect(p.port, nil, 20)
      c:send(what .. "\n")
      local got, err = c:receive("*l")
      assert.is_nil(got)
      assert.equal("closed", err)
      c:close()
    end
    assert.is_true(H.wait_for(function()
      local _, n = p:stderr():gsub("callback ran too long", "")
      return n >= 3
    end, 10))
    assert.is_true(H.wait_for(function()
      local _, n = p:stderr():gsub("with_close error callback ran too long", "")
      return n >= 3
    end, 10), p:stderr())
    -- waiting is not running: a nap of five times the limit is not cut
    assert.is_true(echo_ok(p.port, "nap"))
    assert.is_true(echo_ok(p.port, "still here"))
    assert.equal(0, p:stop(20))
  end)

  it("is cut short by SIGTERM's grace when it can yield: with_close runs, exit 0", function()
    for _, w in ipairs{ 1, 2 } do
      local p = H.start(("-w %d --shutdown-timeout 0.5 %s"):format(w, H.script(RUNAWAY)))
      local c = H.connect(p.port)
      c:send("spin\n")
      glisten.sleep(0.2)
      p:signal("TERM")
      assert.equal(0, p:wait(30))
      assert.matches("with_close shutdown", p:stderr())
      c:close()
    end
  end)

  it("nor can a goodbye to a peer that never reads: exit 0 at the deadline", function()
    -- the handler fills the peer's window and waits; with_close's goodbye
    -- waits too, until the deadline (grace + the flush + 1 s) cuts it short
    local FLOOD = [[
function handler(msg, state)
  local chunk = string.rep("x", 65536)
  for i = 1, 1024 do if not state.socket:send(chunk) then break end end
end
function with_close(state, reason)
  io.stderr:write("with_close ", reason, "\n")
  state.socket:send("bye\n")
end
]]
    for _, w in ipairs{ 1, 2 } do
      local p = H.start(("-w %d --shutdown-timeout 0.5 %s"):format(w, H.script(FLOOD)))
      local c = H.connect(p.port)
      c:send("go\n")
      glisten.sleep(0.3)
      p:signal("TERM")
      assert.equal(0, p:wait(30), p:stderr())
      assert.matches("with_close shutdown", p:stderr())
      c:close()
    end
  end)

  -- The command with w workers and that grace, and four connections stuck
  -- where nothing can yield (some on each worker, most likely).
  local function stuck(w, grace)
    local p = H.start(("-w %d --shutdown-timeout %d %s"):format(w, grace, H.script(RUNAWAY)))
    local conns = {}
    for i = 1, 4 do
      conns[i] = H.connect(p.port)
      conns[i]:send("stuck\n")
    end
    glisten.sleep(0.2)
    return p, conns
  end

  it("cannot keep the command from exiting on SIGTERM where it cannot yield: exit 1", function()
    for _, w in ipairs{ 1, 2 } do
      local p, conns = stuck(w, 0)
      p:signal("TERM")
      assert.equal(1, p:wait(40))
      assert.matches("still running after the grace period, the flush and 3 s more; exiting now",
        p:stderr())
      for _, c in ipairs(conns) do c:close() end
    end
  end)

  it("cannot keep a second signal from exiting at once with 1", function()
    for _, w in ipairs{ 1, 2 } do
      local p, conns = stuck(w, 60)
      p:signal("INT")
      glisten.sleep(0.5) -- (a stuck loop cannot say "stopping")
      p:signal("INT")
      assert.equal(1, p:wait(20))
      assert.matches("second signal; exiting now", p:stderr())
      for _, c in ipairs(conns) do c:close() end
    end
  end)

  -- (SIGTERM: a background job of a shell starts with SIGINT ignored)
  it("in a script's main chunk, still ends on a signal as without glisten", function()
    local p = H.start(H.script("while true do end"), { may_exit = true, no_listen = true })
    glisten.sleep(0.3)
    p:signal("TERM")
    assert.equal(143, p:wait(20)) -- the shell's status for death by SIGTERM
  end)
end)
