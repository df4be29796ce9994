-- scripts/memcached.lua under the glisten-lua command, with Debian's
-- libmemcached-tools as real clients (memccapable, memccp, memccat,
-- memcrm, memcexist, memctouch, memcflush, memcstat, memcslap, memcaslap)
-- and glisten client sockets speaking the text protocol byte by byte.
local glisten = H.glisten

-- Every wait here only bounds a hang; a busy machine must never reach it.
local LONG = 60

local function start(opts) return H.start("scripts/memcached.lua", opts) end
local function connect(p) return H.connect(p.port, nil, LONG) end

-- Reads the lines of `want` ("\r\n"-ended) from c one by one, so the first
-- line that differs fails at once instead of a read waiting for bytes that
-- never come.
local function expect(c, want, what)
  for line in want:gmatch("[^\n]*\n") do
    local got, err = c:receive("*L")
    assert.equal(line, got or ("<" .. tostring(err) .. ">"), what)
  end
end

-- Sends req on c and expects the reply want.
local function exchange(c, req, want, what)
  assert(c:send(req))
  expect(c, want, what or req)
end

-- A new connection to p that checks the server still answers.
local function still_serving(p)
  local c = connect(p)
  exchange(c, "version\r\n", "VERSION 1.6.0-glisten-lua\r\n")
  c:close()
end

-- The general stats of the server, by name.
local function stats(c)
  assert(c:send("stats\r\n"))
  local t = {}
  while true do
    local line = assert(c:receive("*l"))
    if line == "END" then return t end
    local k, v = line:match("^STAT (%S+) (.*)$")
    assert.truthy(k, line)
    t[k] = v
  end
end

-- The cas unique of key, from gets.
local function cas_of(c, key, value)
  assert(c:send("gets " .. key .. "\r\n"))
  local line = assert(c:receive("*l"))
  local unique = line:match("^VALUE " .. key .. " %d+ " .. #value .. " (%d+)$")
  assert.truthy(unique, line)
  expect(c, value .. "\r\nEND\r\n")
  return unique
end

-- A libmemcached tool against p (SERVERS in cmd: --servers= its address):
-- its output, and whether it succeeded (true or false).
local function tool(p, cmd, limit)
  local out, ok = H.peer(cmd:gsub("SERVERS", "--servers=127.0.0.1:" .. p.port), nil, limit)
  return out, ok == true
end

local function stop(p)
  assert.equal(0, p:stop())
  assert.not_matches("error", p:stderr())
end

describe("scripts/memcached.lua with the libmemcached tools", function()
  after_each(H.no_leaks)

  it("passes every ascii test of memccapable", function()
    local p = start()
    local out, ok = H.peer(("memccapable -a -h 127.0.0.1 -p %d -t 30"):format(p.port))
    local passed = select(2, out:gsub("%[pass%]", ""))
    assert.equal(27, passed, out)
    assert.not_matches("%[FAIL%]", out)
    assert.not_matches("%[skip%]", out)
    assert.matches("All tests passed", out)
    assert.is_true(ok, out)
    still_serving(p)
    stop(p)
  end)

  it("copies a 100 KB binary file in and back byte for byte, and touches, removes, flushes", function()
    local p = start()
    local dir = H.tmpdir .. "/mc"
    assert(os.execute("mkdir -p " .. dir))
    local data = "\r\nEND\r\n\0" .. H.random_bytes(100 * 1024) .. "\r\n"
    local file = H.writefile(dir .. "/blob.bin", data)
    local out, ok = tool(p, "memccp SERVERS --flags=42 " .. file)
    assert.is_true(ok, out)
    out, ok = tool(p, "memccat SERVERS --file=" .. dir .. "/back.bin blob.bin")
    assert.is_true(ok, out)
    local back = H.readfile(dir .. "/back.bin")
    assert.equal(#data, #back)
    assert.is_true(back == data, "the copy differs")
    -- the flags came through
    local c = connect(p)
    exchange(c, "get nothing-here\r\n", "END\r\n")
    assert(c:send("get blob.bin\r\n"))
    assert.equal("VALUE blob.bin 42 " .. #data, c:receive("*l"))
    assert.is_true(c:receive(#data + 2) == data .. "\r\n")
    expect(c, "END\r\n")
    -- memccp --add refuses a key that is there
    out, ok = tool(p, "memccp SERVERS --add " .. file)
    assert.is_false(ok, out)

    assert.is_true(select(2, tool(p, "memcexist SERVERS blob.bin")))
    assert.is_false(select(2, tool(p, "memcexist SERVERS nope")))
    assert.is_true(select(2, tool(p, "memctouch SERVERS --expire=100 blob.bin")))
    assert.is_false(select(2, tool(p, "memctouch SERVERS --expire=100 nope")))
    assert.is_true(select(2, tool(p, "memcexist SERVERS blob.bin")))
    assert.is_true(select(2, tool(p, "memcrm SERVERS blob.bin")))
    assert.is_false(select(2, tool(p, "memcexist SERVERS blob.bin")))
    assert.is_false(select(2, tool(p, "memccat SERVERS blob.bin")))

    assert.is_true(select(2, tool(p, "memccp SERVERS " .. file)))
    assert.is_true(select(2, tool(p, "memcexist SERVERS blob.bin")))
    assert.is_true(select(2, tool(p, "memcflush SERVERS")))
    assert.is_false(select(2, tool(p, "memcexist SERVERS blob.bin")))
    exchange(c, "get blob.bin\r\n", "END\r\n")
    c:close()
    stop(p)
  end)

  it("answers memcstat with its counters and its pid", function()
    local p = start()
    local c = connect(p)
    exchange(c, "set a 0 0 1\r\nx\r\nget a\r\nget b\r\n", "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nEND\r\n")
    c:close()
    local out, ok = tool(p, "memcstat SERVERS")
    assert.is_true(ok, out)
    assert.matches("\n%s*pid: " .. p.pid .. "\n", out)
    assert.matches("\n%s*version: 1%.6%.0%-glisten%-lua\n", out)
    assert.matches("\n%s*curr_items: 1\n", out)
    assert.matches("\n%s*get_hits: 1\n", out)
    assert.matches("\n%s*get_misses: 1\n", out)
    stop(p)
  end)

  it("serves memcslap and memcaslap runs of a fixed count without an error or a miss", function()
    local p = start()
    for _, test in ipairs { "set", "get", "mget" } do
      local out, ok = tool(p, "memcslap SERVERS --test=" .. test .. " --concurrency=4 --execute-number=500", LONG)
      assert.is_true(ok, out)
      assert.matches("Time to " .. test .. " +2000 keys by +4 threads", out)
    end
    -- every get is checked against what was set (-v 1)
    local out, ok = tool(p, "memcaslap -s 127.0.0.1:" .. p.port .. " -T 1 -c 16 -x 4000 -v 1", LONG)
    assert.is_true(ok, out)
    assert.matches("Ops: 4000 ", out)
    assert.matches("get_misses: 0\n", out)
    assert.matches("verify_failed: 0\n", out)
    local c = connect(p)
    local s = stats(c)
    -- memcslap get and mget: 2000 hits each; memcaslap: 3600 of 4000 are gets
    assert.equal(0, tonumber(s.get_misses))
    assert.equal(2000 + 2000 + 3600, tonumber(s.get_hits))
    c:close()
    still_serving(p)
    stop(p)
  end)
end)

describe("scripts/memcached.lua, the text protocol", function()
  after_each(H.no_leaks)

  it("answers many pipelined commands in one write in order", function()
    local p = start()
    local c = connect(p)
    local req, want = {}, {}
    for i = 1, 500 do
      local v = ("value %d"):format(i)
      req[#req + 1] = ("set k%d %d 0 %d\r\n%s\r\n"):format(i, i, #v, v)
      want[#want + 1] = "STORED\r\n"
      req[#req + 1] = ("get k%d nope k%d\r\n"):format(i, i - 1)
      want[#want + 1] = ("VALUE k%d %d %d\r\n%s\r\n"):format(i, i, #v, v)
      if i > 1 then
        local w = ("value %d"):format(i - 1)
        want[#want + 1] = ("VALUE k%d %d %d\r\n%s\r\n"):format(i - 1, i - 1, #w, w)
      end
      want[#want + 1] = "END\r\n"
      if i % 50 == 0 then
        req[#req + 1] = ("delete k%d\r\nincr n%d 1\r\nbogus\r\n"):format(i - 1, i)
        want[#want + 1] = "DELETED\r\nNOT_FOUND\r\nERROR\r\n"
      end
    end
    exchange(c, table.concat(req), table.concat(want), "pipelined")
    -- the same bytes in pieces of 7 written apart arrive the same
    exchange(c, "flush_all\r\n", "OK\r\n")
    local all = table.concat(req)
    glisten.spawn(function()
      for i = 1, #all, 7 do c:send(all:sub(i, i + 6)) end
    end)
    expect(c, table.concat(want), "in pieces")
    c:close()
    stop(p)
  end)

  it("answers gets of many keys, with and without their uniques, in order", function()
    local p = start()
    local c = connect(p)
    local req, keys, want, want_cas = {}, {}, {}, {}
    for i = 1, 100 do
      local v = ("v%d"):format(i):rep(i % 7)
      req[#req + 1] = ("set key%d %d 0 %d noreply\r\n%s\r\n"):format(i, i, #v, v)
      keys[#keys + 1] = "key" .. i
      if i % 10 == 0 then keys[#keys + 1] = "missing" .. i end
      want[#want + 1] = ("VALUE key%d %d %d\r\n%s\r\n"):format(i, i, #v, v)
    end
    assert(c:send(req))
    -- one line of 110 keys: 200 pieces of reply and END, in one read here
    local all = "get " .. table.concat(keys, " ") .. "\r\n"
    want = table.concat(want) .. "END\r\n"
    assert(c:send(all))
    assert.is_true(c:receive(#want) == want, "the get of 100 values differs")
    -- gets: the same with each item's unique; uniques grow one per set
    assert(c:send("gets" .. all:sub(4)))
    local first
    for i = 1, 100 do
      local line = assert(c:receive("*l"))
      local flags, bytes, unique = line:match("^VALUE key" .. i .. " (%d+) (%d+) (%d+)$")
      assert.truthy(unique, line)
      assert.equal(i, tonumber(flags))
      first = first or tonumber(unique)
      assert.equal(first + i - 1, tonumber(unique))
      assert.equal(("v%d"):format(i):rep(i % 7), c:receive(tonumber(bytes) + 2):sub(1, -3))
    end
    expect(c, "END\r\n")
    c:close()
    stop(p)
  end)

  it("sends nothing for noreply, and does the command", function()
    local p = start()
    local c = connect(p)
    assert(c:send("set a 1 0 1 noreply\r\na\r\nadd a 0 0 1 noreply\r\nb\r\nadd b 0 0 1 noreply\r\nb\r\n"
      .. "replace b 2 0 2 noreply\r\nbb\r\nappend a 0 0 1 noreply\r\nz\r\nprepend a 0 0 1 noreply\r\ny\r\n"
      .. "set n 0 0 1 noreply\r\n5\r\nincr n 10 noreply\r\ndecr n 3 noreply\r\n"
      .. "set d 0 0 1 noreply\r\nd\r\ndelete d noreply\r\ntouch a 100 noreply\r\n"
      .. "incr a 1 noreply\r\nset a abc 0 1 noreply\r\nverbosity 1 noreply\r\n"))
    exchange(c, "get a b n d\r\n",
      "VALUE a 1 3\r\nyaz\r\nVALUE b 2 2\r\nbb\r\nVALUE n 0 2\r\n12\r\nEND\r\n")
    local unique = cas_of(c, "a", "yaz")
    assert(c:send(("cas a 0 0 1 %s noreply\r\nc\r\ncas a 0 0 1 %s noreply\r\nd\r\nflush_all noreply\r\n")
      :format(unique, unique)))
    exchange(c, "get a\r\n", "END\r\n")
    c:close()
    stop(p)
  end)

  it("settles cas conflicts between two clients", function()
    local p = start()
    local a, b = connect(p), connect(p)
    exchange(a, "cas k 0 0 1 1\r\nx\r\n", "NOT_FOUND\r\n")
    exchange(a, "set k 0 0 2\r\nv1\r\n", "STORED\r\n")
    local ua = cas_of(a, "k", "v1")
    local ub = cas_of(b, "k", "v1")
    assert.equal(ua, ub)
    exchange(b, ("cas k 0 0 2 %s\r\nv2\r\n"):format(ub), "STORED\r\n")
    exchange(a, ("cas k 0 0 2 %s\r\nv3\r\n"):format(ua), "EXISTS\r\n") -- b came first
    exchange(a, "get k\r\n", "VALUE k 0 2\r\nv2\r\nEND\r\n")
    local u2 = cas_of(a, "k", "v2")
    assert.are_not.equal(ua, u2)
    -- every change makes a new unique: append, incr, touch does not
    exchange(b, "append k 0 0 1\r\nx\r\n", "STORED\r\n")
    exchange(a, ("cas k 0 0 2 %s\r\nv4\r\n"):format(u2), "EXISTS\r\n")
    local u3 = cas_of(a, "k", "v2x")
    exchange(b, "touch k 100\r\n", "TOUCHED\r\n")
    exchange(a, ("cas k 5 0 2 %s\r\nv4\r\n"):format(u3), "STORED\r\n")
    exchange(b, "gets k q\r\n", "VALUE k 5 2 " .. (cas_of(a, "k", "v4")) .. "\r\nv4\r\nEND\r\n")
    -- uniques grow, one per item stored
    exchange(a, "set x 0 0 1\r\n1\r\nset y 0 0 1\r\n2\r\n", "STORED\r\nSTORED\r\n")
    assert.equal(tonumber(cas_of(a, "x", "1")) + 1, tonumber(cas_of(a, "y", "2")))
    a:close(); b:close()
    stop(p)
  end)

  it("expires items: 0 never, -1 at once, relative seconds, Unix times", function()
    local p = start()
    local c = connect(p)
    local t = os.time()
    exchange(c, "set never 0 0 1\r\na\r\nset gone 0 -1 1\r\nb\r\nset later 0 100 1\r\nc\r\n"
      .. ("set past 0 %d 1\r\nd\r\nset future 0 %d 1\r\ne\r\n"):format(t - 100, t + 100),
      ("STORED\r\n"):rep(5))
    exchange(c, "get never gone later past future\r\n",
      "VALUE never 0 1\r\na\r\nVALUE later 0 1\r\nc\r\nVALUE future 0 1\r\ne\r\nEND\r\n")
    -- add takes the place of an expired item
    exchange(c, "add gone 0 0 1\r\nB\r\nget gone\r\n", "STORED\r\nVALUE gone 0 1\r\nB\r\nEND\r\n")
    -- touch and gat give a new exptime
    exchange(c, "touch later -1\r\nget later\r\n", "TOUCHED\r\nEND\r\n")
    exchange(c, "gat -1 future never\r\n", "VALUE future 0 1\r\ne\r\nVALUE never 0 1\r\na\r\nEND\r\n")
    exchange(c, "get future never\r\n", "END\r\n")
    exchange(c, "touch never 0\r\ntouch nope 10\r\n", "NOT_FOUND\r\nNOT_FOUND\r\n")
    -- exptime 1: gone once a second has passed (however long that takes here)
    exchange(c, "set soon 0 1 1\r\ns\r\nset stays 0 1000 1\r\nt\r\n", "STORED\r\nSTORED\r\n")
    assert.is_true(H.wait_for(function()
      assert(c:send("get soon\r\n"))
      local line = c:receive("*l")
      if line == "END" then return true end
      expect(c, "s\r\nEND\r\n")
      glisten.sleep(0.2)
    end, LONG))
    exchange(c, "get stays\r\n", "VALUE stays 0 1\r\nt\r\nEND\r\n")
    assert.equal("2", stats(c).curr_items) -- "gone" added again, and "stays"
    c:close()
    stop(p)
  end)

  it("flushes at once, or after a delay that a later flush_all replaces", function()
    local p = start()
    local c = connect(p)
    exchange(c, "set a 0 0 1\r\na\r\nflush_all\r\nget a\r\n", "STORED\r\nOK\r\nEND\r\n")
    exchange(c, "set a 0 0 1\r\na\r\nflush_all 100\r\nget a\r\n", "STORED\r\nOK\r\nVALUE a 0 1\r\na\r\nEND\r\n")
    -- a flush in 1 s replaced by one in 100 s: still there 2.5 s later
    exchange(c, "flush_all 1\r\nflush_all 100 noreply\r\n", "OK\r\n")
    glisten.sleep(2.5)
    exchange(c, "get a\r\n", "VALUE a 0 1\r\na\r\nEND\r\n")
    -- and one in 1 s that stays comes, for items stored before it runs
    exchange(c, "flush_all 1\r\nset b 0 0 1\r\nb\r\n", "OK\r\nSTORED\r\n")
    assert.is_true(H.wait_for(function()
      assert(c:send("get a b\r\n"))
      local line = c:receive("*l")
      if line == "END" then return true end
      local rest = c:receive("*l")
      while rest ~= "END" do rest = assert(c:receive("*l")) end
      glisten.sleep(0.2)
    end, LONG))
    exchange(c, "flush_all abc\r\nflush_all 0\r\n", "CLIENT_ERROR invalid exptime argument\r\nOK\r\n")
    local s = stats(c)
    assert.equal("0", s.curr_items)
    assert.equal("0", s.bytes)
    c:close()
    stop(p)
  end)

  it("counts with incr and decr as 64-bit unsigned numbers", function()
    local p = start()
    local c = connect(p)
    exchange(c, "set n 3 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr n 18446744073709551615\r\n"
      .. "incr n 1\r\nincr n 18446744073709551615\r\nincr n 18446744073709551615\r\ndecr n 1\r\nget n\r\n",
      "STORED\r\n15\r\n0\r\n18446744073709551615\r\n0\r\n18446744073709551615\r\n"
      .. "18446744073709551614\r\n18446744073709551613\r\nVALUE n 3 20\r\n18446744073709551613\r\nEND\r\n")
    exchange(c, "incr n 18446744073709551616\r\nincr n -1\r\nincr n x\r\nincr nope 1\r\ndecr nope 1\r\nincr n\r\n",
      "CLIENT_ERROR invalid numeric delta argument\r\nCLIENT_ERROR invalid numeric delta argument\r\n"
      .. "CLIENT_ERROR invalid numeric delta argument\r\nNOT_FOUND\r\nNOT_FOUND\r\nERROR\r\n")
    for _, v in ipairs { "abc", "12a", "", "-1", "18446744073709551616" } do
      exchange(c, ("set s 0 0 %d\r\n%s\r\nincr s 1\r\ndecr s 1\r\n"):format(#v, v),
        "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        .. "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", v)
    end
    exchange(c, "set s 0 0 4\r\n 12 \r\nincr s 1\r\n", "STORED\r\n13\r\n")
    c:close()
    stop(p)
  end)

  it("stores values with any bytes, empty ones, and keys of 250 bytes", function()
    local p = start()
    local c = connect(p)
    local v = "a\r\nEND\r\n\0\255" .. H.random_bytes(5000) .. "VALUE x 0 1\r\n"
    local k250 = ("k"):rep(250)
    assert(c:send(("set bin 7 0 %d\r\n%s\r\nset empty 0 0 0\r\n\r\nset %s 0 0 1\r\nx\r\n"):format(#v, v, k250)))
    expect(c, "STORED\r\nSTORED\r\nSTORED\r\n")
    assert(c:send("get bin empty " .. k250 .. "\r\n"))
    assert.equal("VALUE bin 7 " .. #v .. "\r\n", c:receive("*L"))
    assert.is_true(c:receive(#v + 2) == v .. "\r\n")
    expect(c, "VALUE empty 0 0\r\n\r\nVALUE " .. k250 .. " 0 1\r\nx\r\nEND\r\n")
    -- numbers with leading zeros are read as numbers
    exchange(c, "set z 007 0 03\r\nabc\r\nget z\r\n", "STORED\r\nVALUE z 7 3\r\nabc\r\nEND\r\n")
    -- append and prepend keep flags and bytes
    exchange(c, "append bin 0 0 2\r\n\r\n\r\nprepend bin 0 0 1\r\n\0\r\n", "STORED\r\nSTORED\r\n")
    local w = "\0" .. v .. "\r\n"
    assert(c:send("get bin\r\n"))
    assert.equal("VALUE bin 7 " .. #w .. "\r\n", c:receive("*L"))
    assert.is_true(c:receive(#w + 2) == w .. "\r\n")
    expect(c, "END\r\n")
    -- a get of values larger than one part of a reply, and with a key too long
    local parts, want = {}, { "VALUE bin 7 " .. #w .. "\r\n" .. w .. "\r\n" }
    for i = 1, 4 do
      parts[i] = H.random_bytes(200 * 1024)
      exchange(c, ("set p%d 0 0 %d\r\n%s\r\n"):format(i, #parts[i], parts[i]), "STORED\r\n")
      want[#want + 1] = ("VALUE p%d 0 %d\r\n%s\r\n"):format(i, #parts[i], parts[i])
    end
    want = table.concat(want) .. "END\r\n"
    assert(c:send("get bin p1 p2 nope p3 p4\r\n"))
    assert.is_true(c:receive(#want) == want, "the get of large values differs")
    exchange(c, "get p1 p2 p3 p4 " .. ("k"):rep(251) .. "\r\n", "CLIENT_ERROR bad command line format\r\n")
    -- the largest value (1 MiB less 1 KiB), back byte for byte
    local big = H.random_bytes(1024 * 1024 - 1024)
    assert(c:send(("set big 0 0 %d\r\n%s\r\n"):format(#big, big)))
    expect(c, "STORED\r\n")
    assert(c:send("get big\r\n"))
    assert.equal("VALUE big 0 " .. #big .. "\r\n", c:receive("*L"))
    assert.is_true(c:receive(#big + 2) == big .. "\r\n")
    expect(c, "END\r\n")
    c:close()
    stop(p)
  end)

  it("answers bad commands as memcached does, and keeps the connection", function()
    local p = start()
    local c = connect(p)
    local k251 = ("k"):rep(251)
    local BAD = "CLIENT_ERROR bad command line format\r\n"
    for _, case in ipairs {
      { "bogus\r\n", "ERROR\r\n" }, { "\r\n", "ERROR\r\n" }, { "GET a\r\n", "ERROR\r\n" },
      { "get\r\n", "ERROR\r\n" }, { "gets\r\n", "ERROR\r\n" }, { "set k 0 0\r\n", "ERROR\r\n" },
      { "set k 0 0 1 noreply extra\r\n", "ERROR\r\n" }, { "cas k 0 0 1\r\n", "ERROR\r\n" },
      { "delete\r\n", "ERROR\r\n" }, { "touch k\r\n", "ERROR\r\n" }, { "verbosity\r\n", "ERROR\r\n" },
      { "stats noreply\r\n", "ERROR\r\n" },
      -- a bad number, a key too long: the data block is not read, so it
      -- is taken for a command, as memcached does
      { "set k abc 0 1\r\nx\r\n", BAD .. "ERROR\r\n" }, { "set k -1 0 1\r\nx\r\n", BAD .. "ERROR\r\n" },
      { "set k 0 0 -1\r\n", BAD }, { "set k 4294967296 0 1\r\nx\r\n", BAD .. "ERROR\r\n" },
      { "cas k 0 0 1 abc\r\nx\r\n", BAD .. "ERROR\r\n" },
      { ("set %s 0 0 1\r\nx\r\n"):format(k251), BAD .. "ERROR\r\n" },
      { ("get a %s\r\n"):format(k251), BAD }, { ("delete %s\r\n"):format(k251), BAD },
      { "delete a b\r\n", "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n" },
      { "touch k abc\r\n", "CLIENT_ERROR invalid exptime argument\r\n" },
      { "gat abc k\r\n", "CLIENT_ERROR invalid exptime argument\r\n" },
      { "verbosity x\r\n", BAD }, { "verbosity 1\r\n", "OK\r\n" },
      -- the data block is not followed by \r\n: refused, nothing stored
      { "set k 0 0 3\r\nabcde\r\nget k\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n" },
      { "set k 0 0 1\r\nab\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\n" },
    } do
      exchange(c, case[1], case[2])
      exchange(c, "version\r\n", "VERSION 1.6.0-glisten-lua\r\n", "after " .. case[1])
    end
    c:close()
    still_serving(p)
    stop(p)
  end)

  it("refuses a value past the limit, reads its data block, and drops the old value of a set", function()
    local p = start()
    local c = connect(p)
    local big = ("x"):rep(1024 * 1024 - 1023)
    exchange(c, "set k 0 0 1\r\nv\r\nadd k 0 0 " .. #big .. "\r\n" .. big .. "\r\nget k\r\n",
      "STORED\r\nSERVER_ERROR object too large for cache\r\nVALUE k 0 1\r\nv\r\nEND\r\n")
    exchange(c, "set k 0 0 " .. #big .. "\r\n" .. big .. "\r\nget k\r\n",
      "SERVER_ERROR object too large for cache\r\nEND\r\n")
    -- 8 MiB said, sent, and read in pieces; then the next command
    local huge = H.random_bytes(8 * 1024 * 1024)
    glisten.spawn(function()
      c:send(("set h 0 0 %d noreply\r\n"):format(#huge))
      c:send(huge)
      c:send("\r\nget h\r\n")
    end)
    expect(c, "END\r\n")
    -- append past the limit is not stored
    local half = ("y"):rep(600 * 1024)
    exchange(c, ("set a 0 0 %d\r\n%s\r\nappend a 0 0 %d\r\n%s\r\n"):format(#half, half, #half, half),
      "STORED\r\nNOT_STORED\r\n")
    assert.equal("3", stats(c).store_too_large)
    c:close()
    still_serving(p)
    stop(p)
  end)

  it("closes a connection whose command line passes 64 KiB, and serves the others", function()
    local p = start()
    local other = connect(p)
    exchange(other, "set a 0 0 1\r\na\r\n", "STORED\r\n")
    -- 200 keys of 250 bytes on one line (50 KB) are fine
    local keys = {}
    for i = 1, 200 do keys[i] = ("%03d"):format(i) .. ("k"):rep(247) end
    exchange(other, "get " .. table.concat(keys, " ") .. " a\r\n", "VALUE a 0 1\r\na\r\nEND\r\n")
    -- a get of 80 KB, and 70 KB of a line that is no command: the replies
    -- before it go out, then the connection closes without a word, as
    -- memcached 1.6 closes one whose line is too long and not a get
    for _, line in ipairs { "get " .. ("k "):rep(40000), ("x"):rep(70000) } do
      local c = connect(p)
      c:send("get a\r\n" .. line .. "\r\nversion\r\n")
      expect(c, "VALUE a 0 1\r\na\r\nEND\r\n")
      H.assert_closed(c)
      c:close()
    end
    exchange(other, "get a\r\n", "VALUE a 0 1\r\na\r\nEND\r\n")
    exchange(other, "quit\r\n", "")
    H.assert_closed(other)
    other:close()
    still_serving(p)
    stop(p)
  end)

  it("stores nothing of a client that leaves in the middle of a data block", function()
    local p = start()
    local watcher = connect(p)
    for _, reset in ipairs { false, true } do
      local c = connect(p)
      c:send("set k 0 0 100\r\n" .. ("z"):rep(50))
      if reset then c:setoption("linger", { on = true, timeout = 0 }) end
      c:close()
      -- the server saw it go: one connection left, the watcher
      assert.is_true(H.wait_for(function() return stats(watcher).curr_connections == "1" end, LONG))
      exchange(watcher, "get k\r\n", "END\r\n")
    end
    local s = stats(watcher)
    assert.equal("0", s.curr_items)
    assert.equal("3", s.total_connections)
    watcher:close()
    still_serving(p)
    stop(p)
  end)

  it("counts in stats, and resets them", function()
    local p = start()
    local c = connect(p)
    exchange(c, "set a 0 0 1\r\na\r\nset b 0 0 2\r\nbb\r\nget a\r\nget x y\r\ndelete b\r\ndelete b\r\n"
      .. "set n 0 0 1\r\n1\r\nincr n 1\r\ndecr m 1\r\n",
      "STORED\r\nSTORED\r\nVALUE a 0 1\r\na\r\nEND\r\nEND\r\nDELETED\r\nNOT_FOUND\r\nSTORED\r\n2\r\nNOT_FOUND\r\n")
    local s = stats(c)
    assert.equal(tostring(p.pid), s.pid)
    assert.equal("1.6.0-glisten-lua", s.version)
    assert.equal("3", s.cmd_get)
    assert.equal("1", s.get_hits)
    assert.equal("2", s.get_misses)
    assert.equal("3", s.cmd_set)
    assert.equal("4", s.total_items) -- incr stores a new item
    assert.equal("2", s.curr_items)
    assert.equal("1", s.delete_hits)
    assert.equal("1", s.delete_misses)
    assert.equal("1", s.incr_hits)
    assert.equal("1", s.decr_misses)
    assert.equal("1", s.curr_connections)
    assert.equal(tostring(64 * 1024 * 1024), s.limit_maxbytes)
    assert.truthy(tonumber(s.uptime))
    exchange(c, "stats reset\r\n", "RESET\r\n")
    s = stats(c)
    assert.equal("0", s.get_hits)
    assert.equal("2", s.curr_items)
    assert.equal("1", s.curr_connections)
    exchange(c, "stats nonsense\r\n", "ERROR\r\n")
    c:close()
    stop(p)
  end)

  it("evicts the items stored longest ago and not read since, within its memory", function()
    local p = start { prefix = "MEMCACHED_MEMORY_MB=1" }
    local c = connect(p)
    local v = ("v"):rep(10 * 1024)
    exchange(c, "set cold 0 0 1\r\nc\r\nset hot 0 0 1\r\nh\r\n", "STORED\r\nSTORED\r\n")
    -- one key written over 400 times (4 MB) evicts nothing: only the
    -- newest value counts
    local req = {}
    for _ = 1, 400 do req[#req + 1] = ("set same 0 0 %d\r\n%s\r\n"):format(#v, v) end
    exchange(c, table.concat(req), ("STORED\r\n"):rep(400))
    assert.equal("0", stats(c).evictions)
    -- 300 items of 10 KB in 1 MiB, "hot" read all along
    for i = 1, 300 do
      exchange(c, ("set k%d 0 0 %d\r\n%s\r\n"):format(i, #v, v), "STORED\r\n")
      if i % 10 == 0 then exchange(c, "get hot\r\n", "VALUE hot 0 1\r\nh\r\nEND\r\n") end
    end
    local s = stats(c)
    assert.is_true(tonumber(s.bytes) <= 1024 * 1024, s.bytes)
    assert.is_true(tonumber(s.evictions) > 200, s.evictions)
    assert.is_true(tonumber(s.curr_items) <= 1024 * 1024 // #v, s.curr_items)
    exchange(c, "get cold k1 hot k300\r\n", ("VALUE hot 0 1\r\nh\r\nVALUE k300 0 %d\r\n%s\r\nEND\r\n"):format(#v, v))
    c:close()
    stop(p)
  end)

  it("refuses to run on more than one worker, or with a memory below 1 MiB, saying why", function()
    local rc, _, err = H.run("-w 2 scripts/memcached.lua 0", LONG)
    assert.equal(1, rc)
    assert.matches("one worker", err)
    -- and a memory it cannot use
    local out, ok = H.peer(("env MEMCACHED_MEMORY_MB=0 %s scripts/memcached.lua 0"):format(H.quote(H.bin)))
    assert.is_falsy(ok)
    assert.matches("MEMCACHED_MEMORY_MB must be a number of MiB, 1 or more", out)
  end)
end)
