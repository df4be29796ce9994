-- The example scripts under the glisten-lua command, talked to by real
-- peers: netcat (nc -N, netcat-openbsd) and glisten client sockets.
local glisten = H.glisten

-- H.start remembers every process; H.no_leaks (after each test) ends any
-- a failed test left running.
local start, cleanup = H.start, H.no_leaks
local function stop(p) return p:stop() end

local nfile = 0
-- A new file in the spec's temporary folder holding data; returns its path.
local function tmpfile(data)
  nfile = nfile + 1
  return H.writefile(("%s/scripts_spec%d"):format(H.tmpdir, nfile), data or "")
end

-- Runs `nc -N 127.0.0.1 port` with input from a file holding `input`, at
-- most 60 s (a bound on a hang, not a speed). Returns what nc printed and
-- its exit status.
local function nc(port, input)
  local inp, out = tmpfile(input), tmpfile()
  local ok, _, code = os.execute(("timeout 60 nc -N 127.0.0.1 %d <%s >%s 2>&1"):format(
    port, H.quote(inp), H.quote(out)))
  return H.readfile(out), ok and 0 or code
end

local random_bytes = H.random_bytes

-- Every wait here only bounds a hang; a busy machine must never reach it.
local LONG = 60

-- A client whose every call waits at most LONG seconds.
local function connect(port) return H.connect(port, nil, LONG) end

describe("scripts/echo.lua", function()
  after_each(cleanup)

  it("echoes what nc sends, text and binary, then closes when nc is done", function()
    local p = start("scripts/echo.lua")
    local text = "hello\nworld\r\nno newline at the end"
    local out, rc = nc(p.port, text)
    assert.equal(0, rc)
    assert.equal(text, out)
    local bin = "\0\1\2\255" .. random_bytes(256 * 1024)
    out, rc = nc(p.port, bin)
    assert.equal(0, rc)
    assert.equal(#bin, #out)
    assert.is_true(bin == out, "the binary echo differs")
    assert.equal(0, stop(p))
  end)

  it("serves several nc clients at once", function()
    local p = start("scripts/echo.lua")
    local inputs, outputs = {}, {}
    local cmd = {}
    for i = 1, 5 do
      inputs[i] = ("client %d\n"):format(i):rep(2000) -- about 20 kB each
      outputs[i] = tmpfile()
      cmd[#cmd + 1] = ("timeout 60 nc -N 127.0.0.1 %d <%s >%s &"):format(
        p.port, H.quote(tmpfile(inputs[i])), H.quote(outputs[i]))
    end
    cmd[#cmd + 1] = "wait"
    assert.is_true(os.execute(table.concat(cmd, " ")))
    for i = 1, 5 do
      assert.equal(inputs[i], H.readfile(outputs[i]))
    end
    assert.equal(0, stop(p))
  end)

  it("echoes to glisten clients, small and large, each its own", function()
    local p = start("scripts/echo.lua")
    local a, b = connect(p.port), connect(p.port)
    a:send("from a"); b:send("from b")
    assert.equal("from b", b:receive(6))
    assert.equal("from a", a:receive(6))
    -- 4 MiB sent while it is read back: the echo keeps up, nothing is lost
    local big = random_bytes(4 * 1024 * 1024)
    glisten.spawn(function()
      for i = 1, 64 do a:send(big, (i - 1) * 65536 + 1, i * 65536) end
    end)
    local back = a:receive(#big)
    assert.equal(#big, #(back or ""))
    assert.is_true(back == big, "the large echo differs")
    a:close(); b:close()
    assert.equal(0, stop(p))
  end)
end)

describe("scripts/chat.lua", function()
  after_each(cleanup)

  -- Connects to the chat and reads its greeting; returns the socket and the
  -- number of others the greeting counts.
  local function join(port)
    local c = connect(port)
    local greeting = assert(c:receive("*l"))
    local id, others = greeting:match("^%* you are (%d+); (%d+) other%(s%) here$")
    assert.truthy(id, "greeting: " .. greeting)
    return c, tonumber(others)
  end

  -- Reads n lines from c, sorted.
  local function lines(c, n)
    local got = {}
    for i = 1, n do
      local l, err = c:receive("*l")
      if not l then error(("line %d of %d: %s"):format(i, n, err), 2) end
      got[#got + 1] = l
    end
    table.sort(got)
    return got
  end

  -- Asserts that nothing more arrives on any of the sockets: each sends a
  -- mark, and the next lines every other one reads are exactly those
  -- marks. One sender's lines keep their order, so anything more a sender's
  -- line brought (a duplicate, a line sent back to its sender) would come
  -- before the mark. No quiet period is timed, so a slow machine can
  -- neither fail this nor let a stray line slip past it.
  local nmark = 0
  local function quiet(socks)
    nmark = nmark + 1
    local list = {}
    for i, c in pairs(socks) do list[#list + 1] = { i = i, c = c } end
    for _, e in ipairs(list) do e.c:send(("mark %d from %d\n"):format(nmark, e.i)) end
    for _, e in ipairs(list) do
      local want = {}
      for _, o in ipairs(list) do
        if o.i ~= e.i then want[#want + 1] = ("mark %d from %d"):format(nmark, o.i) end
      end
      table.sort(want)
      assert.same(want, lines(e.c, #want))
    end
  end

  it("sends each line to every other client once, and not to the sender", function()
    local p = start("scripts/chat.lua")
    local cs = {}
    for i = 1, 5 do
      local others
      cs[i], others = join(p.port)
      assert.equal(i - 1, others)
    end
    for i = 1, 5 do cs[i]:send(("line from %d\n"):format(i)) end
    for i = 1, 5 do
      local want = {}
      for j = 1, 5 do
        if j ~= i then want[#want + 1] = ("line from %d"):format(j) end
      end
      assert.same(want, lines(cs[i], 4))
    end
    quiet(cs)

    -- a line that arrives in pieces, and one ending in \r\n, arrive whole
    cs[1]:send("in pie")
    glisten.sleep(0.05)
    cs[1]:send("ces\r\n")
    for i = 2, 5 do assert.equal("in pieces", cs[i]:receive("*l")) end
    quiet(cs)

    -- one leaves; the chat forgets it and the others carry on
    cs[5]:close()
    cs[5] = nil
    local newcomer
    assert.is_true(H.wait_for(function()
      local c, others = join(p.port)
      if others == 4 then newcomer = c; return true end
      c:close()
      glisten.sleep(0.05)
    end, LONG))
    cs[5] = newcomer
    for i = 1, 5 do cs[i]:send(("again from %d\n"):format(i)) end
    for i = 1, 5 do
      local want = {}
      for j = 1, 5 do
        if j ~= i then want[#want + 1] = ("again from %d"):format(j) end
      end
      assert.same(want, lines(cs[i], 4))
    end
    quiet(cs)
    for i = 1, 5 do cs[i]:close() end
    assert.equal(0, stop(p))
    assert.not_matches("error", p:stderr())
  end)

  it("delivers all 190 lines to each of 20 clients sending 10 lines each at once", function()
    local p = start("scripts/chat.lua")
    local N, L = 20, 10
    local cs = {}
    for i = 1, N do
      local others
      cs[i], others = join(p.port)
      assert.equal(i - 1, others)
    end
    local got, done = {}, 0
    for i = 1, N do
      got[i] = {}
      glisten.spawn(function() -- the reader
        for _ = 1, (N - 1) * L do
          local l, err = cs[i]:receive("*l", LONG)
          if not l then got[i].err = err; break end
          got[i][#got[i] + 1] = l
        end
        done = done + 1
      end)
    end
    for i = 1, N do
      glisten.spawn(function() -- the writer: one line per send
        for k = 1, L do
          cs[i]:send(("c%02d l%02d\n"):format(i, k))
          if k % 3 == 0 then glisten.sleep(0) end
        end
      end)
    end
    assert.is_true(H.wait_for(function() return done == N end, 2 * LONG))
    for i = 1, N do
      assert.is_nil(got[i].err)
      assert.equal((N - 1) * L, #got[i])
      -- each sender's lines arrive in the order it sent them
      local last = {}
      for _, l in ipairs(got[i]) do
        local from, k = l:match("^c(%d+) l(%d+)$")
        from, k = tonumber(from), tonumber(k)
        assert.are_not.equal(i, from, "a client got its own line")
        assert.equal((last[from] or 0) + 1, k, ("client %d: %s out of order"):format(i, l))
        last[from] = k
      end
      for j = 1, N do
        if j ~= i then assert.equal(L, last[j]) end
      end
    end
    quiet(cs)
    for i = 1, N do cs[i]:close() end
    assert.equal(0, stop(p))
  end)

  it("ends the connection of a client whose line is longer than max_line, and no other", function()
    local p = start("scripts/chat.lua")
    local long, a = join(p.port), join(p.port)
    long:send(("y"):rep(4097) .. "\n")
    H.assert_closed(long)
    long:close()
    local b = join(p.port)
    a:send("still here\n")
    assert.equal("still here", b:receive("*l", LONG))
    -- a line of exactly max_line (4096) bytes goes through
    b:send(("z"):rep(4096) .. "\n")
    assert.equal(("z"):rep(4096), a:receive("*l", LONG))
    a:close(); b:close()
    assert.equal(0, stop(p))
  end)

  -- Catches empty lines published (the first line the others read would be
  -- empty) and a rate kept by dropping lines instead of slowing the sender.
  it("ignores empty lines, and slows a flooding client down without losing a line", function()
    local p = start("scripts/chat.lua")
    local flooder, a, b = join(p.port), join(p.port), join(p.port)
    flooder:send(("\n"):rep(1024 * 1024))
    flooder:send("after the blank ones\n")
    for _, c in ipairs{ a, b } do
      assert.equal("after the blank ones", c:receive("*l", LONG))
    end
    -- 300 lines at once, past the burst of 100: all arrive, in order
    local t = {}
    for k = 1, 300 do t[k] = ("flood %03d\n"):format(k) end
    flooder:send(table.concat(t))
    for _, c in ipairs{ a, b } do
      for k = 1, 300 do
        assert.equal(("flood %03d"):format(k), c:receive("*l", LONG))
      end
    end
    quiet{ flooder, a, b }
    flooder:close(); a:close(); b:close()
    assert.equal(0, stop(p))
  end)
end)

describe("scripts/handshake.lua", function()
  after_each(cleanup)

  local function frame(s) return string.pack(">s4", s) end
  -- Reads one frame from c: its payload.
  local function read_frame(c)
    local len = assert(c:receive(4))
    return assert(c:receive((string.unpack(">I4", len))))
  end

  it("welcomes HELLO alice, then answers each frame with a frame prefixed with her name", function()
    local p = start("scripts/handshake.lua")
    local c = connect(p.port)
    -- frames right behind the greeting, in the same write: cut as frames
    c:send("HELLO alice\n" .. frame("hi there") .. frame("line\nwith\0binary\r\n"))
    assert.equal("WELCOME alice", c:receive("*l"))
    assert.equal("alice: hi there", read_frame(c))
    assert.equal("alice: line\nwith\0binary\r\n", read_frame(c))
    -- an empty frame, and a frame cut into pieces, header included
    c:send(frame(""))
    assert.equal("alice: ", read_frame(c))
    local f = frame(("x"):rep(100000))
    for i = 1, #f, 7919 do
      c:send(f:sub(i, i + 7918))
      if i == 1 then glisten.sleep(0.05) end
    end
    assert.equal("alice: " .. ("x"):rep(100000), read_frame(c))
    c:close()
    -- a hello ending in \r\n, and a hello that arrives in pieces
    c = connect(p.port)
    c:send("HEL")
    glisten.sleep(0.05)
    c:send("LO bob\r\n")
    assert.equal("WELCOME bob", c:receive("*l"))
    c:send(frame("x"))
    assert.equal("bob: x", read_frame(c))
    c:close()
    assert.equal(0, stop(p))
  end)

  it("ends a connection whose frame says more than max_receive, and serves the others", function()
    local p = start("scripts/handshake.lua")
    local c = connect(p.port)
    c:send("HELLO dave\n" .. string.pack(">I4", 1024 * 1024 + 1))
    assert.equal("WELCOME dave", c:receive("*l"))
    H.assert_closed(c)
    c:close()
    c = connect(p.port)
    c:send("HELLO erin\n" .. frame("ok"))
    assert.equal("WELCOME erin", c:receive("*l"))
    assert.equal("erin: ok", read_frame(c))
    c:close()
    assert.equal(0, stop(p))
  end)

  it("answers a bad hello with ERR and closes the connection", function()
    local p = start("scripts/handshake.lua")
    for _, hello in ipairs{ "HI bob\n", "HELLO\n", "HELLO two words\n", "hello alice\n", "\0\255\n" } do
      local c = connect(p.port)
      c:send(hello .. "then this\n")
      assert.equal("ERR expected: HELLO <name>", c:receive("*l"), hello)
      H.assert_closed(c)
      c:close()
    end
    -- still serving
    local c = connect(p.port)
    c:send("HELLO carol\n")
    assert.equal("WELCOME carol", c:receive("*l"))
    c:close()
    assert.equal(0, stop(p))
  end)

  it("says goodbye in with_close to a peer that closed in the middle of a frame", function()
    local p = start(H.script([[
      return { packet = 4,
        handler = function(m, st) st.socket:send("[" .. m .. "]") end,
        with_close = function(st, r, d) st.socket:send(r .. "|" .. tostring(d) .. "\n") end }
    ]]))
    local out = H.peer(("nc -N 127.0.0.1 %d"):format(p.port), "\0\0\0\2hi\0\0\0\5ab", LONG)
    assert.equal("[hi]closed|peer closed in the middle of a packet\n", out)
    out = H.peer(("nc -N 127.0.0.1 %d"):format(p.port), "\0\0\0\2hi", LONG)
    assert.equal("[hi]closed|nil\n", out)
    assert.equal(0, stop(p))
  end)

  it("works with nc as its comment shows", function()
    local p = start("scripts/handshake.lua")
    local out, rc = nc(p.port, "HELLO alice\n\0\0\0\2hi")
    assert.equal(0, rc)
    assert.equal("WELCOME alice\n" .. frame("alice: hi"), out)
    out, rc = nc(p.port, "bad\nhi there\n")
    assert.equal(0, rc)
    assert.equal("ERR expected: HELLO <name>\n", out)
    assert.equal(0, stop(p))
  end)
end)
