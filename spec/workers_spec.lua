-- Workers: a pool of threads, each with its own loop and Lua state, serving
-- one port; messages and pub/sub across them; limits and shutdown.
local glisten = H.glisten

-- Greets with "worker ID id ID", then: "post ID text" posts to connection
-- ID; "incr N" adds 1 to shared "hits" N times; "get" answers hits;
-- "bad" tries to post values that cannot cross; "slow" answers after 0.3 s.
local SCRIPT = [[
local glisten = require "glisten"
return {
  with_init = function(state)
    state.socket:send(("worker %d id %d\n"):format(glisten.worker_id(), state.socket.id))
  end,
  handler = function(msg, state)
    local sock = state.socket
    for line in msg:gmatch("[^\n]+") do
      local cmd, a, b = line:match("^(%S+) ?(%S*) ?(.*)$")
      if cmd == "post" then
        local ok, err = glisten.post(tonumber(a), { text = b, from = glisten.worker_id() })
        sock:send(("posted %s %s\n"):format(ok, err))
      elseif cmd == "incr" then
        for _ = 1, tonumber(a) do glisten.shared:incr("hits", 1, 0) end
        sock:send("done\n")
      elseif cmd == "get" then
        sock:send(("hits %s\n"):format(glisten.shared:get("hits")))
      elseif cmd == "bad" then
        local ok1, e1 = pcall(glisten.post, sock.id, print)
        local t = {}; t.t = t
        local ok2, e2 = pcall(glisten.publish, "x", t)
        sock:send(("%s|%s|%s|%s\n"):format(ok1, e1, ok2, e2))
      elseif cmd == "slow" then
        glisten.sleep(0.3)
        sock:send("slow done\n")
      end
    end
  end,
  with_message = function(v, state)
    state.socket:send(("from worker %d: %s\n"):format(v.from, v.text))
  end,
}
]]

local function greet(c)
  local l = assert(c:receive("*l"))
  local w, id = l:match("^worker (%d+) id (%d+)$")
  return tonumber(w), tonumber(id)
end

describe("workers", function()
  after_each(H.no_leaks)
  local script, p

  setup(function() script = H.script(SCRIPT) end)
  after_each(function()
    if p then p:signal("TERM"); p:wait(15); p = nil end
  end)

  it("spread connections over every worker and report the balance", function()
    p = H.start("-w 4 " .. script)
    assert.matches("^listening on 127%.0%.0%.1:%d+\n$", p:stderr())
    local per, cs = {}, {}
    for i = 1, 200 do
      cs[i] = H.connect(p.port)
      local w = greet(cs[i])
      per[w] = (per[w] or 0) + 1
    end
    for _, c in ipairs(cs) do c:close() end
    local shares = {}
    for w = 1, 4 do
      shares[#shares + 1] = ("worker %d: %d"):format(w, per[w] or 0)
      assert.is_true((per[w] or 0) >= 10, "worker " .. w .. " got " .. tostring(per[w]))
    end
    print("\n  balance over 200 connections (SO_REUSEPORT): " .. table.concat(shares, ", "))
  end)

  it("posts to a connection on another worker, keeping order", function()
    p = H.start("-w 4 " .. script)
    local cs, ws, ids = {}, {}, {}
    local a, b
    for i = 1, 40 do
      cs[i] = H.connect(p.port)
      ws[i], ids[i] = greet(cs[i])
      if i > 1 and ws[i] ~= ws[1] then a, b = 1, i; break end
    end
    assert.truthy(b, "no two connections on different workers")
    for n = 1, 20 do
      cs[a]:send(("post %d m%d\n"):format(ids[b], n))
      assert.equal("posted true nil", cs[a]:receive("*l"))
    end
    for n = 1, 20 do
      assert.equal(("from worker %d: m%d"):format(ws[a], n), cs[b]:receive("*l"))
    end
    -- a connection that is gone, on any worker
    cs[b]:close()
    glisten.sleep(0.1)
    cs[a]:send(("post %d late\n"):format(ids[b]))
    assert.equal("posted true nil", cs[a]:receive("*l")) -- queued for its worker, then dropped there
    cs[a]:send(("post %d x\n"):format(ids[b] - (ids[b] % 256) + 255))
    assert.equal("posted nil no such connection", cs[a]:receive("*l")) -- no such worker
    for _, c in pairs(cs) do c:close() end
  end)

  it("adds up shared:incr from many connections on all workers exactly", function()
    p = H.start("-w 4 " .. script)
    local cs, seen = {}, {}
    for i = 1, 40 do cs[i] = H.connect(p.port); seen[greet(cs[i])] = true end
    for w = 1, 4 do assert.is_true(seen[w], "no connection on worker " .. w) end
    for i = 1, 40 do cs[i]:send("incr 500\n") end
    for i = 1, 40 do assert.equal("done", cs[i]:receive("*l")) end
    cs[1]:send("get\n")
    assert.equal("hits 20000", cs[1]:receive("*l"))
    for _, c in ipairs(cs) do c:close() end
  end)

  it("refuses values that cannot cross, with a clear error", function()
    p = H.start("-w 2 " .. script)
    local c = H.connect(p.port)
    greet(c)
    c:send("bad\n")
    local line = c:receive("*l")
    assert.matches("^false|.-cannot send a function value", line)
    assert.matches("|false|.-cannot send a table that contains itself", line)
    c:close()
  end)

  it("drains busy workers on SIGTERM and exits 0", function()
    p = H.start("-w 4 --shutdown-timeout 5 " .. script)
    local cs = {}
    for i = 1, 20 do cs[i] = H.connect(p.port); greet(cs[i]) end
    for i = 1, 20 do cs[i]:send("slow\n") end
    glisten.sleep(0.05)
    p:signal("TERM")
    for i = 1, 20 do assert.equal("slow done", cs[i]:receive("*l")) end
    for i = 1, 20 do cs[i]:close() end
    assert.equal(0, p:wait(10))
    p = nil
  end)

  it("holds max_connections for the whole server", function()
    local limited = H.script([[
      local glisten = require "glisten"
      return {
        with_init = function(state)
          local n = glisten.shared:incr("open", 1, 0)
          glisten.shared:set("peak", math.max(n, glisten.shared:get("peak") or 0))
          state.socket:send("in\n")
        end,
        handler = function(msg, state)
          state.socket:send(("peak %d\n"):format(glisten.shared:get("peak")))
        end,
        with_close = function() glisten.shared:incr("open", -1) end,
      }
    ]])
    p = H.start("-w 4 --max-connections 6 " .. limited)
    local cs = {}
    for i = 1, 12 do cs[i] = H.connect(p.port) end
    local served = {}
    for i = 1, 12 do
      served[i] = cs[i]:receive("*l", 0.3) == "in"
    end
    local n = 0
    for i = 1, 12 do if served[i] then n = n + 1 end end
    assert.equal(6, n)
    -- closing the served ones lets the rest in, nothing lost
    for i = 1, 12 do if served[i] then cs[i]:close() end end
    for i = 1, 12 do
      if not served[i] then assert.equal("in", cs[i]:receive("*l")) end
    end
    local last
    for i = 1, 12 do if not served[i] then last = cs[i] end end
    last:send("?")
    local peak = tonumber(last:receive("*l"):match("peak (%d+)"))
    assert.is_true(peak <= 6, "peak " .. peak)
    for i = 1, 12 do cs[i]:close() end
  end)

  it("stops the start cleanly when a worker's script fails to load", function()
    local rc, _, err = H.run("-w 3 " .. H.script("local x = nil\nreturn { handler = function() end, y = x.z }\n"))
    assert.equal(1, rc)
    assert.matches("worker 1: .-:2: attempt to index a nil value", err)
    assert.not_matches("listening on", err)
    -- a failure in a later worker stops the ones already started
    rc, _, err = H.run("-w 4 " .. H.script([[
      local glisten = require "glisten"
      if glisten.worker_id() == 3 then error("worker three cannot start") end
      function handler(msg, state) state.socket:send(msg) end
    ]]))
    assert.equal(1, rc)
    assert.matches("worker 3: .-:2: worker three cannot start", err)
    assert.not_matches("listening on", err)
  end)

  it("runs chat.lua the same with 1 worker and with 4: every line reaches every other client once", function()
    for _, workers in ipairs{ 1, 4 } do
      p = H.start(("-w %d scripts/chat.lua"):format(workers))
      local n = 200
      local cs = {}
      for i = 1, n do
        cs[i] = H.connect(p.port)
        assert.matches("^%* you are %d+", cs[i]:receive("*l"))
      end
      for i = 1, n do cs[i]:send(("line from %d\n"):format(i)) end
      for i = 1, n do
        local got = {}
        for _ = 1, n - 1 do
          local l = assert(cs[i]:receive("*l"))
          assert.is_nil(got[l], "duplicate: " .. l)
          got[l] = true
        end
        assert.is_nil(got[("line from %d"):format(i)], "a client got its own line")
        assert.same({ nil, "timeout", "" }, { cs[i]:receive("*l", 0.01) }) -- nothing more
      end
      for i = 1, n do cs[i]:close() end
      p:signal("TERM")
      assert.equal(0, p:wait(10))
      p = nil
    end
  end)
end)

describe("glisten.serve with script and workers", function()
  after_each(H.no_leaks)

  it("serves a script with a pool from the module, with per-worker stats", function()
    local srv = assert(glisten.serve{ script = H.script(SCRIPT), workers = 3, port = 0 })
    assert.is_true(srv.port > 0)
    assert.equal(3, srv.workers)
    assert.matches("3 workers", tostring(srv))
    local cs = {}
    for i = 1, 30 do cs[i] = H.connect(srv.port); greet(cs[i]) end
    local st = glisten.stats()
    assert.equal(3, #st.workers)
    local sum = 0
    for w = 1, 3 do sum = sum + st.workers[w].accepted end
    assert.equal(30, sum)
    assert.is_true(H.wait_for(function() return srv.connections == 30 end))
    for _, c in ipairs(cs) do c:close() end
    srv:close()
    glisten.run() -- returns once the workers have exited
    assert.equal(0, srv.connections)
  end)

  it("needs a script for more than one worker, and reports load errors", function()
    assert.has_error(function()
      glisten.serve{ workers = 2, handler = function() end }
    end, "glisten.serve: more than one worker needs script = \"path.lua\" (functions cannot move between Lua states)")
    local srv, err = glisten.serve{ script = H.script("syntax error here"), workers = 2, port = 0 }
    assert.is_nil(srv)
    assert.matches("worker 1: .-:1:", err)
    local srv2, err2 = glisten.serve{ script = "/nonexistent.lua", workers = 2, port = 0 }
    assert.is_nil(srv2)
    assert.matches("cannot open /nonexistent.lua", err2)
  end)

  it("drops (and counts) messages for a subscriber that does not keep up, never stalling the sender", function()
    local srv = assert(glisten.serve{ script = "scripts/chat.lua", workers = 2, port = 0, max_mailbox = 16 })
    local silent = H.connect(srv.port) -- never reads again
    assert.matches("^%* you are", silent:receive("*l"))
    local talker = H.connect(srv.port)
    assert.matches("^%* you are", talker:receive("*l"))
    local dropped0 = glisten.stats().dropped
    local line = ("z"):rep(2000) .. "\n"
    local t0 = glisten.now()
    for _ = 1, 20000 do assert(talker:send(line)) end -- 40 MB for the silent one
    assert.is_true(H.wait_for(function() return glisten.stats().dropped > dropped0 end, 10))
    -- let the server finish publishing the backlog (a newcomer's mailbox of
    -- 16 would overflow with it, by design), then it still works for others
    local last
    repeat
      last = glisten.stats().dropped
      glisten.sleep(0.3)
    until glisten.stats().dropped == last
    local late = H.connect(srv.port)
    assert.matches("^%* you are", late:receive("*l"))
    talker:send("hello late\n")
    local got
    repeat got = late:receive("*l") until got == "hello late" or not got
    assert.equal("hello late", got)
    print(("\n  20000 lines of 2 kB sent in %.2f s; dropped for the silent subscriber: %d")
      :format(glisten.now() - t0, glisten.stats().dropped - dropped0))
    silent:close(); talker:close(); late:close()
    srv:close()
    glisten.run()
  end)

  it("reports 1 of 1 outside a pool", function()
    assert.equal(1, glisten.worker_id())
    assert.equal(1, glisten.worker_count())
  end)
end)
