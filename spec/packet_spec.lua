-- Framing, written from the reference alone: the packet option ("line",
-- 1, 2, 4) in each place it is taken, sock:setpacket mid-connection,
-- receive() under each mode, receive_until, and send with pieces. Real
-- loopback sockets: servers made with glisten.serve in this process, and
-- the command for the script's table and --packet.
local glisten = H.glisten

-- Every wait here only bounds a hang; a busy machine must never reach it.
local LONG = 60

local pack = string.pack

-- Sends each piece in a write of its own and, before the next, waits until
-- this process has read it (the servers of these specs live here, so
-- stats().bytes_in grows by what they read): the server sees the input cut
-- exactly there, whatever the machine's load, with no sleep.
local function feed(c, pieces)
  for _, p in ipairs(pieces) do
    local in0 = glisten.stats().bytes_in
    assert.equal(#p, c:send(p))
    local deadline = glisten.now() + LONG
    while glisten.stats().bytes_in < in0 + #p do
      assert(glisten.now() < deadline,
        "the server stopped reading before the piece " .. ("%q"):format(p) .. " was in")
      glisten.sleep(0.001)
    end
  end
end

-- s cut into one-byte pieces.
local function bytes(s)
  local t = {}
  for i = 1, #s do t[i] = s:sub(i, i) end
  return t
end

-- Serves opts (a glisten.serve table; handler and with_close are added)
-- for the length of fn(port, accepted). Each connection's record, in the
-- order they open: { msgs = what handler got, one entry a call, closed,
-- reason, detail, state }. A with_init in opts still runs, after the record
-- is made.
local function recording(opts, fn)
  local accepted = {}
  local init = opts.with_init
  opts.with_init = function(state)
    state.rec = { msgs = {}, state = state }
    accepted[#accepted + 1] = state.rec
    if init then init(state) end
  end
  opts.handler = opts.handler or function(msg, state)
    local m = state.rec.msgs
    m[#m + 1] = msg
  end
  opts.with_close = function(state, reason, detail)
    state.rec.reason, state.rec.detail, state.rec.closed = reason, detail, true
  end
  H.serving(opts, function(srv) fn(srv.port, accepted) end)
end

-- Connects to port and returns the client and its connection's record.
local function open(port, accepted)
  local n = #accepted
  local c = H.connect(port, nil, LONG)
  assert(H.wait_for(function() return #accepted > n end, LONG), "with_init did not run")
  return c, accepted[n + 1]
end

local function wait_msgs(rec, n)
  assert(H.wait_for(function() return #rec.msgs >= n end, LONG),
    ("%d of %d messages reached handler"):format(#rec.msgs, n))
end

local function wait_closed(rec)
  assert(H.wait_for(function() return rec.closed end, LONG), "with_close did not run")
end

-- A loopback pair made with listen (options lopts) and connect (options
-- copts, a table: connect's options): fn(accepted, client).
local function pair(lopts, copts, fn)
  local l = assert(glisten.listen(0, lopts))
  copts = copts or {}
  copts.timeout = copts.timeout or 5
  local c = assert(glisten.connect("127.0.0.1", l.port, copts))
  local s = assert(l:accept(5))
  l:close()
  s:settimeout(LONG); c:settimeout(LONG)
  local ok, err = pcall(fn, s, c)
  s:close(); c:close()
  if not ok then error(err, 0) end
end

-- Waits until this process has read n more bytes than at in0.
local function read_in(in0, n)
  assert(H.wait_for(function() return glisten.stats().bytes_in >= in0 + n end, LONG),
    "the bytes never arrived")
end

-- A fixed-seed generator of cuts, so a failing cut is the same every run.
local function cuts(s, seed)
  local x = seed
  local t, i = {}, 1
  while i <= #s do
    x = (x * 1103515245 + 12345) % 2147483648
    local n = 1 + x % 5
    t[#t + 1] = s:sub(i, i + n - 1)
    i = i + n
  end
  return t
end

describe('packet = "line"', function()
  after_each(H.no_leaks)

  local INPUT = "one\r\ntwo\n\n\r\nbin\0ary\rmid\r\nend\r\r\nlast\n"
  local LINES = { "one", "two", "", "", "bin\0ary\rmid", "end\r", "last" }

  it("calls handler once per line, without its end of line, however the input is cut", function()
    local ways = {
      { name = "one write", pieces = { INPUT } },
      { name = "a byte a write", pieces = bytes(INPUT) },
      { name = "random cuts 1", pieces = cuts(INPUT, 1) },
      { name = "random cuts 2", pieces = cuts(INPUT, 7) },
    }
    -- and cut in two at every byte
    for i = 1, #INPUT - 1 do
      ways[#ways + 1] = { name = "cut at " .. i, pieces = { INPUT:sub(1, i), INPUT:sub(i + 1) } }
    end
    recording({ packet = "line" }, function(port, accepted)
      for _, way in ipairs(ways) do
        local c, rec = open(port, accepted)
        feed(c, way.pieces)
        wait_msgs(rec, #LINES)
        c:close()
        wait_closed(rec)
        assert.same(LINES, rec.msgs, way.name)
        assert.equal("closed", rec.reason, way.name)
        assert.is_nil(rec.detail, way.name)
      end
    end)
  end)

  it("a \\r and its \\n in different writes end one line", function()
    recording({ packet = "line" }, function(port, accepted)
      local c, rec = open(port, accepted)
      feed(c, { "ab\r", "\ncd", "\r", "\n", "\r", "\r\n", "x\r", "y\n" })
      wait_msgs(rec, 4)
      c:close()
      wait_closed(rec)
      assert.same({ "ab", "cd", "\r", "x\ry" }, rec.msgs)
    end)
  end)

  it("many lines in one write: every one, in order", function()
    local N = 5000
    local t, want = {}, {}
    for i = 1, N do
      want[i] = ("line %d %s"):format(i, ("x"):rep(i % 17))
      t[i] = want[i] .. (i % 3 == 0 and "\r\n" or "\n")
    end
    recording({ packet = "line" }, function(port, accepted)
      local c, rec = open(port, accepted)
      c:send(table.concat(t))
      wait_msgs(rec, N)
      c:close()
      wait_closed(rec)
      assert.equal(N, #rec.msgs)
      assert.same(want, rec.msgs)
    end)
  end)

  it("a last line without an end of line reaches handler when the peer closes", function()
    recording({ packet = "line" }, function(port, accepted)
      local c, rec = open(port, accepted)
      feed(c, { "first\nla", "st" })
      wait_msgs(rec, 1)
      c:close()
      wait_closed(rec)
      assert.same({ "first", "last" }, rec.msgs)
      assert.equal("closed", rec.reason)
      assert.is_nil(rec.detail)
    end)
  end)

  it("passes a line of exactly max_line bytes, with \\n, \\r\\n and a \\r\\n cut in two", function()
    local L = ("m"):rep(16)
    recording({ packet = "line", max_line = 16 }, function(port, accepted)
      local c, rec = open(port, accepted)
      feed(c, { L .. "\n", L .. "\r\n", L .. "\r", "\n", L, "\n", L:sub(1, 8), L:sub(9) .. "\r", "\n" })
      wait_msgs(rec, 5)
      c:close()
      wait_closed(rec)
      assert.same({ L, L, L, L, L }, rec.msgs)
      assert.equal("closed", rec.reason)
    end)
  end)

  it("ends the connection on a line of max_line + 1 bytes, whole or still coming", function()
    local cases = {
      { name = "with \\n", pieces = { "ok\n", ("x"):rep(17) .. "\nnever\n" } },
      { name = "with \\r\\n", pieces = { "ok\n", ("x"):rep(17) .. "\r\n" } },
      { name = "no end of line yet", pieces = { "ok\n", ("x"):rep(17) } },
      { name = "a byte a write", pieces = { "ok\n", table.unpack(bytes(("x"):rep(17))) } },
    }
    recording({ packet = "line", max_line = 16 }, function(port, accepted)
      for _, case in ipairs(cases) do
        local c, rec = open(port, accepted)
        for _, p in ipairs(case.pieces) do c:send(p) end
        wait_closed(rec) -- the client never closes: the server must
        assert.equal("error", rec.reason, case.name)
        assert.equal("line longer than max_line", rec.detail, case.name)
        assert.same({ "ok" }, rec.msgs, case.name)
        H.assert_closed(c)
        c:close()
      end
    end)
  end)

  it("uses max_line's default, 64 KiB", function()
    recording({ packet = "line" }, function(port, accepted)
      local c, rec = open(port, accepted)
      c:send(("a"):rep(65536) .. "\n")
      wait_msgs(rec, 1)
      assert.equal(65536, #rec.msgs[1])
      c:send(("b"):rep(65537) .. "\n")
      wait_closed(rec)
      assert.same({ "error", "line longer than max_line" }, { rec.reason, rec.detail })
      assert.equal(1, #rec.msgs)
      c:close()
    end)
  end)

  it("keeps every byte value in a line", function()
    local all = {}
    for b = 0, 255 do
      if b ~= 10 then all[#all + 1] = string.char(b) end
    end
    all = table.concat(all)
    recording({ packet = "line" }, function(port, accepted)
      local c, rec = open(port, accepted)
      feed(c, { all .. "\n", "\0\n", "\r\0\r\n", "\0" })
      wait_msgs(rec, 3)
      c:close()
      wait_closed(rec)
      assert.same({ all, "\0", "\r\0", "\0" }, rec.msgs)
    end)
  end)
end)

describe("packet = 1, 2, 4", function()
  after_each(H.no_leaks)

  local function frame(n, payload) return pack(">s" .. n, payload) end

  for _, case in ipairs{
    { n = 1, sizes = { 0, 1, 2, 254, 255 } },
    { n = 2, sizes = { 0, 1, 255, 256, 65534, 65535 } },
    { n = 4, sizes = { 0, 1, 255, 65535, 65536, 70000 } },
  } do
    it(("packet = %d: payloads of %s bytes, one at a time and all in one write"):format(
      case.n, table.concat(case.sizes, ", ")), function()
      local want, frames = {}, {}
      for i, size in ipairs(case.sizes) do
        want[i] = H.random_bytes(size)
        frames[i] = frame(case.n, want[i])
      end
      recording({ packet = case.n }, function(port, accepted)
        local c, rec = open(port, accepted)
        for _, f in ipairs(frames) do
          local n = #rec.msgs
          c:send(f)
          wait_msgs(rec, n + 1)
        end
        c:send(table.concat(frames))
        wait_msgs(rec, 2 * #want)
        c:close()
        wait_closed(rec)
        assert.equal(2 * #want, #rec.msgs)
        for i = 1, #want do
          assert.is_true(rec.msgs[i] == want[i], "payload " .. i .. " differs")
          assert.is_true(rec.msgs[#want + i] == want[i], "payload " .. i .. " (one write) differs")
        end
        assert.same({ "closed" }, { rec.reason, rec.detail })
      end)
    end)
  end

  it("packet = 4: a payload of 3 MB under a raised max_receive, in one call", function()
    local big = H.random_bytes(3 * 1000 * 1000)
    recording({ packet = 4, max_receive = 4 * 1024 * 1024 }, function(port, accepted)
      local c, rec = open(port, accepted)
      c:send(frame(4, big) .. frame(4, "after"))
      wait_msgs(rec, 2)
      c:close()
      wait_closed(rec)
      assert.equal(2, #rec.msgs)
      assert.equal(#big, #rec.msgs[1])
      assert.is_true(big == rec.msgs[1], "the 3 MB payload differs")
      assert.equal("after", rec.msgs[2])
    end)
  end)

  it("a header cut over writes, and frames cut anywhere", function()
    for _, n in ipairs{ 1, 2, 4 } do
      local payloads = { "abcde", "", "x", ("y"):rep(40) }
      local t = {}
      for i, p in ipairs(payloads) do t[i] = frame(n, p) end
      local stream = table.concat(t)
      recording({ packet = n }, function(port, accepted)
        for _, pieces in ipairs{ bytes(stream), cuts(stream, 3), cuts(stream, 11) } do
          local c, rec = open(port, accepted)
          feed(c, pieces)
          wait_msgs(rec, #payloads)
          c:close()
          wait_closed(rec)
          assert.same(payloads, rec.msgs, "packet = " .. n)
          assert.same({ "closed" }, { rec.reason, rec.detail })
        end
      end)
    end
  end)

  it("many frames in one write: every one, in order", function()
    local N = 3000
    local t, want = {}, {}
    for i = 1, N do
      want[i] = ("frame %d"):format(i) .. ("z"):rep(i % 50)
      t[i] = frame(2, want[i])
    end
    recording({ packet = 2 }, function(port, accepted)
      local c, rec = open(port, accepted)
      c:send(table.concat(t))
      wait_msgs(rec, N)
      c:close()
      wait_closed(rec)
      assert.same(want, rec.msgs)
    end)
  end)

  it("a length of max_receive passes; one more ends the connection as soon as the header is in", function()
    for _, n in ipairs{ 1, 2, 4 } do
      local max = n == 1 and 100 or 1000
      recording({ packet = n, max_receive = max }, function(port, accepted)
        local c, rec = open(port, accepted)
        local ok = ("k"):rep(max)
        c:send(frame(n, ok))
        wait_msgs(rec, 1)
        -- the header alone: nothing more of it need arrive
        c:send(pack(">I" .. n, max + 1))
        wait_closed(rec)
        assert.equal(1, #rec.msgs)
        assert.is_true(rec.msgs[1] == ok)
        assert.same({ "error", "packet longer than max_receive" }, { rec.reason, rec.detail },
          "packet = " .. n)
        H.assert_closed(c)
        c:close()
      end)
    end
  end)

  it("refuses 0xFFFFFFFF under packet = 4 with the default max_receive", function()
    recording({ packet = 4 }, function(port, accepted)
      local c, rec = open(port, accepted)
      c:send("\255\255\255\255abc")
      wait_closed(rec)
      assert.same({ "error", "packet longer than max_receive" }, { rec.reason, rec.detail })
      assert.same({}, rec.msgs)
      c:close()
    end)
  end)

  it('a peer that closes mid-packet gives "closed", "peer closed in the middle of a packet"', function()
    for _, n in ipairs{ 1, 2, 4 } do
      recording({ packet = n }, function(port, accepted)
        local cases = {
          { name = "in the payload", bytes = frame(n, "whole") .. pack(">I" .. n, 10) .. "abc" },
          { name = "right after the header", bytes = frame(n, "whole") .. pack(">I" .. n, 10) },
        }
        if n > 1 then
          cases[#cases + 1] = { name = "in the header", bytes = frame(n, "whole") .. ("\0"):rep(n - 1) }
        end
        for _, case in ipairs(cases) do
          local c, rec = open(port, accepted)
          feed(c, { case.bytes })
          wait_msgs(rec, 1)
          c:close()
          wait_closed(rec)
          local what = ("packet = %d, %s"):format(n, case.name)
          assert.same({ "whole" }, rec.msgs, what) -- the partial one is dropped
          assert.same({ "closed", "peer closed in the middle of a packet" },
            { rec.reason, rec.detail }, what)
        end
      end)
    end
  end)
end)

describe("the packet option", function()
  after_each(H.no_leaks)

  -- Replies [msg] to each message: the framing shows in the reply.
  local BRACKETS = [[
    return {
      %s
      handler = function(msg, state) state.socket:send("[" .. msg .. "]") end,
    }
  ]]

  it("is a field of a script's table", function()
    local p = H.start(H.script(BRACKETS:format('packet = "line",')))
    local c = H.connect(p.port, nil, LONG)
    c:send("a\r\nb\n\nc")
    assert.equal("[a][b][]", c:receive(8))
    c:send("d\n")
    assert.equal("[cd]", c:receive(4))
    c:close()
    p = H.start(H.script(BRACKETS:format("packet = 2,")))
    c = H.connect(p.port, nil, LONG)
    c:send(pack(">s2", "hi") .. pack(">s2", "") .. pack(">s2", ("q"):rep(300)))
    assert.equal("[hi][][" .. ("q"):rep(300) .. "]", c:receive(8 + 300))
    c:close()
    assert.equal(0, p:stop())
  end)

  it("is --packet on the command line, which overrides the script's table", function()
    local plain = H.script(BRACKETS:format(""))
    local lines = H.script(BRACKETS:format('packet = "line",'))
    for _, case in ipairs{
      { args = "--packet line " .. plain, send = "x\r\ny\n", want = "[x][y]" },
      { args = "--packet=line " .. plain, send = "x\r\ny\n", want = "[x][y]" },
      { args = "--packet 1 " .. lines, send = "\2a\n\0", want = "[a\n][]" },
      { args = "--packet 2 " .. plain, send = "\0\3abc\0\0", want = "[abc][]" },
      { args = "--packet=4 " .. lines, send = "\0\0\0\2\r\n", want = "[\r\n]" },
      { args = "--packet raw " .. lines, send = "r\n", want = "[r\n]" },
    } do
      local p = H.start(case.args .. " 0")
      local c = H.connect(p.port, nil, LONG)
      c:send(case.send)
      assert.equal(case.want, c:receive(#case.want), case.args)
      c:close()
      assert.equal(0, p:stop())
    end
  end)

  it("refuses a value that is not a mode: the flag, and the script's table", function()
    local plain = H.script(BRACKETS:format(""))
    for _, bad in ipairs{ "lines", "3", "0", "", "-2", "8" } do
      local rc, _, err = H.run(("--packet %s %s 0"):format(H.quote(bad), plain))
      assert.equal(2, rc, "--packet " .. bad)
      assert.matches("option 'packet' must be", err, nil, true)
    end
    for _, bad in ipairs{ '"lines"', "3", "0", "true", '"LINE"' } do
      local rc, _, err = H.run(H.script(BRACKETS:format("packet = " .. bad .. ",")) .. " 0")
      assert.equal(1, rc, "packet = " .. bad)
      assert.matches("option 'packet' must be", err, nil, true)
    end
  end)

  it("is taken by glisten.serve, listen and connect, each raising on a bad value", function()
    local h = function() end
    for _, bad in ipairs{ "lines", 3, 0, -1, 2.5, true, "" } do
      local what = "packet = " .. tostring(bad)
      local ok, err = pcall(glisten.serve, { port = 0, handler = h, packet = bad })
      assert.is_false(ok, "serve: " .. what)
      assert.matches("option 'packet' must be \"raw\", \"line\", 1, 2 or 4", tostring(err), nil, true)
      ok, err = pcall(glisten.listen, 0, { packet = bad })
      assert.is_false(ok, "listen: " .. what)
      assert.matches("packet", tostring(err), nil, true)
      local l = assert(glisten.listen(0))
      ok, err = pcall(glisten.connect, "127.0.0.1", l.port, { packet = bad, timeout = 5 })
      l:close()
      assert.is_false(ok, "connect: " .. what)
      assert.matches("packet", tostring(err), nil, true)
    end
    collectgarbage()
    for _, good in ipairs{ "raw", "line", 1, 2, 4 } do
      local srv = assert(glisten.serve{ port = 0, handler = h, packet = good })
      srv:close()
      local l = assert(glisten.listen(0, { packet = good }))
      l:close()
    end
  end)

  it("given to listen, frames what the accepted sockets' receive() returns", function()
    pair({ packet = "line" }, nil, function(s, c)
      c:send("one\r\ntwo\n")
      assert.equal("one", s:receive())
      assert.equal("two", s:receive())
    end)
    pair({ packet = 2 }, nil, function(s, c)
      c:send(pack(">s2", "framed") .. pack(">s2", ""))
      assert.equal("framed", s:receive())
      assert.equal("", s:receive())
    end)
  end)

  it("given to connect, frames what the client's receive() returns", function()
    for _, mode in ipairs{ "line", 1, 2, 4 } do
      pair(nil, { packet = mode }, function(s, c)
        local want = { "first", "", "third\0\r" }
        local t = {}
        for i, m in ipairs(want) do
          t[i] = mode == "line" and m .. "\r\n" or pack(">s" .. mode, m)
        end
        s:send(table.concat(t))
        for i = 1, #want do
          assert.equal(want[i], c:receive(), "packet = " .. mode)
        end
      end)
    end
  end)
end)

describe("sock:setpacket", function()
  after_each(H.no_leaks)

  -- The client says HELLO (read by with_init with receive(5)); then lines,
  -- until the line BIN; then 2-byte frames, until the frame RAW; then raw.
  -- Each message is recorded with the mode it came in.
  local function switching()
    return {
      with_init = function(state)
        state.hello = state.socket:receive(5)
        assert.equal(1, state.socket:setpacket("line"))
      end,
      handler = function(msg, state)
        local m = state.rec.msgs
        state.mode = state.mode or "line"
        if state.mode == "raw" then
          -- raw chunks may come in any cut: join them
          if m[#m] and m[#m]:sub(1, 4) == "raw:" then
            m[#m] = m[#m] .. msg
          else
            m[#m + 1] = "raw:" .. msg
          end
          return
        end
        m[#m + 1] = state.mode .. ":" .. msg
        if state.mode == "line" and msg == "BIN" then
          assert.equal(1, state.socket:setpacket(2)); state.mode = 2
        elseif state.mode == 2 and msg == "RAW" then
          assert.equal(1, state.socket:setpacket("raw")); state.mode = "raw"
        end
      end,
    }
  end

  local INPUT = "HELLOline1\r\nline2\nBIN\n" .. pack(">s2", "f1") .. pack(">s2", "")
    .. pack(">s2", "f\n3") .. pack(">s2", "RAW") .. "tail\n\0\0bytes"
  local WANT = { "line:line1", "line:line2", "line:BIN", "2:f1", "2:", "2:f\n3", "2:RAW",
    "raw:tail\n\0\0bytes" }

  it("raw -> line -> 2 -> raw: the bytes already buffered are cut under the new mode", function()
    local ways = {
      { name = "one write", pieces = { INPUT } },
      { name = "a byte a write", pieces = bytes(INPUT) },
      { name = "random cuts", pieces = cuts(INPUT, 5) },
    }
    for i = 1, #INPUT - 1, 3 do
      ways[#ways + 1] = { name = "cut at " .. i, pieces = { INPUT:sub(1, i), INPUT:sub(i + 1) } }
    end
    recording(switching(), function(port, accepted)
      for _, way in ipairs(ways) do
        local c, rec = open(port, accepted)
        feed(c, way.pieces)
        assert(H.wait_for(function()
          local last = rec.msgs[#rec.msgs]
          return #rec.msgs >= #WANT and #last >= #WANT[#WANT]
        end, LONG), way.name .. ": got " .. #rec.msgs .. " messages")
        c:close()
        wait_closed(rec)
        assert.equal("HELLO", rec.state.hello, way.name)
        assert.same(WANT, rec.msgs, way.name)
      end
    end)
  end)

  it("called from with_init, before any input, frames the first message", function()
    recording({
      packet = "line",
      with_init = function(state) state.socket:setpacket(4) end,
    }, function(port, accepted)
      local c, rec = open(port, accepted)
      c:send(pack(">s4", "a\nb") .. pack(">s4", "c\r\n"))
      wait_msgs(rec, 2)
      c:close()
      wait_closed(rec)
      assert.same({ "a\nb", "c\r\n" }, rec.msgs)
    end)
    recording({
      with_init = function(state) state.socket:setpacket("line") end,
    }, function(port, accepted)
      local c, rec = open(port, accepted)
      c:send("x\r\ny\n")
      wait_msgs(rec, 2)
      c:close()
      wait_closed(rec)
      assert.same({ "x", "y" }, rec.msgs)
    end)
  end)

  it("called outside the connection's callbacks, hands handler what is now a whole message", function()
    recording({
      packet = 4,
      with_init = function(state) state.rec.socket = state.socket end,
    }, function(port, accepted)
      local c, rec = open(port, accepted)
      feed(c, { "\0\0\0\9abc" }) -- a packet's header and part of it: nothing yet
      assert.same({}, rec.msgs)
      assert.equal(1, rec.socket:setpacket("raw"))
      wait_msgs(rec, 1)
      assert.same({ "\0\0\0\9abc" }, rec.msgs)
      c:close()
      wait_closed(rec)
    end)
  end)

  it("switches a client socket's receive() with the bytes already buffered", function()
    pair(nil, nil, function(s, c)
      local in0 = glisten.stats().bytes_in
      local data = "HELLO\r\n" .. pack(">s4", "frame") .. pack(">s1", "one") .. "rest"
      s:send(data)
      read_in(in0, #data)
      assert.equal(1, c:setpacket("line"))
      assert.equal("HELLO", c:receive())
      assert.equal(1, c:setpacket(4))
      assert.equal("frame", c:receive())
      assert.equal(1, c:setpacket(1))
      assert.equal("one", c:receive())
      assert.equal(1, c:setpacket("raw"))
      assert.equal("rest", c:receive())
    end)
  end)

  it("raises on a mode that is not one, and the mode stays", function()
    local errs = {}
    recording({
      packet = "line",
      with_init = function(state)
        local s = state.socket
        for _, bad in ipairs{ "lines", 3, 0, -1, "", "LINE", 2.5, {}, true } do
          local ok, err = pcall(function() s:setpacket(bad) end)
          errs[#errs + 1] = { ok = ok, err = tostring(err), bad = tostring(bad) }
        end
        local ok, err = pcall(function() s:setpacket() end)
        errs[#errs + 1] = { ok = ok, err = tostring(err), bad = "none" }
      end,
    }, function(port, accepted)
      local c, rec = open(port, accepted)
      c:send("still\nlines\n")
      wait_msgs(rec, 2)
      assert.same({ "still", "lines" }, rec.msgs)
      c:close()
      wait_closed(rec)
    end)
    assert.equal(10, #errs)
    for _, e in ipairs(errs) do
      assert.is_false(e.ok, "setpacket(" .. e.bad .. ") did not raise")
      -- says which call and argument, and what it takes
      assert.matches("bad argument #1 to 'setpacket'", e.err, nil, true)
      assert.matches('"raw", "line", 1, 2 or 4', e.err, nil, true)
    end
  end)
end)

describe("sock:receive() under a packet mode", function()
  after_each(H.no_leaks)

  it("in a handler, takes the next message of the served socket's mode", function()
    H.serving({
      packet = "line",
      handler = function(msg, state)
        local s = state.socket
        if msg == "GET2" then
          local a, b = s:receive(), s:receive()
          s:send(a, ",", b, "\n")
        else
          s:send("<", msg, ">\n")
        end
      end,
    }, function(srv)
      local c = H.connect(srv.port, nil, LONG)
      feed(c, { "GET2\r\nx", "\r", "\ny\nz\n" })
      assert.equal("x,y", c:receive("*l"))
      assert.equal("<z>", c:receive("*l"))
      c:close()
    end)
    H.serving({
      packet = 1,
      handler = function(msg, state)
        local s = state.socket
        local n = tonumber(msg)
        local t = {}
        for i = 1, n do t[i] = s:receive() end
        s:send(pack(">s1", table.concat(t, "+")))
      end,
    }, function(srv)
      local c = H.connect(srv.port, nil, LONG)
      c:send(pack(">s1", "3") .. pack(">s1", "a") .. pack(">s1", ""))
      c:send(pack(">s1", "c"))
      c:setpacket(1)
      assert.equal("a++c", c:receive())
      c:close()
    end)
  end)

  it('"too long" leaves the bytes, for receive(n) to take (line)', function()
    pair(nil, { packet = "line", max_line = 8 }, function(s, c)
      local in0 = glisten.stats().bytes_in
      local data = "12345678\n123456789abc\r\nnext\n"
      s:send(data)
      read_in(in0, #data)
      assert.equal("12345678", c:receive())
      assert.same({ nil, "too long" }, { c:receive() })
      assert.same({ nil, "too long" }, { c:receive() }) -- still there
      assert.equal("123456789", c:receive(9))
      assert.equal("abc", c:receive())
      assert.equal("next", c:receive())
    end)
  end)

  it('"too long" leaves the bytes, for receive(n) to take (1, 2, 4)', function()
    for _, n in ipairs{ 1, 2, 4 } do
      pair(nil, { packet = n, max_receive = 100 }, function(s, c)
        local big = ("B"):rep(101)
        s:send(pack(">s" .. n, ("o"):rep(100)) .. pack(">s" .. n, big) .. pack(">s" .. n, "after"))
        assert.equal(("o"):rep(100), c:receive())
        assert.same({ nil, "too long" }, { c:receive() })
        assert.equal(pack(">I" .. n, 101), c:receive(n)) -- the header is still there
        assert.equal(big, c:receive(101))
        assert.equal("after", c:receive())
      end)
    end
  end)

  it('returns nil, "closed", partial at the end of the stream mid-packet', function()
    for _, n in ipairs{ 1, 2, 4 } do
      pair(nil, { packet = n }, function(s, c)
        s:send(pack(">s" .. n, "whole") .. pack(">I" .. n, 10) .. "abc")
        s:close()
        assert.equal("whole", c:receive())
        -- partial: the bytes received so far, header included
        assert.same({ nil, "closed", pack(">I" .. n, 10) .. "abc" }, { c:receive() })
        assert.same({ nil, "closed", "" }, { c:receive() })
      end)
    end
  end)

  it("loses no byte of a line cut short by the end of the stream", function()
    pair(nil, { packet = "line" }, function(s, c)
      s:send("a\nlast")
      s:close()
      assert.equal("a", c:receive())
      -- receive() gives the rest as receive("*l") does: nil, "closed", partial
      -- (handler, not receive, gets it as a last line)
      assert.same({ nil, "closed", "last" }, { c:receive() })
      assert.same({ nil, "closed", "" }, { c:receive() })
    end)
  end)

  it('returns nil, "closed" after the last message of a stream that ends between messages', function()
    for _, mode in ipairs{ "line", 2 } do
      pair(nil, { packet = mode }, function(s, c)
        s:send(mode == "line" and "a\n" or pack(">s2", "a"))
        s:close()
        assert.equal("a", c:receive())
        assert.same({ nil, "closed", "" }, { c:receive() })
      end)
    end
  end)

  it('returns nil, "timeout", partial, and the socket still works', function()
    for _, mode in ipairs{ "line", 1, 2, 4 } do
      pair(nil, { packet = mode }, function(s, c)
        local head = mode == "line" and "par" or pack(">I" .. mode, 5) .. "ab"
        local in0 = glisten.stats().bytes_in
        s:send(head)
        read_in(in0, #head)
        c:settimeout(0.2)
        -- partial: the bytes received so far (a header too), which it consumes
        assert.same({ nil, "timeout", head }, { c:receive() }, "packet = " .. mode)
        assert.equal(1, c:settimeout(LONG))
        s:send("cde" .. (mode == "line" and "next\n" or pack(">s" .. mode, "next")))
        assert.equal("cde", c:receive(3))
        assert.equal("next", c:receive())
      end)
    end
  end)

  it("waits with a timeout given as the second argument", function()
    pair(nil, { packet = 2 }, function(s, c)
      assert.same({ nil, "timeout", "" }, { c:receive(nil, 0.1) })
      s:send(pack(">s2", "late"))
      assert.equal("late", c:receive(nil, LONG))
    end)
  end)

  it("receive with a pattern is unchanged by the mode", function()
    pair(nil, { packet = 2 }, function(s, c)
      s:send("PUT 3\r\nabc" .. pack(">s2", "framed"))
      assert.equal("PUT 3", c:receive("*l"))
      assert.equal("abc", c:receive(3))
      assert.equal("framed", c:receive())
    end)
  end)
end)

describe("sock:receive_until", function()
  after_each(H.no_leaks)

  it("returns the bytes before delimiters of 1, 2 and more bytes, and consumes them", function()
    for _, d in ipairs{ "\n", "\r\n", "\0", "--XYZ--", "\r\n\r\n", "ab" } do
      pair(nil, nil, function(s, c)
        local input = "first" .. d .. "second part" .. d .. d .. "tail"
        for _, pieces in ipairs{ { input }, bytes(input), cuts(input, 9) } do
          local got = {}
          glisten.spawn(function()
            for i = 1, 3 do got[i] = s:receive_until(d) end
            got.rest = s:receive(4)
          end)
          feed(c, pieces)
          assert(H.wait_for(function() return got.rest end, LONG))
          assert.same({ "first", "second part", "", rest = "tail" }, got,
            ("delimiter %q"):format(d))
        end
      end)
    end
  end)

  it("a delimiter cut across writes, and overlapping starts", function()
    pair(nil, nil, function(s, c)
      local got = {}
      glisten.spawn(function()
        got[1] = s:receive_until("--XYZ--")
        got[2] = s:receive_until("aab")
        got[3] = s:receive_until("\r\n")
        got[4] = s:receive(3)
      end)
      feed(c, { "abc--X", "YZ-", "-a", "aab", "x\r", "\nend" })
      assert(H.wait_for(function() return got[4] end, LONG))
      assert.same({ "abc", "a", "x", "end" }, got)
    end)
  end)

  it("a delimiter at the very start gives an empty string", function()
    pair(nil, nil, function(s, c)
      c:send("::x:")
      assert.equal("", s:receive_until(":"))
      assert.equal("", s:receive_until(":"))
      assert.equal("x", s:receive_until(":"))
    end)
  end)

  it("at most max_line bytes before the delimiter; past it, \"too long\" and the input as it was", function()
    pair({ max_line = 8 }, nil, function(s, c)
      local in0 = glisten.stats().bytes_in
      c:send("12345678END123456789END")
      read_in(in0, 23)
      assert.equal("12345678", s:receive_until("END"))
      assert.same({ nil, "too long" }, { s:receive_until("END") })
      assert.equal("123456789END", s:receive(12))
    end)
  end)

  it("waits while max_line bytes and part of the delimiter are in", function()
    pair({ max_line = 8 }, nil, function(s, c)
      local got
      glisten.spawn(function() got = { s:receive_until("END") } end)
      feed(c, { "12345678EN" })
      feed(c, { "D" })
      assert(H.wait_for(function() return got end, LONG))
      assert.same({ "12345678" }, got)
    end)
  end)

  it('"too long" before the delimiter arrives, with the bytes left', function()
    pair({ max_line = 8 }, nil, function(s, c)
      local in0 = glisten.stats().bytes_in
      c:send("123456789")
      read_in(in0, 9)
      assert.same({ nil, "too long" }, { s:receive_until("\n", LONG) })
      assert.equal("123456789", s:receive(9))
    end)
  end)

  it('fails with nil, "closed", partial and nil, "timeout", partial', function()
    pair(nil, nil, function(s, c)
      local in0 = glisten.stats().bytes_in
      c:send("abc--")
      read_in(in0, 5)
      assert.same({ nil, "timeout", "abc--" }, { s:receive_until("---", 0.2) })
      c:send("x-")
      c:close()
      assert.same({ nil, "closed", "x-" }, { s:receive_until("---", LONG) })
    end)
  end)

  it("takes the socket's timeout from settimeout", function()
    pair(nil, nil, function(s, c)
      c:send("no delimiter")
      s:settimeout(0.2)
      assert.same({ nil, "timeout", "no delimiter" }, { s:receive_until("|") })
    end)
  end)

  it("in a line-mode handler, leaves the rest for handler", function()
    recording({
      packet = "line",
      handler = function(msg, state)
        local m = state.rec.msgs
        m[#m + 1] = msg
        if msg == "BODY" then m[#m + 1] = "body:" .. state.socket:receive_until("\r\n.\r\n") end
      end,
    }, function(port, accepted)
      local c, rec = open(port, accepted)
      feed(c, { "a\nBODY\nline\r\nmore\r", "\n.", "\r\nb\n" })
      wait_msgs(rec, 4)
      c:close()
      wait_closed(rec)
      assert.same({ "a", "BODY", "body:line\r\nmore", "b" }, rec.msgs)
    end)
  end)

  it("raises on an empty delimiter", function()
    pair(nil, nil, function(s)
      assert.has_error(function() s:receive_until("") end)
      assert.has_error(function() s:receive_until() end)
      assert.has_error(function() s:receive_until({}) end)
    end)
  end)
end)

describe("sock:send with pieces", function()
  after_each(H.no_leaks)

  it("sends a table's strings and numbers as table.concat would, and returns the count", function()
    local t = { "a", 1, "-", 2.5, "|", -0.0, "|", 1e100, "|", math.maxinteger, "|", math.mininteger,
      "|", 2 ^ 63, "|", 3.0, "|", 0.1, "|", 1 / 3, "", "\0end" }
    local want = table.concat(t)
    pair(nil, nil, function(s, c)
      assert.equal(#want, s:send(t))
      assert.equal(#want, c:send(t))
      assert.equal(want, c:receive(#want))
      assert.equal(want, s:receive(#want))
    end)
  end)

  it("send(s1, s2, ...) sends its arguments; a number second is still a byte range", function()
    pair(nil, nil, function(s, c)
      assert.equal(6, s:send("ab", "cd", "ef"))
      assert.equal(2, s:send("x", "y"))
      assert.equal(5, s:send("n=", "v", 42))
      assert.equal(3, s:send("abcdef", 2, 4))
      assert.equal(2, s:send("abcdef", -2))
      local many = {}
      for i = 1, 150 do many[i] = tostring(i) .. "," end
      local want = table.concat(many)
      assert.equal(#want, s:send(table.unpack(many)))
      local all = "abcdefxyn=v42bcdef" .. want
      assert.equal(all, c:receive(#all))
    end)
  end)

  it("an empty table sends nothing and returns 0", function()
    pair(nil, nil, function(s, c)
      assert.equal(0, s:send({}))
      assert.equal(0, s:send({ "", "" }))
      assert.equal(4, s:send({ "mark" }))
      assert.equal("mark", c:receive(4))
    end)
  end)

  it("more than 64 pieces, every one in order", function()
    for _, n in ipairs{ 63, 64, 65, 129, 1000 } do
      pair(nil, nil, function(s, c)
        local t = {}
        for i = 1, n do t[i] = ("<%d>"):format(i) end
        t[n + 1] = nil
        local want = table.concat(t)
        assert.equal(#want, s:send(t), n .. " pieces")
        assert.equal(want, c:receive(#want), n .. " pieces")
      end)
    end
  end)

  -- Pieces of the numbered stream, of the sizes given in turn until `total`
  -- bytes: returns the pieces and their count of bytes.
  local function stream_pieces(sizes, total)
    local t, sum, i = {}, 0, 0
    while sum < total do
      i = i + 1
      local n = sizes[(i - 1) % #sizes + 1]
      t[i] = H.stream(sum + 1, sum + n)
      sum = sum + n
    end
    return t, sum
  end

  it("a huge send of pieces to a peer that reads late and slowly: all of it, in order", function()
    -- past max_output (1 MiB here): with more than 64 pieces (joined), and
    -- with at most 64 (one writev that the socket takes only part of),
    -- as a table and as arguments
    local many, many_total = stream_pieces({ 1, 65536, 7, 300000, 0, 4096, 131071, 99 }, 12 * 1024 * 1024)
    assert.is_true(#many > 64)
    local few, few_total = stream_pieces({ 400000, 3, 150001, 0, 290000 }, 10 * 1000 * 1000)
    assert.is_true(#few <= 64)
    for _, case in ipairs{
      { name = #many .. " pieces", send = function(s) return s:send(many) end, total = many_total },
      { name = #few .. " pieces", send = function(s) return s:send(few) end, total = few_total },
      { name = #few .. " arguments", send = function(s) return s:send(table.unpack(few)) end, total = few_total },
    } do
      pair({ max_output = 1024 * 1024 }, nil, function(s, c)
        local sent
        glisten.spawn(function() sent = { case.send(s) } end)
        glisten.sleep(0.3) -- only so the sender finds the socket full; any order passes
        local got = 0
        while got < case.total do
          local want = math.min(10000, case.total - got)
          H.read_stream(c, got, want)
          got = got + want
        end
        assert(H.wait_for(function() return sent end, LONG), case.name)
        assert.same({ case.total }, sent, case.name)
        c:settimeout(0.1) -- and nothing more
        assert.same({ nil, "timeout", "" }, { c:receive(1) }, case.name)
      end)
    end
  end)

  it("a table sent behind queued output, to a peer that does not read yet", function()
    pair({ max_output = 256 * 1024 }, nil, function(s, c)
      local first = H.stream(1, 1024 * 1024)
      local t, total = {}, #first
      for k = 1, 200 do
        t[k] = H.stream(total + 1, total + 5000 + k)
        total = total + 5000 + k
      end
      local sent = {}
      glisten.spawn(function()
        sent[1] = s:send(first)
        sent[2] = s:send(t)
      end)
      glisten.sleep(0.3)
      H.read_stream(c, 0, total)
      assert(H.wait_for(function() return sent[2] end, LONG))
      assert.same({ #first, total - #first }, sent)
    end)
  end)

  it("a send timeout takes a prefix: nil, \"timeout\", n, and exactly n bytes go out", function()
    pair({ max_output = 64 * 1024 }, nil, function(s, c)
      local t, total = {}, 0
      for k = 1, 400 do -- 40 MB: more than any loopback holds
        t[k] = H.stream(total + 1, total + 100000)
        total = total + 100000
      end
      s:settimeout(0.5)
      local n, err, part = s:send(t)
      assert.is_nil(n)
      assert.equal("timeout", err)
      assert.is_true(part > 0 and part < total, "taken: " .. tostring(part))
      s:close()
      H.read_stream(c, 0, part)
      H.assert_closed(c, 1)
    end)
  end)

  it("raises on a piece that is not a string or a number, and sends nothing", function()
    pair(nil, nil, function(s, c)
      for _, bad in ipairs{ true, {}, print, coroutine.create(print), false } do
        assert.has_error(function() s:send({ "a", "b", bad }) end)
        assert.has_error(function() s:send({ bad, "a" }) end)
        assert.has_error(function() s:send("a", "b", bad) end)
      end
      assert.equal(2, s:send("ok"))
      assert.equal("ok", c:receive(2))
      c:settimeout(0.1)
      assert.same({ nil, "timeout", "" }, { c:receive(1) })
    end)
  end)

  it("raises on a table with a byte range", function()
    pair(nil, nil, function(s, c)
      assert.has_error(function() s:send({ "abc" }, 1, 2) end)
      assert.has_error(function() s:send({ "abc" }, 2) end)
      assert.equal(2, s:send("ok"))
      assert.equal("ok", c:receive(2))
    end)
  end)

  it("sends of pieces from several coroutines never interleave", function()
    -- each message: a 16-byte header "<W kkkkk nnnnnn>" then n bytes of W's
    -- letter, written as at most 64 pieces (one writev); larger than
    -- max_output, so each send is taken in parts while the peer reads
    local COUNT, SIZE = 4, 999999
    local function message(who, k)
      local t = { ("<%s %05d %06d>"):format(who, k, SIZE) }
      local left = SIZE
      local n = 1
      while left > 0 do
        local piece = math.min(left, 20001 + (n * 7919) % 60000)
        t[#t + 1] = who:rep(piece)
        left = left - piece
        n = n + 1
      end
      assert(#t <= 64)
      return t
    end
    pair({ max_output = 512 * 1024 }, nil, function(s, c)
      -- each coroutine keeps its own figures: a coroutine may be made to
      -- yield anywhere (callback_slice), so a shared t[#t + 1] = x could race
      local rets = { A = {}, B = {} }
      for _, who in ipairs{ "A", "B" } do
        glisten.spawn(function()
          for k = 1, COUNT do
            local t = message(who, k)
            rets[who][k] = s:send(t) == #table.concat(t)
            if k % 2 == 0 then -- and a plain string: its own message, a lower-case letter
              s:send(("<%s %05d %06d>"):format(who:lower(), k // 2, 5000) .. who:lower():rep(5000))
            end
          end
          rets[who].done = true
        end)
      end
      -- and a third that tries a small send of pieces at every turn of the
      -- loop: it must wait for a send that has begun, even in a turn where
      -- the queue has room and that send's coroutine has yet to run
      local SMALL = 300
      glisten.spawn(function()
        for k = 1, SMALL do
          glisten.sleep(0)
          s:send({ ("<x %05d %06d>"):format(k, 10), ("x"):rep(10) })
        end
        rets.x = true
      end)
      glisten.sleep(0.2) -- only so the sends find the socket full
      local seen = { A = 0, B = 0, a = 0, b = 0, x = 0 }
      for _ = 1, 3 * COUNT + SMALL do
        local head = c:receive(16)
        local who, k, n = head:match("^<([ABabx]) (%d+) (%d+)>$")
        assert(who, "not a header: " .. ("%q"):format(head))
        assert.equal(seen[who] + 1, tonumber(k))
        seen[who] = tonumber(k)
        local body = c:receive(tonumber(n))
        assert.is_nil(body:find("[^" .. who .. "]"), "message " .. who .. k .. " has foreign bytes")
      end
      assert.same({ A = COUNT, B = COUNT, a = COUNT // 2, b = COUNT // 2, x = SMALL }, seen)
      assert(H.wait_for(function() return rets.A.done and rets.B.done and rets.x end, LONG))
      for _, who in ipairs{ "A", "B" } do
        for k = 1, COUNT do assert.is_true(rets[who][k], who .. k .. ": wrong count") end
      end
    end)
  end)

  it("on a served socket, from handler", function()
    H.serving({
      packet = "line",
      handler = function(msg, state)
        state.socket:send({ "$", #msg, "\r\n", msg, "\r\n" })
      end,
    }, function(srv)
      local c = H.connect(srv.port, nil, LONG)
      c:send("hello\nworld!\n")
      assert.equal("$5\r\nhello\r\n$6\r\nworld!\r\n", c:receive(23))
      c:close()
    end)
  end)
end)
