-- Workers: a pool of threads, each with its own loop and Lua state, serving
-- one port; messages and pub/sub across them; limits and shutdown.
local glisten = H.glisten

-- Greets with "worker ID of COUNT id CONN", then: "post ID text" posts to
-- connection ID; "incr N" adds 1 to shared "hits" N times; "get" answers
-- hits; "bad" tries to post values that cannot cross; "slow" answers after
-- 0.3 s; "sub T" / "unsub T" (un)subscribe to topic T; "pub T text"
-- publishes "T text" to T; "stats" answers the pool's counters.
local SCRIPT = [[
local glisten = require "glisten"
return {
  with_init = function(state)
    state.socket:send(("worker %d of %d id %d\n"):format(glisten.worker_id(),
      glisten.worker_count(), state.socket.id))
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
      elseif cmd == "sub" then
        sock:send(("sub %s %s\n"):format(a, sock:subscribe(a)))
      elseif cmd == "unsub" then
        sock:send(("unsub %s %s\n"):format(a, sock:unsubscribe(a)))
      elseif cmd == "pub" then
        local ok = glisten.publish(a, { text = a .. " " .. b, from = glisten.worker_id() })
        sock:send(("pub %s %s\n"):format(a, ok))
      elseif cmd == "stats" then
        local st = glisten.stats()
        sock:send(("connections %d dropped %d\n"):format(st.connections, st.dropped))
      end
    end
  end,
  with_message = function(v, state)
    state.socket:send(("from worker %d: %s\n"):format(v.from, v.text))
  end,
}
]]

-- Every wait of these specs only bounds a hang; a busy machine must never
-- reach it.
local LONG = 60

-- A client whose every call waits at most LONG seconds.
local function connect(port) return H.connect(port, nil, LONG) end

-- Reads the greeting: worker id, worker count, connection id.
local function greet(c)
  local l = assert(c:receive("*l"))
  local w, n, id = l:match("^worker (%d+) of (%d+) id (%d+)$")
  assert(w, "greeting: " .. l)
  return tonumber(w), tonumber(id), tonumber(n)
end

-- Sends line on c and returns the answer line.
local function ask(c, line)
  assert(c:send(line .. "\n"))
  return assert(c:receive("*l"))
end

-- The pool's connections and dropped messages, asked through c.
local function pool_stats(c)
  local n, d = ask(c, "stats"):match("^connections (%d+) dropped (%d+)$")
  return tonumber(n), tonumber(d)
end

-- Connects until every worker in 1..n has `per` connections (at most 400
-- tries: the kernel picks the worker by a hash of the addresses). Returns
-- by[w] = { {sock =, id =}, ... } and the connections not needed, open.
local function spread(port, n, per)
  local by, spare = {}, {}
  for w = 1, n do by[w] = {} end
  for _ = 1, 400 do
    local done = true
    for w = 1, n do if #by[w] < per then done = false end end
    if done then return by, spare end
    local c = connect(port)
    local w, id = greet(c)
    if #by[w] < per then
      by[w][#by[w] + 1] = { sock = c, id = id }
    else
      spare[#spare + 1] = c
    end
  end
  error("400 connections did not reach every worker")
end

-- Ends a test: the process it left running (if any) must stop gracefully
-- and exit 0, and then nothing may be left open (H.no_leaks, which would
-- kill a process still running, so it comes second). Returns nil.
local function stop_then_check(p)
  local ok, rc
  if p then ok, rc = pcall(p.stop, p, LONG) end
  H.no_leaks()
  if p then
    assert(ok, rc)
    assert.equal(0, rc, "glisten-lua exited with " .. tostring(rc) .. "; stderr:\n" .. p:stderr())
  end
  return nil
end

-- The machine's CPU count as the pool's "auto" counts it (online CPUs).
local function cpus()
  local f = assert(io.popen("getconf _NPROCESSORS_ONLN"))
  local n = tonumber(f:read("a"))
  f:close()
  assert(n and n >= 1, "getconf _NPROCESSORS_ONLN gave no count")
  return n
end

describe("workers", function()
  local script, p

  setup(function() script = H.script(SCRIPT) end)
  after_each(function() local q = p; p = nil; stop_then_check(q) end)

  it("spread connections over every worker and report the balance", function()
    p = H.start("-w 4 " .. script)
    assert.matches("^listening on 127%.0%.0%.1:%d+\n$", p:stderr())
    local per, cs = {}, {}
    for i = 1, 200 do
      cs[i] = connect(p.port)
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

  -- Catches worker_count() left at 1 inside a pool (it answered 1 with -w 2).
  it("worker_count() is the pool's size in every worker, and worker_id() runs 1..N", function()
    for _, n in ipairs{ 2, 3 } do
      p = H.start(("-w %d %s"):format(n, script))
      local seen, nseen = {}, 0
      for _ = 1, 400 do
        local c = connect(p.port)
        local id, _, count = greet(c)
        c:close()
        assert.equal(n, count, "worker_count() in worker " .. id .. " of -w " .. n)
        assert.is_true(id >= 1 and id <= n, "worker_id " .. id)
        if not seen[id] then seen[id], nseen = true, nseen + 1 end
        if nseen == n then break end
      end
      assert.equal(n, nseen, "distinct workers that served a connection")
      local rc = p:stop(LONG)
      p = nil
      assert.equal(0, rc)
    end
  end)

  -- Catches "-w auto" starting one worker (or any count but the CPUs'),
  -- seen from inside the script: worker_count() and the worker ids.
  it("-w auto starts one worker per CPU, as the script sees it", function()
    local n = cpus()
    if n == 1 then print("\n  this machine has 1 CPU: -w auto cannot be told from one worker here") end
    p = H.start("-w auto " .. script)
    local seen, nseen = {}, 0
    for _ = 1, 400 do
      local c = connect(p.port)
      local id, _, count = greet(c)
      c:close()
      assert.equal(n, count, "worker_count() with -w auto")
      assert.is_true(id >= 1 and id <= n, "worker_id " .. id)
      if not seen[id] then seen[id], nseen = true, nseen + 1 end
      if nseen == n then break end
    end
    assert.equal(n, nseen, "distinct workers that served a connection")
  end)

  it("posts to a connection on another worker, keeping order, and counts one that finds no connection", function()
    p = H.start("-w 2 " .. script)
    -- a on worker 1; b and c on worker 2
    local by, spare = spread(p.port, 2, 2)
    spare[#spare + 1] = by[1][2].sock
    for _, s in ipairs(spare) do s:close() end
    local a, b, c = by[1][1], by[2][1], by[2][2]
    for n = 1, 20 do
      assert.equal("posted true nil", ask(a.sock, ("post %d m%d"):format(b.id, n)))
    end
    for n = 1, 20 do
      assert.equal(("from worker 1: m%d"):format(n), b.sock:receive("*l"))
    end
    -- A connection that is gone: the post is queued for its worker and
    -- dropped there, and counted (catches a drop that is not counted).
    -- Wait until its worker has forgotten it, so the drop is certain.
    b.sock:close()
    assert.is_true(H.wait_for(function() return (pool_stats(a.sock)) == 2 end, LONG))
    local _, dropped0 = pool_stats(a.sock)
    assert.equal("posted true nil", ask(a.sock, ("post %d late"):format(b.id)))
    -- a post after it to c, on the same worker, arrives after the late one
    -- was handled there (one sender's messages keep their order)
    assert.equal("posted true nil", ask(a.sock, ("post %d after"):format(c.id)))
    assert.equal("from worker 1: after", c.sock:receive("*l"))
    assert.equal(dropped0 + 1, select(2, pool_stats(a.sock)),
      "a late post is counted once in stats().dropped")
    -- no such worker: refused at once
    assert.equal("posted nil no such connection", ask(a.sock, ("post %d x"):format(b.id - (b.id % 256) + 255)))
    a.sock:close(); c.sock:close()
  end)

  it("adds up shared:incr from many connections on all workers exactly", function()
    p = H.start("-w 4 " .. script)
    local cs, seen = {}, {}
    for i = 1, 40 do cs[i] = connect(p.port); seen[greet(cs[i])] = true end
    for w = 1, 4 do assert.is_true(seen[w], "no connection on worker " .. w) end
    for i = 1, 40 do cs[i]:send("incr 500\n") end
    for i = 1, 40 do assert.equal("done", cs[i]:receive("*l")) end
    cs[1]:send("get\n")
    assert.equal("hits 20000", cs[1]:receive("*l"))
    for _, c in ipairs(cs) do c:close() end
  end)

  it("refuses values that cannot cross, with a clear error", function()
    p = H.start("-w 2 " .. script)
    local c = connect(p.port)
    greet(c)
    c:send("bad\n")
    local line = c:receive("*l")
    assert.matches("^false|.-cannot send a function value", line)
    assert.matches("|false|.-cannot send a table that contains itself", line)
    c:close()
  end)

  -- Catches an unsubscribe that leaves the socket subscribed (delivery goes
  -- on), one that ends the topic for every subscriber or the socket's other
  -- topics, one whose socket cannot subscribe again, and a worker's count of
  -- subscriptions lowered by unsubscribing from a topic it never joined
  -- (publishes from other workers then skip that worker).
  it("unsubscribe(topic) stops that topic for that socket alone, on any worker, until it subscribes again", function()
    p = H.start("-w 2 " .. script)
    -- A and B on worker 1 with a publisher Q; C and a publisher P on
    -- worker 2 (publishers subscribe to nothing)
    local by, spare = spread(p.port, 2, 3)
    spare[#spare + 1] = by[2][3].sock
    for _, s in ipairs(spare) do s:close() end
    local A, B, Q = by[1][1].sock, by[1][2].sock, by[1][3].sock
    local C, P = by[2][1].sock, by[2][2].sock
    for _, c in ipairs{ A, B, C } do
      assert.equal("sub t true", ask(c, "sub t"))
      assert.equal("sub u true", ask(c, "sub u"))
    end
    assert.equal("unsub t true", ask(A, "unsub t"))
    assert.equal("pub t true", ask(P, "pub t one"))
    assert.equal("pub u true", ask(P, "pub u two"))
    for _, c in ipairs{ B, C } do
      assert.equal("from worker 2: t one", c:receive("*l"))
      assert.equal("from worker 2: u two", c:receive("*l"))
    end
    -- one sender's messages keep their order: had "t one" reached A, it
    -- would come first
    assert.equal("from worker 2: u two", A:receive("*l"))

    -- unsubscribing again, or from a topic never joined, changes nothing:
    -- worker 1 still has three subscriptions (A to u, B to t and u), so
    -- publishes from worker 2 must still go there
    for _ = 1, 3 do assert.equal("unsub t true", ask(A, "unsub t")) end
    assert.equal("unsub never true", ask(A, "unsub never"))
    assert.equal("unsub never true", ask(B, "unsub never"))
    assert.equal("pub u true", ask(P, "pub u three"))
    -- a post after the publish, to A: were the publish not sent to worker
    -- 1 at all, the post would be the first thing A reads
    assert.equal("posted true nil", ask(P, ("post %d after three"):format(by[1][1].id)))
    for _, c in ipairs{ A, B, C } do
      assert.equal("from worker 2: u three", c:receive("*l"))
    end
    assert.equal("from worker 2: after three", A:receive("*l"))

    -- subscribing again resumes delivery, from either worker
    assert.equal("sub t true", ask(A, "sub t"))
    assert.equal("pub t true", ask(P, "pub t four"))
    for _, c in ipairs{ A, B, C } do
      assert.equal("from worker 2: t four", c:receive("*l"))
    end
    assert.equal("unsub t true", ask(B, "unsub t"))
    assert.equal("pub t true", ask(Q, "pub t five"))
    assert.equal("pub u true", ask(Q, "pub u six"))
    for _, c in ipairs{ A, C } do
      assert.equal("from worker 1: t five", c:receive("*l"))
      assert.equal("from worker 1: u six", c:receive("*l"))
    end
    assert.equal("from worker 1: u six", B:receive("*l"))
    for _, c in ipairs{ A, B, C, P, Q } do c:close() end
  end)

  it("drains busy workers on SIGTERM and exits 0", function()
    p = H.start("-w 4 --shutdown-timeout 30 " .. script)
    local cs = {}
    for i = 1, 20 do cs[i] = connect(p.port); greet(cs[i]) end
    for i = 1, 20 do cs[i]:send("slow\n") end
    glisten.sleep(0.05)
    p:signal("TERM")
    for i = 1, 20 do assert.equal("slow done", cs[i]:receive("*l")) end
    for i = 1, 20 do cs[i]:close() end
    assert.equal(0, p:wait(LONG))
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
    local cs, served, nserved = {}, {}, 0
    for i = 1, 12 do cs[i] = connect(p.port) end
    for i = 1, 12 do
      glisten.spawn(function()
        if cs[i]:receive("*l") == "in" then
          served[i] = nserved + 1 -- the order of service
          nserved = nserved + 1
        end
      end)
    end
    -- six are served; the others wait in the backlog while those six stay
    -- open (the peak below shows that no seventh got in meanwhile)
    assert.is_true(H.wait_for(function() return nserved >= 6 end, LONG), nserved .. " served")
    local first = {}
    for i = 1, 12 do
      if served[i] and served[i] <= 6 then first[#first + 1] = i end
    end
    -- closing the first six lets the rest in, nothing lost
    for _, i in ipairs(first) do cs[i]:close() end
    assert.is_true(H.wait_for(function() return nserved == 12 end, LONG), nserved .. " of 12 served")
    local last
    for i = 1, 12 do if served[i] > 6 then last = cs[i] end end
    last:send("?")
    local peak = tonumber(last:receive("*l"):match("peak (%d+)"))
    assert.is_true(peak <= 6, "peak " .. peak)
    for i = 1, 12 do cs[i]:close() end
  end)

  it("stops the start cleanly when a worker's script fails to load", function()
    local rc, _, err = H.run("-w 3 " .. H.script("local x = nil\nreturn { handler = function() end, y = x.z }\n"), LONG)
    assert.equal(1, rc)
    assert.matches("worker 1: .-:2: attempt to index a nil value", err)
    assert.not_matches("listening on", err)
    -- a failure in a later worker stops the ones already started
    rc, _, err = H.run("-w 4 " .. H.script([[
      local glisten = require "glisten"
      if glisten.worker_id() == 3 then error("worker three cannot start") end
      function handler(msg, state) state.socket:send(msg) end
    ]]), LONG)
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
        cs[i] = connect(p.port)
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
      end
      -- nothing more: each client sends a last line, and those are the
      -- next lines every other client reads (one sender's lines keep their
      -- order, so a duplicate of a sender's line would come before its last)
      for i = 1, n do cs[i]:send(("end %d\n"):format(i)) end
      for i = 1, n do
        local ends = {}
        for _ = 1, n - 1 do
          local l = assert(cs[i]:receive("*l"))
          local from = tonumber(l:match("^end (%d+)$"))
          assert(from and from ~= i and not ends[from], ("client %d read %q among the last lines"):format(i, l))
          ends[from] = true
        end
      end
      for i = 1, n do cs[i]:close() end
      p:signal("TERM")
      assert.equal(0, p:wait(LONG))
      p = nil
    end
  end)
end)

describe("values between workers", function()
  local p
  after_each(function() local q = p; p = nil; stop_then_check(q) end)

  -- Each command answers in one line what the post gave: "true nil", "nil
  -- ERR", or "raised ERR". "dag ID" posts a table held three times and used
  -- as a key; "tt ID N" posts {kind =, t = t} where t = {t, t} nests N
  -- tables; "deep ID N" posts a value N tables deep; "big ID N" a string
  -- of N bytes; "make N" keeps a string of N + 1 bytes, which "postkept ID"
  -- posts in a table. "hold CAP ROOM" keeps all but about ROOM bytes of
  -- what the state may hold (CAP); "release" lets them go. with_message
  -- answers what arrived: the DAG's identities, the tables in t and
  -- whether each one's two halves are one table, a depth, a length.
  local VALUES = [[
local glisten = require "glisten"
local hoard, kept
local function try(...)
  local r = table.pack(pcall(...))
  if not r[1] then return "raised " .. tostring(r[2]) end
  return tostring(r[2]) .. " " .. tostring(r[3])
end
local function nest(n)
  local t = {}
  for _ = 2, n do t = {t} end
  return t
end
return {
  with_init = function(state)
    state.socket:send(("worker %d of %d id %d\n"):format(glisten.worker_id(),
      glisten.worker_count(), state.socket.id))
  end,
  handler = function(msg, state)
    local sock = state.socket
    local cmd, a, b = msg:match("^(%S+) ?(%S*) ?(%S*)\n$")
    local id, n = tonumber(a), tonumber(b)
    local answer
    if cmd == "dag" then
      local s = {x = 1}
      answer = try(glisten.post, id, {kind = "dag", a = s, b = s, list = {s, s}, [s] = "key"})
    elseif cmd == "tt" then
      local t = {}
      for _ = 2, n do t = {t, t} end
      answer = try(glisten.post, id, {kind = "tt", t = t})
    elseif cmd == "deep" then
      answer = try(glisten.post, id, {kind = "deep", t = nest(n - 1)})
    elseif cmd == "big" then
      answer = try(glisten.post, id, ("b"):rep(n))
    elseif cmd == "make" then
      kept = ("k"):rep(tonumber(a)) .. "!"
      answer = "made " .. #kept
    elseif cmd == "postkept" then
      answer = try(glisten.post, id, {kept})
    elseif cmd == "hold" then
      local cap, room = tonumber(a), tonumber(b)
      local piece = ("h"):rep(16384)
      hoard = {}
      collectgarbage()
      while cap - collectgarbage("count") * 1024 > room + 65536 do
        hoard[#hoard + 1] = piece .. #hoard
      end
      collectgarbage()
      answer = ("holding; %d bytes left"):format(cap - math.floor(collectgarbage("count") * 1024))
    elseif cmd == "release" then
      hoard = nil
      collectgarbage()
      answer = "released"
    end
    sock:send(answer .. "\n")
  end,
  with_message = function(m, state)
    local out
    if type(m) == "string" then
      out = "string of " .. #m
    elseif type(m[1]) == "string" then
      out = "kept string of " .. #m[1]
    elseif m.kind == "dag" then
      out = ("dag %s %s %s"):format(m.a == m.b, m.list[1] == m.a and m.list[2] == m.a,
        m[m.a] == "key")
    elseif m.kind == "tt" then
      local tables, halves, t = 0, true, m.t
      while t do
        tables = tables + 1
        halves = halves and t[1] == t[2]
        t = t[1]
      end
      out = ("tt %d tables, halves shared %s"):format(tables, halves)
    elseif m.kind == "deep" then
      local d, t = 0, m
      while t do d = d + 1; t = t.t or t[1] end
      out = "deep " .. d
    end
    state.socket:send(out .. "\n")
  end,
}
]]

  -- Two workers, a connection on each: the sender on 2, the target on 1.
  local function pair(args)
    p = H.start("-w 2 " .. (args or "") .. H.script(VALUES))
    local by, spare = spread(p.port, 2, 1)
    for _, s in ipairs(spare) do s:close() end
    return by[2][1].sock, by[1][1]
  end

  -- Catches a copy that sends a table met twice as two tables.
  it("keep a table's identity: two references to one table arrive as two references to one table", function()
    local sender, target = pair()
    assert.equal("true nil", ask(sender, "dag " .. target.id))
    assert.equal("dag true true true", target.sock:receive("*l"))
    sender:close(); target.sock:close()
  end)

  -- t = {t, t} 23 tables deep has 2^22 paths to its innermost table: a
  -- copy that follows paths needs hundreds of MB. Here the sender holds all
  -- but about 64 KiB of its max_memory, where the encoding must fit.
  -- Catches an encoding that grows with the paths, not the tables, and a
  -- decoding that makes a table per path.
  it("post t = {t, t} nested 23 tables in bytes that grow with its tables, not its paths", function()
    local cap = 16 << 20
    local sender, target = pair(("--max-memory %d "):format(cap))
    local left = tonumber(ask(sender, ("hold %d %d"):format(cap, 65536)):match("^holding; (%d+) bytes left$"))
    assert.is_true(left < 256 << 10, left .. " bytes left")
    assert.equal("true nil", ask(sender, ("tt %d 23"):format(target.id)))
    assert.equal("tt 23 tables, halves shared true", target.sock:receive("*l"))
    assert.equal("released", ask(sender, "release"))
    sender:close(); target.sock:close()
  end)

  -- Catches a depth cap other than 200 or a message that does not say so.
  it("nest at most 200 tables deep, and say so past it", function()
    local sender, target = pair()
    assert.equal("true nil", ask(sender, ("deep %d 200"):format(target.id)))
    assert.equal("deep 200", target.sock:receive("*l"))
    assert.equal("raised cannot send a value nested more than 200 tables deep",
      ask(sender, ("deep %d 201"):format(target.id)))
    sender:close(); target.sock:close()
  end)

  -- Catches a value of any size being sent, and a cap that does not say
  -- which.
  it("take at most 64 MiB encoded, and say so past it", function()
    local sender, target = pair()
    assert.equal("raised cannot send a value larger than 64 MiB encoded",
      ask(sender, ("big %d %d"):format(target.id, 64 << 20)))
    assert.equal("true nil", ask(sender, ("big %d %d"):format(target.id, 1 << 20)))
    assert.equal("string of " .. (1 << 20), target.sock:receive("*l"))
    sender:close(); target.sock:close()
  end)

  -- The sender keeps a 3 MiB string, then holds all but about 5 MiB of its
  -- max_memory: the encoding (3 MiB) and the message made of it (3 MiB)
  -- cannot both fit. Catches an encoding buffer that max_memory does not
  -- count (the post would then succeed), and a failure that reads as
  -- anything but "not enough memory".
  it("count the encoding against max_memory, and fail with \"not enough memory\" past it", function()
    local cap = 24 << 20
    local sender, target = pair(("--max-memory %d "):format(cap))
    assert.equal("made " .. ((3 << 20) + 1), ask(sender, "make " .. (3 << 20)))
    local left = tonumber(ask(sender, ("hold %d %d"):format(cap, 5 << 20)):match("^holding; (%d+) bytes left$"))
    assert.is_true(left > 5 << 20 and left < (5 << 20) + (256 << 10), left .. " bytes left")
    assert.equal("raised not enough memory", ask(sender, "postkept " .. target.id))
    -- memory back: the same post goes through
    assert.equal("released", ask(sender, "release"))
    assert.equal("true nil", ask(sender, "postkept " .. target.id))
    assert.equal("kept string of " .. ((3 << 20) + 1), target.sock:receive("*l"))
    sender:close(); target.sock:close()
  end)
end)

describe("worker inboxes", function()
  local p
  after_each(function() local q = p; p = nil; stop_then_check(q) end)

  -- "block" keeps its worker inside a callback (its loop does not run, so
  -- its inbox is not emptied) until shared "go" is set; "flood ID" posts
  -- 1, 2, 3, ... to connection ID until a post is refused, sets "go", and
  -- answers how many were taken and the refusal; "expect N": once N
  -- messages have arrived, answers how many came out of order.
  local INBOX = [[
local glisten = require "glisten"
local shared = glisten.shared
local function report(state)
  if state.want and state.got == state.want then
    state.socket:send(("received %d, %d out of order\n"):format(state.got, state.bad))
    state.want = nil
  end
end
return {
  with_init = function(state)
    state.got, state.bad, state.next = 0, 0, 1
    state.socket:send(("worker %d of %d id %d\n"):format(glisten.worker_id(),
      glisten.worker_count(), state.socket.id))
  end,
  handler = function(msg, state)
    local sock = state.socket
    local cmd, a = msg:match("^(%S+) ?(%S*)\n$")
    if cmd == "block" then
      sock:send("blocking\n")
      local limit = os.time() + 120 -- bounds the spin should the spec die
      while not shared:get("go") and os.time() < limit do end
    elseif cmd == "flood" then
      local id, n, ok, err = tonumber(a), 0, nil, nil
      repeat
        ok, err = glisten.post(id, n + 1)
        if ok then n = n + 1 end
      until not ok or n > 1000000
      shared:set("go", true)
      sock:send(("taken %d, then %s\n"):format(n, tostring(err)))
    elseif cmd == "expect" then
      state.want = tonumber(a)
      report(state)
    end
  end,
  with_message = function(v, state)
    state.got = state.got + 1
    if v ~= state.next then state.bad = state.bad + 1 end
    state.next = v + 1
    report(state)
  end,
}
]]

  -- Catches an inbox with no bound or a bound off by one, a refusal
  -- reported as anything but "worker inbox full", and a burst of posts
  -- delivered out of order.
  it("refuse posts with \"worker inbox full\" once 65536 wait, and deliver the 65536 in order", function()
    -- (no slice: the spin must hold worker 1, not yield to its inbox)
    p = H.start("-w 2 --callback-slice 0 --max-mailbox 100000 " .. H.script(INBOX))
    local by, spare = spread(p.port, 2, 1)
    for _, s in ipairs(spare) do s:close() end
    local target, sender = by[1][1], by[2][1].sock
    assert.equal("blocking", ask(target.sock, "block"))
    -- worker 1 is inside a callback now, and takes nothing from its inbox
    -- until the flood is refused
    assert.equal("taken 65536, then worker inbox full", ask(sender, "flood " .. target.id))
    -- worker 1 runs again: every message taken arrives, in the order sent
    assert.equal("received 65536, 0 out of order", ask(target.sock, "expect 65536"))
    target.sock:close(); sender:close()
  end)

  -- "hold CAP ROOM" keeps all but about ROOM bytes of what this state may
  -- hold (CAP); "send ID N" posts N strings of 1 MiB to connection ID and
  -- answers how many were taken; "errors" answers the pool's error count;
  -- "release" lets the held memory go. with_message answers the size it got.
  local HOLD = [[
local glisten = require "glisten"
local hoard
return {
  with_init = function(state)
    state.socket:send(("worker %d of %d id %d\n"):format(glisten.worker_id(),
      glisten.worker_count(), state.socket.id))
  end,
  handler = function(msg, state)
    local sock = state.socket
    local cmd, a, b = msg:match("^(%S+) ?(%S*) ?(%S*)\n$")
    if cmd == "hold" then
      local cap, room = tonumber(a), tonumber(b)
      local piece = ("h"):rep(16384)
      hoard = {}
      collectgarbage()
      while cap - collectgarbage("count") * 1024 > room + 65536 do
        hoard[#hoard + 1] = piece .. #hoard
      end
      collectgarbage()
      sock:send(("holding; %d bytes left\n"):format(cap - math.floor(collectgarbage("count") * 1024)))
    elseif cmd == "send" then
      local big, taken = ("p"):rep(1 << 20), 0
      for _ = 1, tonumber(b) do
        if glisten.post(tonumber(a), big) then taken = taken + 1 end
      end
      sock:send(("sent %d\n"):format(taken))
    elseif cmd == "errors" then
      sock:send(("errors %d\n"):format(glisten.stats().errors))
    elseif cmd == "release" then
      hoard = nil
      collectgarbage()
      sock:send("released\n")
    end
  end,
  with_message = function(v, state)
    state.socket:send(("got %d bytes\n"):format(#v))
  end,
}
]]

  -- Catches the once-a-second limit on repeated errors leaving out the
  -- number of lines it held back (or getting it wrong), and a limit that
  -- does not hold anything back.
  it("log a burst of failed deliveries once a second, with the exact number left out", function()
    local cap, room = 6000000, 262144
    p = H.start(("-w 2 --max-memory %d %s"):format(cap, H.script(HOLD)))
    local by, spare = spread(p.port, 2, 1)
    for _, s in ipairs(spare) do s:close() end
    local target, sender = by[1][1], by[2][1].sock
    local left = tonumber(ask(target.sock, ("hold %d %d"):format(cap, room)):match("^holding; (%d+) bytes left$"))
    assert.is_true(left < 1 << 20, left .. " bytes left: a 1 MiB message would fit")
    local function errors() return tonumber(ask(sender, "errors"):match("^errors (%d+)$")) end
    local errors0 = errors()
    -- a burst: worker 1 has no memory to take any of these
    local burst = 30
    assert.equal("sent " .. burst, ask(sender, ("send %d %d"):format(target.id, burst)))
    assert.is_true(H.wait_for(function() return errors() == errors0 + burst end, LONG),
      "the burst did not fail as expected")
    -- The lines of a kind of error on worker 1's stderr, and the numbers
    -- they say were left out.
    local function logged()
      local lines, held_back, counted = 0, 0, false
      for suffix in p:stderr():gmatch("glisten: cannot deliver a message: not enough memory([^\n]*)\n") do
        lines = lines + 1
        if suffix ~= "" then
          local n = suffix:match("^ %(and (%d+) more like it left out%)$")
          assert(n, "an unexpected line: " .. suffix)
          held_back = held_back + tonumber(n)
          counted = true
        end
      end
      return lines, held_back, counted
    end
    -- More than a second later (twice the limit), one more failure: its
    -- line is written, and carries the number held back since the last.
    glisten.sleep(2)
    local before = logged() -- each line is written as its error is counted
    assert.is_true(before >= 1, "the burst logged nothing")
    assert.equal("sent 1", ask(sender, ("send %d 1"):format(target.id)))
    local failures = burst + 1
    assert.is_true(H.wait_for(function() return errors() == errors0 + failures end, LONG))
    assert.is_true(H.wait_for(function() return logged() == before + 1 end, LONG),
      "no line for a failure more than a second after the others:\n" .. p:stderr())
    local lines, held_back, counted = logged()
    assert.equal(failures, lines + held_back,
      ("%d failures, %d lines, %d said to be left out:\n%s"):format(failures, lines, held_back, p:stderr()))
    assert.is_true(lines < failures, "every failure was logged: nothing held back")
    assert.is_true(counted, "no line said how many were left out")
    -- memory back: the next message arrives
    assert.equal("released", ask(target.sock, "release"))
    assert.equal("sent 1", ask(sender, ("send %d 1"):format(target.id)))
    assert.equal("got 1048576 bytes", target.sock:receive("*l"))
    target.sock:close(); sender:close()
  end)
end)

describe("glisten.serve with script and workers", function()
  after_each(H.no_leaks)

  -- Serves opts with a pool of this process for the length of fn(srv),
  -- then closes it and runs the loop until its workers have exited (at
  -- most LONG seconds), also when fn fails, so that a failing test leaves
  -- no pool running into the next. Returns the server.
  local function with_pool(opts, fn)
    local srv = assert(glisten.serve(opts))
    local ok, err = pcall(fn, srv)
    srv:close()
    local deadline = glisten.now() + LONG
    repeat
      collectgarbage() -- the sockets of a failed fn
      if glisten.now() > deadline then
        error("the pool's workers did not exit within " .. LONG .. " s", 0)
      end
    until not glisten.step(0.05)
    if not ok then error(err, 0) end
    return srv
  end

  it("serves a script with a pool from the module, with per-worker stats", function()
    local srv = with_pool({ script = H.script(SCRIPT), workers = 3, port = 0 }, function(srv)
      assert.is_true(srv.port > 0)
      assert.equal(3, srv.workers)
      assert.matches("3 workers", tostring(srv))
      local cs = {}
      for i = 1, 30 do
        cs[i] = connect(srv.port)
        local _, _, n = greet(cs[i])
        assert.equal(3, n)
      end
      local st = glisten.stats()
      assert.equal(3, #st.workers)
      local sum = 0
      for w = 1, 3 do sum = sum + st.workers[w].accepted end
      assert.equal(30, sum)
      assert.is_true(H.wait_for(function() return srv.connections == 30 end, LONG))
      for _, c in ipairs(cs) do c:close() end
    end)
    assert.equal(0, srv.connections)
  end)

  -- Catches workers = "auto" starting any count but the CPUs'.
  it("starts one worker per CPU with workers = \"auto\", as the script sees it", function()
    local n = cpus()
    with_pool({ script = H.script(SCRIPT), workers = "auto", port = 0 }, function(srv)
      assert.equal(n, srv.workers)
      local seen, nseen = {}, 0
      for _ = 1, 400 do
        local c = connect(srv.port)
        local id, _, count = greet(c)
        c:close()
        assert.equal(n, count, "worker_count() with workers = \"auto\"")
        if not seen[id] then seen[id], nseen = true, nseen + 1 end
        if nseen == n then break end
      end
      assert.equal(n, nseen, "distinct workers that served a connection")
    end)
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
    -- (a chat without chat.lua's pace, which would take minutes here)
    local CHAT = H.script([[
local glisten = require "glisten"
return {
  with_init = function(state)
    state.socket:subscribe("chat")
    state.socket:send("* you are " .. state.socket.id .. "\n")
  end,
  handler = function(msg, state)
    for line in msg:gmatch("[^\n]+") do
      glisten.publish("chat", { from = state.socket.id, line = line })
    end
  end,
  with_message = function(m, state)
    if m.from ~= state.socket.id then state.socket:send(m.line .. "\n") end
  end,
}
]])
    with_pool({ script = CHAT, workers = 2, port = 0, max_mailbox = 16 }, function(srv)
      local silent = connect(srv.port) -- never reads again
      assert.matches("^%* you are", silent:receive("*l"))
      local talker = connect(srv.port)
      assert.matches("^%* you are", talker:receive("*l"))
      local dropped0 = glisten.stats().dropped
      local line = ("z"):rep(2000) .. "\n"
      local t0 = glisten.now()
      for _ = 1, 20000 do assert(talker:send(line)) end -- 40 MB for the silent one
      assert.is_true(H.wait_for(function() return glisten.stats().dropped > dropped0 end, LONG))
      -- It still works for others: a newcomer gets a line sent after it
      -- joined. While the backlog is still being published, its mailbox
      -- of 16 may overflow too (by design), so the line is sent again
      -- until one gets through.
      local late = connect(srv.port)
      assert.matches("^%* you are", late:receive("*l"))
      local heard = false
      glisten.spawn(function()
        while not heard do
          local got = late:receive("*l")
          if not got then break end
          if got == "hello late" then heard = true end
        end
      end)
      assert.is_true(H.wait_for(function()
        if not heard then talker:send("hello late\n") end
        glisten.sleep(0.2)
        return heard
      end, LONG), "the newcomer never heard a line")
      print(("\n  20000 lines of 2 kB sent in %.2f s; dropped for the silent subscriber: %d")
        :format(glisten.now() - t0, glisten.stats().dropped - dropped0))
      silent:close(); talker:close(); late:close()
    end)
  end)

  it("reports 1 of 1 outside a pool", function()
    assert.equal(1, glisten.worker_id())
    assert.equal(1, glisten.worker_count())
  end)
end)

describe("a burst of publishes", function()
  after_each(H.no_leaks)

  -- "sub" subscribes and counts what it gets in shared "got"; "burst N"
  -- publishes N values in one callback and answers "done"; "count"
  -- answers "got" so far.
  local FANOUT = [[
local glisten = require "glisten"
return {
  handler = function(msg, state)
    local sock = state.socket
    local cmd, n = msg:match("^(%S+) ?(%d*)")
    if cmd == "sub" then
      sock:subscribe("t")
      sock:send("subscribed\n")
    elseif cmd == "burst" then
      for i = 1, tonumber(n) do glisten.publish("t", i) end
      sock:send("done\n")
    elseif cmd == "count" then
      sock:send(("got %d\n"):format(glisten.shared:get("got") or 0))
    end
  end,
  with_message = function(v, state) glisten.shared:incr("got", 1, 0) end,
}
]]

  -- Catches a fan-out run inside the publisher's callback: then every copy
  -- is delivered before "done" goes out, and "count" answers them all.
  it("costs the publisher a copy each; the fan-out runs in parts between the loop's polls", function()
    local SUBS, N = 20, 50000
    local p = H.start(H.script(FANOUT))
    local subs = {}
    for i = 1, SUBS do
      subs[i] = connect(p.port)
      assert.equal("subscribed", ask(subs[i], "sub"))
    end
    local pub, other = connect(p.port), connect(p.port)
    assert.equal("done", ask(pub, "burst " .. N))
    local got = tonumber(ask(other, "count"):match("%d+"))
    assert.is_true(got < SUBS * N, ("all %d copies were delivered before the next request was served"):format(got))
    -- and then every copy arrives (each mailbox keeps up: nothing dropped)
    assert.is_true(H.wait_for(function()
      return ask(other, "count") == ("got %d"):format(SUBS * N)
    end, 120))
    for _, s in ipairs(subs) do s:close() end
    pub:close(); other:close()
    assert.equal(0, p:stop(20))
  end)
end)

describe("subscriptions", function()
  after_each(H.no_leaks)

  -- Catches a connection that closes but stays among its topic's
  -- subscribers (each later publish then fails to reach it and counts it
  -- in stats().dropped).
  it("end with their connection: later publishes drop nothing and still reach the others", function()
    H.serving({
      with_init = function(state)
        state.socket:subscribe("news")
        state.socket:subscribe("sport")
        state.socket:send("ready\n")
      end,
      handler = function() end,
      with_message = function(v, state) state.socket:send(v .. "\n") end,
    }, function(srv)
      local a, b = connect(srv.port), connect(srv.port)
      assert.equal("ready", a:receive("*l"))
      assert.equal("ready", b:receive("*l"))
      glisten.publish("news", "first")
      assert.equal("first", a:receive("*l"))
      assert.equal("first", b:receive("*l"))
      b:close()
      assert.is_true(H.wait_for(function() return srv.connections == 1 end, LONG))
      local dropped0 = glisten.stats().dropped
      glisten.publish("news", "second")
      glisten.publish("sport", "third")
      assert.equal("second", a:receive("*l"))
      assert.equal("third", a:receive("*l"))
      assert.equal(dropped0, glisten.stats().dropped)
      a:close()
    end)
  end)
end)
