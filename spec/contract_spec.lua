-- The script contract: handler, with_init, with_close (each reason),
-- with_message, ordering, and error isolation.
local glisten = H.glisten

-- Sends the numbered stream until the first refusal; reads it back and
-- checks it (spec/stream.lua).
local function flood(sock, timeout) return H.flood(sock, nil, timeout) end
local function read_stream(sock, n) return H.read_stream(sock, 0, n) end

describe("the script contract", function()
  after_each(H.no_leaks)

  it("runs with_init once, before handler, with a fresh state per connection", function()
    local log = {}
    H.serving({
      with_init = function(state)
        state.count = 0
        log[#log + 1] = "init " .. state.socket.id
      end,
      handler = function(msg, state)
        state.count = state.count + 1
        log[#log + 1] = ("msg %d %s %d"):format(state.socket.id, msg, state.count)
        state.socket:send(msg)
      end,
    }, function(srv)
      local a, b = H.connect(srv.port), H.connect(srv.port)
      a:send("x"); assert.equal("x", a:receive(1))
      b:send("y"); assert.equal("y", b:receive(1))
      a:send("z"); assert.equal("z", a:receive(1))
      local ida, idb = log[1]:match("init (%d+)"), nil
      assert.truthy(ida)
      -- each connection's first line is its init, and counts are separate
      local seen = {}
      for _, l in ipairs(log) do
        local kind, id = l:match("^(%a+) (%d+)")
        if not seen[id] then assert.equal("init", kind); seen[id] = true end
      end
      assert.equal(("msg %s x 1"):format(ida), log[3])
      assert.equal(("msg %s z 2"):format(ida), log[#log])
      a:close(); b:close()
    end)
  end)

  it("lets go of every state table once its connection is over", function()
    local states = setmetatable({}, { __mode = "k" })
    local closed = 0
    H.serving({
      with_init = function(state) states[state] = true end,
      handler = function(msg, state) state.socket:send(msg) end,
      with_close = function() closed = closed + 1 end,
    }, function(srv)
      for _ = 1, 50 do
        local c = H.connect(srv.port)
        c:send("x"); assert.equal("x", c:receive(1))
        c:close()
      end
      assert.is_true(H.wait_for(function() return closed == 50 end, 5))
      glisten.sleep(0.05)
      collectgarbage(); collectgarbage()
      assert.is_nil(next(states), "a closed connection's state is still reachable")
    end)
  end)

  it("passes binary data through unchanged", function()
    H.serving({ handler = function(msg, state) state.socket:send(msg) end }, function(srv)
      local c = H.connect(srv.port)
      local data = "\0\1\2\255\r\n\0end"
      c:send(data)
      assert.equal(data, c:receive(#data))
      c:close()
    end)
  end)

  describe("with_close", function()
    local function run_close_case(opts, client)
      local calls = {}
      opts.with_close = function(state, reason, detail)
        calls[#calls + 1] = { reason = reason, detail = detail, state = state }
      end
      opts.handler = opts.handler or function(msg, state) state.socket:send(msg) end
      H.serving(opts, function(srv)
        client(srv)
        assert.is_true(H.wait_for(function() return #calls > 0 end, 30))
        glisten.sleep(0.05)
      end)
      assert.equal(1, #calls, "with_close must run exactly once")
      return calls[1]
    end

    it('says "closed" when the peer closes', function()
      local c = run_close_case({}, function(srv)
        local s = H.connect(srv.port)
        s:send("hi"); assert.equal("hi", s:receive(2))
        s:close()
      end)
      assert.equal("closed", c.reason)
      assert.is_nil(c.detail)
    end)

    it('says "local" when the script closes, after flushing what it sent', function()
      local s
      local c = run_close_case({
        handler = function(msg, state)
          state.socket:send("bye " .. msg)
          state.socket:close()
        end,
      }, function(srv)
        s = H.connect(srv.port)
        s:send("now")
        assert.equal("bye now", s:receive("*a"))
        H.assert_closed(s)
        s:close()
      end)
      assert.equal("local", c.reason)
    end)

    it('says "timeout" after idle_timeout seconds without traffic', function()
      local c = run_close_case({ idle_timeout = 1 }, function(srv)
        local s = H.connect(srv.port)
        s:settimeout(30)
        s:send("a"); assert.equal("a", s:receive(1))
        H.assert_closed(s)
        s:close()
      end)
      assert.equal("timeout", c.reason)
    end)

    -- Catches idle_timeout ignoring input: a peer that sends a byte every
    -- 0.1 s for 3 s to a server that never answers outlives an idle_timeout
    -- of 1 s.
    it("idle_timeout: input from the peer is activity", function()
      local got = 0
      local c = run_close_case({
        idle_timeout = 1,
        handler = function(msg) got = got + #msg end,
      }, function(srv)
        local s = H.connect(srv.port)
        for _ = 1, 30 do
          assert.equal(1, s:send("p"))
          glisten.sleep(0.1)
        end
        assert.is_true(H.wait_for(function() return got == 30 end, 30), got .. " of 30 bytes")
        s:close()
      end)
      assert.equal("closed", c.reason)
    end)

    -- Catches idle_timeout ignoring writes ("nothing was read or written"):
    -- a connection streaming a line every 0.1 s for 3 s to a peer that never
    -- sends would be cut with "timeout" after 1 s; once the stream stops and
    -- both sides are silent, idle_timeout ends it.
    it("idle_timeout: output to a silent peer is activity", function()
      local TICKS = 30
      local c = run_close_case({
        idle_timeout = 1,
        handler = function(_, state)
          for i = 1, TICKS do
            state.socket:send(("tick %d\n"):format(i))
            glisten.sleep(0.1)
          end
          state.socket:send("done\n")
        end,
      }, function(srv)
        local s = H.connect(srv.port)
        s:settimeout(30)
        s:send("go")
        for i = 1, TICKS do
          assert.same({ ("tick %d"):format(i) }, { s:receive("*l") })
        end
        assert.equal("done", s:receive("*l"))
        H.assert_closed(s)
        s:close()
      end)
      assert.equal("timeout", c.reason)
    end)

    it('says "shutdown" when the server closes', function()
      local c = run_close_case({}, function(srv)
        local s = H.connect(srv.port)
        s:send("a"); assert.equal("a", s:receive(1))
        srv:close()
        H.assert_closed(s)
        s:close()
      end)
      assert.equal("shutdown", c.reason)
    end)

    it("gives open connections the grace period of server:close(grace)", function()
      local c = run_close_case({}, function(srv)
        local s = H.connect(srv.port)
        s:send("a"); assert.equal("a", s:receive(1))
        srv:close(2)
        -- no new connections...
        local refused = glisten.connect("127.0.0.1", srv.port, 1)
        assert.is_nil(refused)
        -- ...but the open one still works during the grace period
        s:send("b"); assert.equal("b", s:receive(1))
        s:settimeout(30)
        H.assert_closed(s)
        s:close()
      end)
      assert.equal("shutdown", c.reason)
    end)

    -- Serves with a handler that is given the server (to close it from
    -- inside) and a with_close that says goodbye; client(port) talks to it.
    -- Returns the reasons with_close saw.
    local function self_stop_case(handler, client, extra)
      local srv_ref, reasons = nil, {}
      local opts = extra or {}
      opts.handler = function(msg, state) handler(srv_ref, msg, state) end
      opts.with_close = function(state, reason)
        reasons[#reasons + 1] = reason
        state.socket:send("bye " .. reason .. "\n")
      end
      H.serving(opts, function(srv)
        srv_ref = srv
        local s = H.connect(srv.port)
        s:settimeout(10)
        client(s)
        assert.equal("bye shutdown", s:receive("*l"))
        H.assert_closed(s, "*l")
        s:close()
      end)
      return reasons
    end

    it("lets a callback that closes its own server say goodbye from with_close", function()
      local reasons = self_stop_case(function(srv, msg, state)
        srv:close()
        state.socket:send("closing " .. msg .. "\n") -- still open after close()
      end, function(s)
        s:send("now")
        assert.equal("closing now", s:receive("*l"))
      end)
      assert.same({ "shutdown" }, reasons)
    end)

    it("cuts short, after 5 s, a callback that closes its own server and then waits", function()
      local reasons = self_stop_case(function(srv, _, state)
        srv:close()
        local ok, err = glisten.post(state.socket.id, "late")
        state.socket:send(("post %s %s\n"):format(tostring(ok), tostring(err)))
        state.socket:receive("*l") -- the peer never sends one
        state.socket:send("never\n")
      end, function(s)
        s:send("now")
        assert.equal("post nil no such connection", s:receive("*l"))
      end, { with_message = function() error("a stopping connection got a message") end })
      assert.same({ "shutdown" }, reasons)
    end)

    it("cuts short a callback that sleeps through the shutdown", function()
      local c = run_close_case({
        handler = function(msg, state)
          state.socket:send("sleeping\n")
          glisten.sleep(30)
          state.socket:send("never\n")
        end,
      }, function(srv)
        local s = H.connect(srv.port)
        s:send("go")
        assert.equal("sleeping", s:receive("*l"))
        srv:close(0.1)
        H.assert_closed(s, "*l")
        s:close()
      end)
      assert.equal("shutdown", c.reason)
    end)

    it('says "error" with the message and a traceback when handler raises', function()
      local c = run_close_case({
        handler = function(msg, state)
          if msg == "boom" then error("handler exploded") end
          state.socket:send(msg)
        end,
      }, function(srv)
        local s = H.connect(srv.port)
        s:send("boom")
        H.assert_closed(s)
        s:close()
      end)
      assert.equal("error", c.reason)
      assert.matches("handler exploded", c.detail)
      assert.matches("stack traceback", c.detail)
    end)

    -- Catches a callback error dropping queued output: the handler floods a
    -- peer that does not read until a send is refused, so output is queued
    -- for certain, then raises. Every byte it sent must still arrive, then
    -- the close.
    it('says "error" after flushing what the failed callback had queued', function()
      local out0 = glisten.stats().bytes_out
      local result
      local c = run_close_case({
        handler = function(msg, state)
          local taken, err = flood(state.socket, 0.2)
          result = { taken = taken, err = err,
                     queued = taken - (glisten.stats().bytes_out - out0 - #msg) }
          error("gave up after " .. taken .. " bytes")
        end,
      }, function(srv)
        local s = H.connect(srv.port)
        s:send("go")
        assert.is_true(H.wait_for(function() return result end, 60), "no send was ever refused")
        assert.equal("timeout", result.err)
        assert.is_true(result.queued > 0, "nothing was queued when the handler raised")
        read_stream(s, result.taken)
        H.assert_closed(s)
        s:close()
      end)
      assert.equal("error", c.reason)
      assert.matches("gave up after", c.detail)
    end)

    it("survives an error object whose __tostring itself raises", function()
      local c = run_close_case({
        handler = function()
          error(setmetatable({}, { __tostring = function() error("boom in __tostring") end }))
        end,
      }, function(srv)
        local s = H.connect(srv.port)
        s:send("x")
        H.assert_closed(s) -- before the fix, the whole process aborted here
        s:close()
      end)
      assert.equal("error", c.reason)
      assert.matches("__tostring failed", c.detail)
    end)

    it('says "error" when with_init raises, and never calls handler', function()
      local handled = false
      local c = run_close_case({
        with_init = function() error({ code = 42 }) end,
        handler = function() handled = true end,
      }, function(srv)
        local s = H.connect(srv.port)
        s:send("x")
        H.assert_closed(s)
        s:close()
      end)
      assert.equal("error", c.reason)
      assert.matches("error object is a table", c.detail)
      assert.is_false(handled)
    end)

    -- Catches with_close(state, "closed") running on a socket already
    -- closed: a peer that half-closes (nc -N sends, shuts down its side and
    -- reads on) gets the answer to what it sent, then what with_close writes.
    it('runs with_close(state, "closed") with the socket still open to a half-closed peer', function()
      local p = H.start(H.script([[
        function handler(msg, state) state.socket:send("answer " .. msg) end
        function with_close(state, reason)
          local n, err = state.socket:send("bye " .. reason .. "\n")
          io.stderr:write("with_close ", reason, " sent ", tostring(n or err), "\n")
        end
      ]]))
      -- nc runs without the sanitizer runtimes a sanitized run preloads
      local out = H.tmpdir .. "/half-close"
      os.execute(("printf 'hello\\n' | env -u LD_PRELOAD timeout -s KILL 30 nc -N 127.0.0.1 %d >%s.out 2>%s.err")
        :format(p.port, out, out))
      assert.equal("answer hello\nbye closed\n", H.readfile(out .. ".out"),
        "nc: " .. tostring(H.readfile(out .. ".err")))
      assert.is_true(H.wait_for(function() return p:stderr():find("with_close closed") end, 30))
      assert.matches("with_close closed sent 11\n", p:stderr())
      assert.equal(0, p:stop())
    end)

    -- Catches a shutdown that runs again a with_close it cut short: the
    -- peer closes, with_close waits, the server closes; with_close is ended
    -- and never runs a second time.
    it("runs with_close once when a shutdown cuts it short", function()
      local calls = {}
      H.serving({
        handler = function(msg, state) state.socket:send(msg) end,
        with_close = function(_, reason)
          calls[#calls + 1] = reason
          if #calls == 1 then glisten.sleep(60) end
        end,
      }, function(srv)
        local s = H.connect(srv.port)
        s:send("x"); assert.equal("x", s:receive(1))
        s:close()
        assert.is_true(H.wait_for(function() return #calls == 1 end, 30))
        srv:close()
        assert.is_true(H.wait_for(function() return srv.connections == 0 end, 30))
        glisten.sleep(0.05)
      end)
      assert.same({ "closed" }, calls)
    end)

    it("passes the same state table the other callbacks saw", function()
      local seen
      local c = run_close_case({
        with_init = function(state) state.mark = "kept"; seen = state end,
      }, function(srv)
        local s = H.connect(srv.port)
        s:close()
      end)
      assert.equal(seen, c.state)
      assert.equal("kept", c.state.mark)
    end)
  end)

  it("holds no coroutine for an idle connection", function()
    local n = 1500 -- enough that the few kept ready (64) and pooled (64) count little
    H.serving({ handler = function(msg, state) state.socket:send(msg) end }, function(srv)
      collectgarbage(); collectgarbage()
      local before = collectgarbage("count")
      local cs = {}
      for i = 1, n do
        cs[i] = H.connect(srv.port)
        cs[i]:send("x"); assert.equal("x", cs[i]:receive(1))
      end
      collectgarbage(); collectgarbage()
      local per = (collectgarbage("count") - before) * 1024 / n
      -- both ends live in this Lua state: a client socket, and the served
      -- socket and state table; a suspended coroutine alone is ~1 KiB more
      assert.is_true(per < 1100, ("%.0f bytes of Lua memory per idle connection"):format(per))
      -- and every idle connection still answers, in order
      for i = 1, n do cs[i]:send(tostring(i) .. ";") end
      for i = 1, n do assert.equal(tostring(i) .. ";", cs[i]:receive(#tostring(i) + 1)) end
      for i = 1, n do cs[i]:close() end
    end)
  end)

  it("isolates a failing connection: others and the server carry on", function()
    local errors0 = glisten.stats().errors
    H.serving({
      handler = function(msg, state)
        if msg:find("die") then error("bad input") end
        state.socket:send(msg)
      end,
      with_close = function(state, reason)
        if reason == "error" then error("with_close also fails") end
      end,
    }, function(srv)
      local good = H.connect(srv.port)
      good:send("1"); assert.equal("1", good:receive(1))
      for _ = 1, 3 do
        local bad = H.connect(srv.port)
        bad:send("die")
        H.assert_closed(bad)
        bad:close()
      end
      good:send("2"); assert.equal("2", good:receive(1))
      local late = H.connect(srv.port)
      late:send("3"); assert.equal("3", late:receive(1))
      late:close(); good:close()
    end)
    -- three handler errors and three with_close errors were counted
    assert.is_true(glisten.stats().errors - errors0 >= 6)
  end)

  it("runs one connection's callbacks one at a time, in order", function()
    local events = {}
    local busy = false
    H.serving({
      handler = function(msg, state)
        assert(not busy, "callbacks overlapped")
        busy = true
        events[#events + 1] = msg
        glisten.sleep(0.02) -- more input arrives meanwhile
        busy = false
        state.socket:send(msg)
      end,
    }, function(srv)
      local c = H.connect(srv.port)
      local sent = {}
      for i = 1, 5 do
        sent[#sent + 1] = "m" .. i .. ";"
        c:send("m" .. i .. ";")
        glisten.sleep(0.005)
      end
      local all = table.concat(sent)
      assert.equal(all, c:receive(#all))
      assert.equal(all, table.concat(events))
      c:close()
    end)
  end)

  describe("with_message", function()
    it("runs posted values in the connection's coroutine, in order", function()
      local got = {}
      local id
      H.serving({
        with_init = function(state) id = state.socket.id end,
        handler = function(msg, state) state.socket:send(msg) end,
        with_message = function(value, state)
          got[#got + 1] = value
          state.socket:send(("%s;"):format(type(value) == "table" and value.n or value))
        end,
      }, function(srv)
        local c = H.connect(srv.port)
        c:send("x"); assert.equal("x", c:receive(1))
        local t = { n = 3 }
        assert.is_true(glisten.post(id, 1))
        assert.is_true(glisten.post(id, "two"))
        assert.is_true(glisten.post(id, t))
        assert.equal("1;two;3;", c:receive(8))
        -- a copy, as it would be on another worker
        assert.same(t, got[3])
        assert.are_not.equal(t, got[3])
        c:close()
      end)
    end)

    it("refuses values that cannot cross workers, with a clear error", function()
      local id
      H.serving({
        with_init = function(state) id = state.socket.id end,
        handler = function(msg, state) state.socket:send(msg) end,
        with_message = function(v, state) state.socket:send(tostring(v)) end,
      }, function(srv)
        local c = H.connect(srv.port)
        c:send("x"); assert.equal("x", c:receive(1))
        assert.has_error(function() glisten.post(id, print) end,
          "cannot send a function value (only nil, booleans, numbers, strings and tables of those cross workers)")
        local cyc = {}; cyc.self = cyc
        assert.has_error(function() glisten.post(id, { a = { cyc } }) end,
          "cannot send a table that contains itself (a cycle)")
        assert.has_error(function() glisten.post(id, { co = coroutine.create(print) }) end)
        -- the same table twice is not a cycle
        local shared = { 1 }
        assert.is_true(glisten.post(id, { shared, shared }))
        assert.matches("^table", c:receive())
        c:close()
      end)
    end)

    it("refuses a connection whose script has no with_message", function()
      local id
      H.serving({
        with_init = function(state) id = state.socket.id end,
        handler = function(msg, state) state.socket:send(msg) end,
      }, function(srv)
        local c = H.connect(srv.port)
        c:send("x"); assert.equal("x", c:receive(1))
        assert.same({ nil, "connection has no with_message" }, { glisten.post(id, "v") })
        c:send("y"); assert.equal("y", c:receive(1)) -- unharmed
        c:close()
      end)
    end)

    it("refuses unknown connections and full mailboxes without waiting", function()
      local id
      local busy, release = false, false
      H.serving({
        max_mailbox = 2,
        with_init = function(state) id = state.socket.id end,
        handler = function(msg, state)
          busy = true -- and stays so until the test has posted: posts queue up
          assert(H.wait_for(function() return release end, 30))
          state.socket:send(msg)
        end,
        with_message = function(v, state) state.socket:send(v) end,
      }, function(srv)
        assert.same({ nil, "no such connection" }, { glisten.post(999999, "x") })
        local c = H.connect(srv.port)
        c:send("a")
        assert.is_true(H.wait_for(function() return busy end, 30))
        assert.is_true(glisten.post(id, "b"))
        assert.is_true(glisten.post(id, "c"))
        assert.same({ nil, "mailbox full" }, { glisten.post(id, "d") })
        release = true
        assert.equal("abc", c:receive(3))
        c:close()
        H.wait_for(function() return glisten.post(id, "e") == nil end)
        assert.same({ nil, "no such connection" }, { glisten.post(id, "e") })
      end)
    end)
  end)
end)
