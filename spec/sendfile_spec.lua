-- sock:sendfile: a file (a path or an open Lua file) sent with send's
-- results, backpressure, timeout and turn; files of several MiB checked end
-- to end; the reference's static file server, with curl as its client.
local glisten = H.glisten

local stream, flood, read_stream = H.stream, H.flood, H.read_stream
local BLOCK = 65536
local MiB = 1024 * 1024

-- Every wait here only bounds a hang; a busy machine must never reach it.
local LONG = 60

-- Runs fn(server_socket, client_socket) over a fresh loopback pair made
-- with the low-level listen/accept flow.
local function pair(fn, opts)
  local l = assert(glisten.listen(0, opts))
  local c = H.connect(l.port, nil, LONG)
  local s = assert(l:accept(5))
  l:close()
  s:settimeout(LONG)
  local ok, err = pcall(fn, s, c)
  s:close(); c:close()
  if not ok then error(err, 0) end
end

local nfile = 0
-- A new file in the spec's temporary folder holding data; returns its path.
local function tmpfile(data)
  nfile = nfile + 1
  return H.writefile(("%s/sendfile_spec%d"):format(H.tmpdir, nfile), data or "")
end

-- The last figure of /proc/sys/net/ipv4/NAME: the most the kernel gives a
-- TCP socket's buffer.
local function kernel_max(name)
  local f = io.open("/proc/sys/net/ipv4/" .. name)
  local max = f and tonumber(f:read("a"):match("(%d+)%s*$"))
  if f then f:close() end
  return max or 8 * MiB
end

-- A file of the numbered stream (spec/stream.lua) larger than all a
-- loopback connection's buffers can take: the sender's and the receiver's
-- at their largest, and 4 MiB more. Made once.
local big_path, big_size
local function big_file()
  if not big_path then
    big_size = kernel_max("tcp_wmem") + kernel_max("tcp_rmem") + 4 * MiB
    big_path = tmpfile(stream(1, big_size))
  end
  return big_path, big_size
end

-- Bytes this process has written to its sockets so far.
local function written() return glisten.stats().bytes_out end

-- The open descriptors of this process (ls runs in another).
local runner_pid = tonumber(H.readfile("/proc/self/stat"):match("^(%d+)"))
local function open_fds()
  local p = io.popen("ls /proc/" .. runner_pid .. "/fd")
  local n = select(2, p:read("a"):gsub("\n", ""))
  p:close()
  return n
end

-- The SHA-256 of a file, from sha256sum (run without the sanitizers'
-- preload, as every peer here).
local function sha256(path)
  local p = io.popen("env -u LD_PRELOAD sha256sum " .. H.quote(path))
  local sum = p:read("a"):match("^(%x+)")
  p:close()
  return assert(sum, "sha256sum gave nothing for " .. path)
end

describe("socket:sendfile", function()
  after_each(H.no_leaks)

  it("sends a file, or count bytes of it from offset, and returns how many", function()
    local data = stream(1, 300000)
    local path = tmpfile(data)
    pair(function(s, c)
      local out0 = written()
      local want = data .. data:sub(11) .. data:sub(6, 25) .. data:sub(-3)
      local got
      glisten.spawn(function() got = { c:receive(#want) } end)
      assert.equal(#data, s:sendfile(path))
      assert.equal(#data - 10, s:sendfile(path, 10))
      assert.equal(20, s:sendfile(path, 5, 20))
      assert.equal(3, s:sendfile(path, #data - 3, 100)) -- the file ends first
      assert.equal(0, s:sendfile(path, #data))          -- at the end
      assert.equal(0, s:sendfile(path, #data + 5))      -- past it
      assert.equal(0, s:sendfile(path, #data + 5, 10))
      assert.equal(0, s:sendfile(path, 0, 0))
      assert.equal(0, s:sendfile(tmpfile("")))
      assert.is_true(H.wait_for(function() return got end, LONG))
      assert.is_true(got[1] == want, "the bytes that arrived are not the file's")
      assert.equal(#want, written() - out0) -- counted in stats().bytes_out
      assert.same({ nil, "timeout", "" }, { c:receive(1, 0.1) }) -- nothing more
    end)
  end)

  it("takes an open file: from its start unless told, its position kept, what was written flushed", function()
    local data = stream(1, 100000)
    local path = tmpfile(data)
    pair(function(s, c)
      local f = assert(io.open(path, "rb"))
      assert.equal(data:sub(1, 7), f:read(7))
      local got
      glisten.spawn(function() got = c:receive(#data + 50 + 5) end)
      assert.equal(#data, s:sendfile(f))
      assert.equal(50, s:sendfile(f, 1000, 50))
      assert.equal(7, f:seek())                -- its position is its own
      assert.equal(data:sub(8, 10), f:read(3)) -- and it is still open
      f:close()
      local w = assert(io.open(tmpfile(), "w+b"))
      w:write("hello") -- in the handle's buffer, not yet in the file
      assert.equal(5, s:sendfile(w))
      w:close()
      assert.is_true(H.wait_for(function() return got end, LONG))
      assert.is_true(got == data .. data:sub(1001, 1050) .. "hello", "wrong bytes arrived")
    end)
  end)

  it("raises on misuse: a bad file, offset or count, a closed file", function()
    local path = tmpfile("abc")
    pair(function(s)
      local function raises(pattern, ...)
        local ok, err = pcall(s.sendfile, s, ...)
        assert.is_false(ok)
        assert.matches(pattern, err)
      end
      raises("string or file expected, got table", {})
      raises("string or file expected, got no value")
      raises("string or file expected, got nil", nil)
      raises("string or file expected, got number", 42)
      raises("path contains a zero byte", path .. "\0.txt")
      raises("offset must be >= 0", path, -1)
      raises("byte count must be >= 0", path, 0, -1)
      raises("number has no integer representation", path, 1.5)
      raises("number has no integer representation", path, 0, 0.5)
      local f = assert(io.open(path, "rb"))
      f:close()
      raises("attempt to use a closed file", f)
      local ok, err = pcall(function() return s:sendfile({}) end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'sendfile'", err) -- self not counted
      assert.equal(3, s:sendfile(path)) -- the socket is fine
    end)
  end)

  it('returns nil, "PATH: MESSAGE", 0 for a file it cannot open or read; the socket goes on', function()
    pair(function(s, c)
      local missing = H.tmpdir .. "/no such file"
      assert.same({ nil, missing .. ": No such file or directory", 0 }, { s:sendfile(missing) })
      assert.same({ nil, H.tmpdir .. ": Is a directory", 0 }, { s:sendfile(H.tmpdir) })
      local d = assert(io.open(H.tmpdir, "rb")) -- a folder opens, and cannot be read
      assert.same({ nil, "Is a directory", 0 }, { s:sendfile(d) })
      d:close()
      assert.equal(2, s:send("ok"))
      assert.equal("ok", c:receive(2))
      assert.same({ nil, "timeout", "" }, { c:receive(1, 0.1) })
    end)
  end)

  it("sends over a Unix socket too, and to one whose peer left", function()
    local data = stream(1, 3 * MiB)
    local path = tmpfile(data)
    local sock = H.tmpdir .. "/sendfile.sock"
    local l = assert(glisten.listen("unix:" .. sock))
    local c = H.connect_unix(sock, LONG)
    local s = assert(l:accept(5))
    l:close()
    s:settimeout(LONG)
    local got
    glisten.spawn(function() got = c:receive(#data) end)
    assert.equal(#data, s:sendfile(path))
    assert.is_true(H.wait_for(function() return got end, LONG))
    assert.is_true(got == data, "the bytes are not the file's")
    c:close()
    local n, err, sent = s:sendfile(path)
    assert.is_nil(n)
    assert.equal("closed", err)
    assert.is_true(sent < #data)
    s:close()
  end)

  it('returns nil, "closed", 0 on a closed socket', function()
    local path = tmpfile("abc")
    pair(function(s)
      s:close()
      assert.same({ nil, "closed", 0 }, { s:sendfile(path) })
    end)
  end)

  -- sendfile(2), unlike a send with MSG_NOSIGNAL, raises SIGPIPE on a
  -- socket whose peer is gone, which a stock lua5.4 does not ignore: it
  -- would kill the process. A child process sends to a peer that closed,
  -- so the verdict is its output, not a dead runner.
  it('returns nil, "closed", n to a peer that closed, and never raises SIGPIPE', function()
    local path = big_file()
    local child = H.script(([[
      local glisten = require "glisten"
      local l = assert(glisten.listen(0))
      local c = assert(glisten.connect("127.0.0.1", l.port, 30))
      local s = assert(l:accept(30))
      c:close()
      s:settimeout(30)
      for _ = 1, 3 do
        local n, err, sent = s:sendfile(%q)
        io.write(tostring(n), " ", tostring(err), " ", tostring(sent), "\n")
      end
      s:close(); l:close()
      io.write("done\n")
    ]]):format(path))
    local out = tmpfile()
    local ok, how, code = os.execute(("LUA_CPATH=%s timeout -s KILL %d %s %s > %s 2>&1"):format(
      H.quote(H.build .. "/?.so;;"), LONG, os.getenv("GLISTEN_LUA") or "lua5.4", child, out))
    local text = H.readfile(out) or ""
    assert(ok, ("the child ended by %s %s: %q"):format(how, code, text))
    local lines = {}
    for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal(4, #lines, text)
    for i = 1, 3 do assert.matches("^nil closed %d+$", lines[i]) end
    assert.equal("done", lines[4])
  end)

  -- A file larger than every buffer loopback has, to a peer that does not
  -- read: the send must wait, then give up at its timeout with the bytes it
  -- took, all of which arrive, and nothing after them.
  it('gives up with nil, "timeout", n on a peer that does not read; those n bytes arrive', function()
    local path, size = big_file()
    pair(function(s, c)
      local res
      s:settimeout(0.5)
      glisten.spawn(function() res = { s:sendfile(path) } end)
      assert.is_true(H.wait_for(function() return res end, LONG), "the send never gave up")
      local n, err, taken = res[1], res[2], res[3]
      assert.is_nil(n, "the kernel took the whole file: no backpressure")
      assert.equal("timeout", err)
      assert.is_true(taken > 0 and taken < size, "taken: " .. tostring(taken))
      read_stream(c, 0, taken)
      assert.same({ nil, "timeout", "" }, { c:receive(1, 0.2) })
    end)
  end)

  -- A file cut short while its send waits behind a peer that does not read
  -- (a flood filled its buffers): once the peer reads, the send ends where
  -- the file now ends, with the bytes it sent, instead of waiting for
  -- bytes that will never come.
  it("ends at the file's end when the file is cut short while it is sent", function()
    local size, cut = 4 * MiB, 3 * MiB + 5
    local path = tmpfile(stream(1, size))
    pair(function(s, c)
      local taken, err = flood(s, BLOCK, 0.2)
      assert.equal("timeout", err)
      s:settimeout(LONG)
      local res
      glisten.spawn(function() res = { s:sendfile(path) } end)
      glisten.sleep(0) -- it starts, and waits
      assert.is_nil(res)
      assert(os.execute(("env -u LD_PRELOAD truncate -s %d %s"):format(cut, H.quote(path))))
      read_stream(c, 0, taken)
      local got = assert(c:receive(cut))
      assert.is_true(got == stream(1, cut), "the bytes are not the file's")
      assert.is_true(H.wait_for(function() return res end, LONG))
      assert.same({ cut }, res)
      assert.same({ nil, "timeout", "" }, { c:receive(1, 0.2) })
    end)
  end)

  -- The peer reads a little of a file the send is waiting to write, then
  -- closes with the rest unread (a reset): the send ends with "closed" and
  -- the bytes it took, which are more than it had when it began to wait.
  it('returns nil, "closed", n when the peer closes in the middle of the file', function()
    local path, size = big_file()
    local first, second, mark, reason
    H.serving({
      handler = function(_, state)
        local s = state.socket
        s:settimeout(0.5)
        first = { s:sendfile(path) }
        s:settimeout(LONG)
        mark = written()
        second = { s:sendfile(path, first[3]) }
      end,
      with_close = function(_, r) reason = r end,
    }, function(srv)
      local c = H.connect(srv.port, nil, LONG)
      c:send("go")
      assert.is_true(H.wait_for(function() return first end, LONG))
      assert.equal("timeout", first[2], "the kernel took the whole file: no backpressure")
      read_stream(c, 0, MiB)
      -- the send has taken more since the peer read: it is mid-file
      assert.is_true(H.wait_for(function() return written() > mark end, LONG))
      c:close()
      assert.is_true(H.wait_for(function() return second end, LONG))
    end)
    assert.is_nil(second[1])
    assert.equal("closed", second[2])
    assert.is_true(second[3] > 0, "nothing taken after the peer read")
    assert.is_true(first[3] + second[3] < size)
    assert.equal("closed", reason)
  end)

  -- Four sends at once behind a peer that does not read (a flood filled
  -- its buffers): a file, a string, a Lua file (closed by another coroutine
  -- while its send waits), a string. Each must arrive whole, none cut into
  -- another: a send's turn holds for a whole file, and a file waits for a
  -- string's turn. Each is larger than one resume of a send takes of a
  -- file (1 MiB), so the first must pause at least once.
  it("never interleaves with other sends, from several coroutines at once", function()
    local SIZE = 3 * MiB
    local a = tmpfile(("a"):rep(SIZE))
    local c3 = tmpfile(("c"):rep(SIZE))
    local refused, res = nil, {}
    H.serving({
      max_output = 256 * 1024,
      handler = function(_, state)
        local s = state.socket
        local taken, err = flood(s, BLOCK, 0.2)
        refused = { taken = taken, err = err }
        s:settimeout(LONG)
        local fc = assert(io.open(c3, "rb"))
        glisten.spawn(function() res.a = { s:sendfile(a) } end)
        glisten.spawn(function() res.b = { s:send(("b"):rep(SIZE)) } end)
        glisten.spawn(function() res.c = { s:sendfile(fc) } end)
        glisten.spawn(function() fc:close() end)
        glisten.spawn(function() res.d = { s:send(("d"):rep(SIZE)) } end)
      end,
    }, function(srv)
      local c = H.connect(srv.port, nil, LONG)
      c:send("go")
      assert.is_true(H.wait_for(function() return refused end, LONG), "no send was ever refused")
      assert.equal("timeout", refused.err)
      read_stream(c, 0, refused.taken)
      local got = assert(c:receive(4 * SIZE))
      local runs = {}
      for run in got:gmatch("a+") do runs[#runs + 1] = "a" .. #run end
      for run in got:gmatch("b+") do runs[#runs + 1] = "b" .. #run end
      for run in got:gmatch("c+") do runs[#runs + 1] = "c" .. #run end
      for run in got:gmatch("d+") do runs[#runs + 1] = "d" .. #run end
      assert.same({ "a" .. SIZE, "b" .. SIZE, "c" .. SIZE, "d" .. SIZE }, runs)
      assert.is_true(H.wait_for(function() return res.d end, LONG))
      c:close()
    end)
    assert.same({ { SIZE }, { SIZE }, { SIZE }, { SIZE } }, { res.a, res.b, res.c, res.d })
  end)

  -- Several MiB of random bytes from the file handle's send and from a
  -- path's, to a peer reading in small pieces, so the socket fills again
  -- and again; their checksums must match the file's.
  it("sends several MiB to a slow reader, every byte checked (SHA-256)", function()
    local size = 8 * MiB + 12345
    local path = tmpfile(H.random_bytes(size))
    local out = tmpfile()
    pair(function(s, c)
      local done
      glisten.spawn(function()
        local w = assert(io.open(out, "wb"))
        local got = 0
        while got < 2 * size - 1000 do
          local piece = assert(c:receive(math.min(4096, 2 * size - 1000 - got)))
          w:write(piece)
          got = got + #piece
        end
        w:close()
        done = true
      end)
      local f = assert(io.open(path, "rb"))
      assert.equal(size, s:sendfile(f))
      f:close()
      assert.equal(size - 1000, s:sendfile(path, 1000))
      assert.is_true(H.wait_for(function() return done end, LONG))
    end)
    local both = tmpfile(H.readfile(path) .. H.readfile(path):sub(1001))
    assert.equal(sha256(both), sha256(out))
  end)

  -- The file's descriptor is the send's own, closed however the send ends:
  -- done, failed, timed out, the peer gone, or cut short by a shutdown.
  it("closes the file however the send ends", function()
    local path = big_file()
    collectgarbage()
    local before = open_fds()
    pair(function(s, c)
      glisten.spawn(function() c:receive(10) end)
      assert.equal(10, s:sendfile(path, 0, 10))
      assert.is_nil(s:sendfile(H.tmpdir))
      s:settimeout(0.3)
      local res
      glisten.spawn(function() res = { s:sendfile(path) } end)
      assert.is_true(H.wait_for(function() return res end, LONG), "the send never gave up")
      assert.equal("timeout", res[2])
    end)
    pair(function(s, c)
      c:close()
      assert.equal("closed", select(2, s:sendfile(path)))
    end)
    local waiting
    local srv = assert(glisten.serve({
      port = 0,
      handler = function(_, state)
        waiting = true -- seen once the send below waits: the peer never reads
        state.socket:sendfile(path)
      end,
    }))
    local c = H.connect(srv.port, nil, LONG)
    c:send("go")
    assert.is_true(H.wait_for(function() return waiting end, LONG))
    srv:close(0) -- cuts the waiting send short
    assert.is_true(H.wait_for(function() return srv.connections == 0 end, LONG))
    c:close()
    local now
    H.wait_for(function()
      collectgarbage()
      now = open_fds()
      return glisten.stats().connections == 0 and now == before
    end, LONG)
    assert.equal(before, now)
  end)
end)

describe("the reference's static file server", function()
  after_each(H.no_leaks)

  -- The example in docs/reference.md, as it is written there, serving a
  -- folder of the spec's own; curl as its client.
  local function example(root)
    local doc = H.readfile("docs/reference.md")
    local code = doc:match("```lua\n(%-%- static%.lua.-)```")
    assert(code, "no static.lua example in docs/reference.md")
    local n
    code, n = code:gsub('local ROOT = "[^"]*"', ("local ROOT = %q"):format(root))
    assert.equal(1, n)
    return H.script(code)
  end

  local function curl(args)
    local out = tmpfile()
    local ok = os.execute(("env -u LD_PRELOAD timeout %d curl -s -S %s >%s 2>&1"):format(
      LONG, args, H.quote(out)))
    return H.readfile(out), ok
  end

  it("serves a file of several MiB over HTTP to curl, and 404 for what is not there", function()
    local root = H.tmpdir .. "/www"
    assert(os.execute("mkdir -p " .. H.quote(root)))
    local size = 6 * MiB + 7
    local file = H.writefile(root .. "/data.bin", H.random_bytes(size))
    local p = H.start(H.quote(example(root)) .. " 0")
    local got = tmpfile()
    local head, ok = curl(("-D - -o %s http://127.0.0.1:%d/data.bin"):format(H.quote(got), p.port))
    assert.is_true(ok, head)
    assert.matches("^HTTP/1.0 200 OK\r\n", head)
    assert.matches("\r\nContent%-Length: " .. size .. "\r\n", head)
    assert.equal(sha256(file), sha256(got))
    head = curl(("-D - -o /dev/null http://127.0.0.1:%d/missing"):format(p.port))
    assert.matches("^HTTP/1.0 404 Not Found\r\n", head)
    head = curl(("-D - -o /dev/null --path-as-is http://127.0.0.1:%d/../etc/passwd"):format(p.port))
    assert.matches("^HTTP/1.0 404 Not Found\r\n", head)
    assert.equal(0, p:stop())
  end)
end)
