-- scripts/resp.lua, the Redis-protocol server, under the glisten-lua
-- command, with Redis's own clients as peers (redis-cli, redis-benchmark)
-- and raw sockets for the exact bytes: every command and error, binary
-- values, pipelining, commands cut anywhere by the reads, malformed input,
-- expiry, and two workers sharing their keys.
local glisten = H.glisten

-- Every wait here only bounds a hang; a busy machine must never reach it.
local LONG = 60

local function start(args) return H.start((args or "") .. " scripts/resp.lua") end

-- Stops the server: it exits 0 and logged no script error.
local function stop(p)
  assert.equal(0, p:stop())
  assert.not_matches("error", p:stderr())
end

-- A client whose every call waits at most LONG seconds.
local function connect(port) return H.connect(port, nil, LONG) end

-- A command as a RESP array of bulk strings.
local function cmd(...)
  local out = { "*" .. select("#", ...) .. "\r\n" }
  for i = 1, select("#", ...) do
    local a = tostring((select(i, ...)))
    out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return table.concat(out)
end

-- Reads one whole reply from s, by its structure, and returns its bytes
-- (nil, err when the connection ends first).
local function reply(s)
  local line, err = s:receive("*l")
  if not line then return nil, err end
  local kind, num = line:sub(1, 1), tonumber(line:sub(2))
  if kind == "$" and num and num >= 0 then
    local body, e = s:receive(num + 2)
    if not body then return nil, e end
    return line .. "\r\n" .. body
  elseif kind == "*" and num and num > 0 then
    local out = { line .. "\r\n" }
    for i = 1, num do
      local r, e = reply(s)
      if not r then return nil, e end
      out[i + 1] = r
    end
    return table.concat(out)
  end
  return line .. "\r\n"
end

-- Sends a request and returns the one reply.
local function ask(s, request)
  assert(s:send(request))
  return reply(s)
end

-- redis-cli's output for these arguments (a shell-quoted list, given as is).
local function cli(port, args, input)
  return (H.peer(("redis-cli -h 127.0.0.1 -p %d %s"):format(port, args), input, LONG))
end

-- What INFO says of the connection's worker: its number.
local function worker_of(s)
  local info = assert(ask(s, cmd("INFO")))
  return tonumber(info:match("glisten_worker:(%d+)"))
end

-- A TTL reply of n seconds, or a little less: the clock runs between the
-- command that set it and the one that reads it, however busy the machine
-- (TTL rounds to the nearest second). Returns a function of the reply.
local function about(n)
  return function(got)
    local v = tonumber(got:match("^:(%d+)\r\n$"))
    return v and v <= n and v >= n - 10
  end
end

-- Exact replies to every command, as Redis words them. Each entry: the
-- command's arguments, then the reply expected (or a function that checks
-- it; or nil, and the keys KEYS must list).
local EXACT = {
  { { "PING" }, "+PONG\r\n" },
  { { "ping", "hi" }, "$2\r\nhi\r\n" },
  { { "PING", "a", "b" }, "-ERR wrong number of arguments for 'ping' command\r\n" },
  { { "ECHO", "hello" }, "$5\r\nhello\r\n" },
  { { "ECHO" }, "-ERR wrong number of arguments for 'echo' command\r\n" },
  { { "GET", "k" }, "$-1\r\n" },
  { { "GET" }, "-ERR wrong number of arguments for 'get' command\r\n" },
  { { "GET", "a", "b" }, "-ERR wrong number of arguments for 'get' command\r\n" },
  { { "SET", "k" }, "-ERR wrong number of arguments for 'set' command\r\n" },
  { { "SET", "k", "v1" }, "+OK\r\n" },
  { { "Get", "k" }, "$2\r\nv1\r\n" },
  { { "SET", "k", "v2", "NX" }, "$-1\r\n" },
  { { "GET", "k" }, "$2\r\nv1\r\n" },
  { { "SET", "k2", "v", "XX" }, "$-1\r\n" },
  { { "EXISTS", "k2" }, ":0\r\n" },
  { { "SET", "k", "v3", "xx" }, "+OK\r\n" },
  { { "SET", "k", "v4", "GET" }, "$2\r\nv3\r\n" },
  { { "SET", "k", "v", "NX", "XX" }, "-ERR syntax error\r\n" },
  { { "SET", "k", "v", "EX", "10", "PX", "100" }, "-ERR syntax error\r\n" },
  { { "SET", "k", "v", "EX" }, "-ERR syntax error\r\n" },
  { { "SET", "k", "v", "BOGUS" }, "-ERR syntax error\r\n" },
  { { "SET", "k", "v", "EX", "ten" }, "-ERR value is not an integer or out of range\r\n" },
  { { "SET", "k", "v", "EX", "1.5" }, "-ERR value is not an integer or out of range\r\n" },
  { { "SET", "k", "v", "EX", "0" }, "-ERR invalid expire time in 'set' command\r\n" },
  { { "SET", "k", "v", "PX", "-5" }, "-ERR invalid expire time in 'set' command\r\n" },
  { { "GET", "k" }, "$2\r\nv4\r\n" },
  { { "SET", "t", "v", "EX", "100", "NX" }, "+OK\r\n" },
  { { "TTL", "t" }, about(100) },
  { { "TTL", "k" }, ":-1\r\n" },
  { { "TTL", "nope" }, ":-2\r\n" },
  { { "PTTL", "nope" }, ":-2\r\n" },
  { { "SET", "t", "w", "KEEPTTL" }, "+OK\r\n" },
  { { "TTL", "t" }, about(100) },
  { { "SET", "t", "w" }, "+OK\r\n" },
  { { "TTL", "t" }, ":-1\r\n" },
  { { "EXPIRE", "t", "50" }, ":1\r\n" },
  { { "TTL", "t" }, about(50) },
  { { "EXPIRE", "t", "40", "GT" }, ":0\r\n" },
  { { "EXPIRE", "t", "40", "LT" }, ":1\r\n" },
  { { "TTL", "t" }, about(40) },
  { { "EXPIRE", "t", "60", "NX" }, ":0\r\n" },
  { { "EXPIRE", "t", "60", "NX", "XX" }, "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n" },
  { { "EXPIRE", "t", "60", "GT", "LT" }, "-ERR GT and LT options at the same time are not compatible\r\n" },
  { { "EXPIRE", "t", "60", "SOON" }, "-ERR Unsupported option SOON\r\n" },
  { { "EXPIRE", "t", "x" }, "-ERR value is not an integer or out of range\r\n" },
  { { "EXPIRE", "nope", "10" }, ":0\r\n" },
  { { "EXPIRE", "t" }, "-ERR wrong number of arguments for 'expire' command\r\n" },
  { { "PERSIST", "t" }, ":1\r\n" },
  { { "TTL", "t" }, ":-1\r\n" },
  { { "EXPIRE", "t", "0" }, ":1\r\n" },
  { { "EXISTS", "t" }, ":0\r\n" },
  { { "INCR", "n" }, ":1\r\n" },
  { { "INCR", "n" }, ":2\r\n" },
  { { "INCRBY", "n", "40" }, ":42\r\n" },
  { { "DECR", "n" }, ":41\r\n" },
  { { "DECRBY", "n", "50" }, ":-9\r\n" },
  { { "GET", "n" }, "$2\r\n-9\r\n" },
  { { "INCR", "k" }, "-ERR value is not an integer or out of range\r\n" },
  { { "SET", "big", "9223372036854775807" }, "+OK\r\n" },
  { { "INCR", "big" }, "-ERR increment or decrement would overflow\r\n" },
  { { "GET", "big" }, "$19\r\n9223372036854775807\r\n" },
  { { "SET", "z", "007" }, "+OK\r\n" },
  { { "INCR", "z" }, "-ERR value is not an integer or out of range\r\n" },
  { { "INCR" }, "-ERR wrong number of arguments for 'incr' command\r\n" },
  { { "MSET", "a", "1", "b", "2" }, "+OK\r\n" },
  { { "MSET", "a", "1", "b" }, "-ERR wrong number of arguments for 'mset' command\r\n" },
  { { "MGET", "a", "nope", "b" }, "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n" },
  { { "EXISTS", "a", "a", "b", "nope" }, ":3\r\n" },
  { { "DEL", "a", "nope", "b" }, ":2\r\n" },
  { { "DEL", "a" }, ":0\r\n" },
  { { "DEL" }, "-ERR wrong number of arguments for 'del' command\r\n" },
  { { "FLUSHALL" }, "+OK\r\n" },
  { { "DBSIZE" }, ":0\r\n" },
  { { "KEYS", "*" }, "*0\r\n" },
  { { "MSET", "hello", "1", "hallo", "2", "hxllo", "3", "hllo", "4", "heeeello", "5", "h*llo", "6" }, "+OK\r\n" },
  { { "KEYS", "h?llo" }, nil, { "h*llo", "hallo", "hello", "hxllo" } },
  { { "KEYS", "h*llo" }, nil, { "h*llo", "hallo", "heeeello", "hello", "hllo", "hxllo" } },
  { { "KEYS", "h[ae]llo" }, nil, { "hallo", "hello" } },
  { { "KEYS", "h[^e]llo" }, nil, { "h*llo", "hallo", "hxllo" } },
  { { "KEYS", "h[a-f]llo" }, nil, { "hallo", "hello" } },
  { { "KEYS", "h\\*llo" }, nil, { "h*llo" } },
  { { "KEYS", "x*" }, "*0\r\n" },
  { { "DBSIZE" }, ":6\r\n" },
  { { "SELECT", "0" }, "+OK\r\n" },
  { { "SELECT", "1" }, "-ERR DB index is out of range\r\n" },
  { { "SELECT", "x" }, "-ERR value is not an integer or out of range\r\n" },
  { { "CONFIG", "GET", "save" }, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n" },
  { { "CONFIG", "GET", "appendonly" }, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n" },
  { { "CONFIG", "GET", "nothing" }, "*0\r\n" },
  { { "CONFIG", "SET", "x", "y" }, "-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n" },
  { { "COMMAND", "DOCS" }, "*0\r\n" },
  { { "CLIENT", "SETNAME", "me" }, "+OK\r\n" },
  { { "CLIENT", "GETNAME" }, "$2\r\nme\r\n" },
  { { "FOO" }, "-ERR unknown command 'FOO', with args beginning with: \r\n" },
  { { "foo", "a", "b c" }, "-ERR unknown command 'foo', with args beginning with: 'a' 'b c' \r\n" },
  { { "FOO\r\nBAR", "x\ny" }, "-ERR unknown command 'FOO  BAR', with args beginning with: 'x y' \r\n" },
}

describe("scripts/resp.lua", function()
  after_each(H.no_leaks)

  it("answers every command in Redis's words, byte for byte", function()
    local p = start()
    local s = connect(p.port)
    for i, e in ipairs(EXACT) do
      local got = ask(s, cmd(table.unpack(e[1])))
      if type(e[2]) == "function" then
        assert.is_true(e[2](got), "step " .. i .. ": " .. table.concat(e[1], " ") .. ": " .. got)
      elseif e[3] then -- KEYS: the order is the store's; compare as a set
        local keys = {}
        for k in got:gmatch("%$%d+\r\n([^\r]*)\r\n") do keys[#keys + 1] = k end
        table.sort(keys)
        assert.same(e[3], keys, "step " .. i .. ": " .. table.concat(e[1], " "))
        assert.equal("*" .. #e[3] .. "\r\n", got:match("^%*%d+\r\n"))
      else
        assert.equal(e[2], got, "step " .. i .. ": " .. table.concat(e[1], " "))
      end
    end
    -- QUIT: +OK, then the server closes
    assert.equal("+OK\r\n", ask(s, cmd("QUIT")))
    H.assert_closed(s)
    s:close()
    stop(p)
  end)

  it("serves redis-cli: commands, errors, stdin, a value from stdin", function()
    local p = start()
    assert.equal("PONG\n", cli(p.port, "ping"))
    assert.equal("OK\n", cli(p.port, "set greeting hello"))
    assert.equal("hello\n", cli(p.port, "get greeting"))
    assert.equal("\n", cli(p.port, "get nothing")) -- nil, in redis-cli's raw output
    assert.equal("1\n", cli(p.port, "incr counter"))
    assert.equal("OK\n", cli(p.port, "set temp x ex 100"))
    assert.is_true(about(100)(":" .. cli(p.port, "ttl temp"):gsub("\n$", "\r\n")))
    -- (redis-cli prints an error with an empty line after it)
    assert.equal("ERR syntax error\n\n", cli(p.port, "set a b nx xx"))
    assert.equal("ERR wrong number of arguments for 'get' command\n\n", cli(p.port, "get"))
    assert.equal("ERR unknown command 'nosuch', with args beginning with: 'x' \n\n",
      cli(p.port, "nosuch x"))
    assert.equal("2\n", cli(p.port, "exists greeting counter"))
    local keys = {}
    for k in cli(p.port, "keys '*'"):gmatch("[^\n]+") do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "counter", "greeting", "temp" }, keys)
    -- commands on stdin, one a line (redis-cli asks COMMAND DOCS first)
    assert.equal("PONG\nhello\n2\n", cli(p.port, "", "ping\nget greeting\nincr counter\n"))
    -- a value from stdin (-x): every byte, \r\n and \0 included
    local value = "line 1\r\nline 2\0\255" .. H.random_bytes(5000) .. "\r\n"
    assert.equal("OK\n", cli(p.port, "-x set bin", value))
    local s = connect(p.port)
    assert.equal("$" .. #value .. "\r\n" .. value .. "\r\n", ask(s, cmd("GET", "bin")))
    s:close()
    stop(p)
  end)

  it("reads inline commands as Redis does: words, quotes, empty lines", function()
    local p = start()
    local s = connect(p.port)
    assert.equal("+PONG\r\n", ask(s, "PING\r\n"))
    assert.equal("+PONG\r\n", ask(s, "ping\n"))
    assert.equal("$2\r\nhi\r\n", ask(s, "  PING   hi  \r\n"))
    assert.equal("+OK\r\n", ask(s, "\r\n\nSET \"two words\" 'it\\'s'\r\n")) -- empty lines: no reply
    assert.equal("$4\r\nit's\r\n", ask(s, cmd("GET", "two words")))
    assert.equal("+OK\r\n", ask(s, "SET k \"a\\r\\n\\x41\\\"\"\r\n"))
    assert.equal("$5\r\na\r\nA\"\r\n", ask(s, cmd("GET", "k")))
    -- an unbalanced quote: the error, then the connection closes
    assert.equal("-ERR Protocol error: unbalanced quotes in request\r\n", ask(s, "SET k \"open\r\n"))
    H.assert_closed(s, "*l")
    s:close()
    s = connect(p.port)
    assert.equal("-ERR Protocol error: unbalanced quotes in request\r\n", ask(s, "ECHO \"a\"b\r\n"))
    H.assert_closed(s, "*l")
    s:close()
    stop(p)
  end)

  it("keeps keys and values binary-safe: every byte, \\r\\n and \\0 included", function()
    local p = start()
    local s = connect(p.port)
    local pairs_ = {
      { "", "empty key" }, { "k\r\n", "" }, { "\0", "\0\0\r\n\r" }, { "\1x", "one" },
      { "\r\n$3\r\nGET\r\n", "*1\r\n$4\r\nPING\r\n" }, { H.random_bytes(300), H.random_bytes(2000) },
      { "h*llo", "\255\254" },
    }
    for _, kv in ipairs(pairs_) do assert.equal("+OK\r\n", ask(s, cmd("SET", kv[1], kv[2]))) end
    for _, kv in ipairs(pairs_) do
      assert.equal("$" .. #kv[2] .. "\r\n" .. kv[2] .. "\r\n", ask(s, cmd("GET", kv[1])))
    end
    assert.equal(":" .. #pairs_ .. "\r\n", ask(s, cmd("DBSIZE")))
    local list = ask(s, cmd("KEYS", "*"))
    for _, kv in ipairs(pairs_) do
      assert.truthy(list:find("$" .. #kv[1] .. "\r\n" .. kv[1] .. "\r\n", 1, true))
    end
    assert.equal("*1\r\n$1\r\n\0\r\n", ask(s, cmd("KEYS", "\0")))
    s:close()
    stop(p)
  end)

  it("takes values of several MiB, in a command the reads cut anywhere", function()
    local p = start()
    local s = connect(p.port)
    local big = H.random_bytes(3 * 1024 * 1024 + 17)
    glisten.spawn(function() -- sent in pieces of uneven size, while the reply is awaited
      local req, at = cmd("SET", "big", big) .. cmd("GET", "big"), 1
      local piece = 1
      while at <= #req do
        s:send(req, at, math.min(#req, at + piece - 1))
        at = at + piece
        piece = piece * 3 + 1
      end
    end)
    assert.equal("+OK\r\n", reply(s))
    local got = reply(s)
    assert.equal(#big + #tostring(#big) + 5, #got)
    assert.is_true(got == "$" .. #big .. "\r\n" .. big .. "\r\n", "the large value differs")
    -- redis-cli -x with a 2 MiB value
    local v = H.random_bytes(2 * 1024 * 1024)
    assert.equal("OK\n", cli(p.port, "-x set big2", v))
    assert.is_true(ask(s, cmd("GET", "big2")) == "$" .. #v .. "\r\n" .. v .. "\r\n")
    s:close()
    stop(p)
  end)

  it("answers the same whatever the reads: a stream cut at every byte", function()
    local p = start()
    local stream = cmd("SET", "k", "v\r\n1") .. "PING\r\n" .. cmd("GET", "k") .. "\r\n"
      .. cmd("SET", "n", "5") .. "INCR n\n" .. "*0\r\n" .. cmd("MGET", "k", "n", "x")
      .. cmd("ECHO", ("e"):rep(1200)) .. cmd("DEL", "k", "n")
    local want = "+OK\r\n+PONG\r\n$4\r\nv\r\n1\r\n+OK\r\n:6\r\n*3\r\n$4\r\nv\r\n1\r\n$1\r\n6\r\n$-1\r\n"
      .. "$1200\r\n" .. ("e"):rep(1200) .. "\r\n:2\r\n"
    for cut = 0, #stream do
      local s = connect(p.port)
      if cut > 0 then s:send(stream, 1, cut) end
      -- the first part is answered before the rest is sent
      glisten.sleep(0)
      if cut < #stream then s:send(stream, cut + 1) end
      local got, err, partial = s:receive(#want)
      assert.equal(want, got or partial, ("cut at %d: %s"):format(cut, tostring(err)))
      s:close()
    end
    -- one byte a write
    local s = connect(p.port)
    for i = 1, #stream do s:send(stream, i, i) end
    assert.equal(want, s:receive(#want))
    s:close()
    stop(p)
  end)

  it("answers pipelined commands in one write, in order: 3,000 small, 40 with replies of 100 KiB", function()
    local p = start()
    local s = connect(p.port)
    local req, want = {}, {}
    for i = 1, 1000 do
      req[#req + 1] = cmd("SET", "key" .. i, "value" .. i)
      want[#want + 1] = "+OK\r\n"
      req[#req + 1] = i % 7 == 0 and cmd("NOPE", i) or cmd("INCR", "c")
      want[#want + 1] = i % 7 == 0 and ("-ERR unknown command 'NOPE', with args beginning with: '%d' \r\n"):format(i)
        or (":%d\r\n"):format(i - i // 7)
      req[#req + 1] = cmd("GET", "key" .. (i - 1))
      want[#want + 1] = i == 1 and "$-1\r\n" or ("$%d\r\nvalue%d\r\n"):format(#tostring(i - 1) + 5, i - 1)
    end
    req, want = table.concat(req), table.concat(want)
    assert(s:send(req))
    local got, err = s:receive(#want)
    assert.equal(want, got, err)
    s:close()
    -- replies larger than what is held before a write (64 KiB), in order
    s = connect(p.port)
    local v = H.random_bytes(100 * 1024)
    assert.equal("+OK\r\n", ask(s, cmd("SET", "v", v)))
    local one = "$" .. #v .. "\r\n" .. v .. "\r\n"
    assert(s:send((cmd("GET", "v") .. cmd("PING")):rep(20)))
    local got2 = s:receive(20 * (#one + 7))
    assert.is_true(got2 == (one .. "+PONG\r\n"):rep(20), "the large pipelined replies differ")
    -- the same through the general reader (inline commands of two words)
    assert(s:send(("GET v\r\nPING\r\n"):rep(20)))
    got2 = s:receive(20 * (#one + 7))
    assert.is_true(got2 == (one .. "+PONG\r\n"):rep(20), "the large inline replies differ")
    s:close()
    -- redis-cli --pipe: its own count of replies and errors
    local lines = {}
    for i = 1, 2000 do lines[i] = cmd("SET", "p" .. i, i) end
    local out = cli(p.port, "--pipe", table.concat(lines))
    assert.matches("errors: 0, replies: 2000", out)
    assert.equal("2000\n", cli(p.port, "get p2000"))
    stop(p)
  end)

  it("closes on malformed input with Redis's error, answering what came before; others go on", function()
    local p = start()
    local other = connect(p.port)
    assert.equal("+OK\r\n", ask(other, cmd("SET", "still", "here")))
    local cases = {
      { "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$abc\r\n", "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n" },
      { "*2\r\n$3\r\nGET\r\n$-1\r\n", "-ERR Protocol error: invalid bulk length\r\n" },
      { "*2\r\n$3\r\nGET\r\n$16777217\r\n", "-ERR Protocol error: invalid bulk length\r\n" },
      { "*2\r\n$3\r\nGET\r\n$99999999999999999999\r\n", "-ERR Protocol error: invalid bulk length\r\n" },
      { "*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n" },
      { "*1048577\r\n", "-ERR Protocol error: invalid multibulk length\r\n" },
      { "*2\r\n$3\r\nGET\r\n:1\r\n", "-ERR Protocol error: expected '$', got ':'\r\n" },
      -- 64 KiB without the end of the line: the byte past it is the error
      { "*1\r\n$" .. ("1"):rep(65536), "-ERR Protocol error: too big bulk count string\r\n" },
      { "*" .. ("1"):rep(65536), "-ERR Protocol error: too big mbulk count string\r\n" },
      { ("A"):rep(65537), "-ERR Protocol error: too big inline request\r\n" },
    }
    for _, c in ipairs(cases) do
      local s = connect(p.port)
      assert(s:send(c[1]))
      local got, err, partial = s:receive(#c[2])
      assert.equal(c[2], got or partial, err)
      H.assert_closed(s)
      s:close()
      assert.equal("$4\r\nhere\r\n", ask(other, cmd("GET", "still")))
    end
    -- peers that leave in the middle of a command: nothing of it is kept
    for _, half in ipairs{ "*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$100\r\nabc",
      "*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$1", "*3\r\n$3\r\nSET\r\n", "SET half v" } do
      local s = connect(p.port)
      assert(s:send(half))
      s:close()
      assert.equal("$-1\r\n", ask(other, cmd("GET", "half")))
    end
    -- a bulk of 16 MiB, the bound, is taken
    local s = connect(p.port)
    local max = ("x"):rep(16 * 1024 * 1024)
    glisten.spawn(function()
      s:send("*3\r\n$3\r\nSET\r\n$3\r\nmax\r\n$" .. #max .. "\r\n")
      s:send(max)
      s:send("\r\n")
    end)
    assert.equal("+OK\r\n", reply(s))
    assert.equal(":1\r\n", ask(s, cmd("DEL", "max")))
    s:close()
    -- a command whose bulks pass 64 MiB in all is refused at the bulk that
    -- would pass it, before its bytes are read. (Each case sends nothing
    -- past the byte that makes it wrong: a server that closes with input
    -- unread resets the connection, which may discard the reply in flight.)
    s = connect(p.port)
    glisten.spawn(function()
      s:send("*6\r\n$3\r\nSET\r\n")
      for _ = 1, 3 do
        if not s:send("$" .. #max .. "\r\n") or not s:send(max) or not s:send("\r\n") then return end
      end
      s:send("$" .. #max .. "\r\n") -- 3 bytes past the bound: nothing more is sent
    end)
    local e = "-ERR Protocol error: invalid bulk length\r\n"
    local got, err, partial = s:receive(#e)
    assert.equal(e, got or partial, err)
    s:close()
    assert.equal("$4\r\nhere\r\n", ask(other, cmd("GET", "still")))
    other:close()
    stop(p)
  end)

  it("forgets expired keys: on access, in KEYS and by its sweep of keys never read", function()
    local p = start()
    local s = connect(p.port)
    assert.equal("+OK\r\n", ask(s, cmd("SET", "short", "v", "PX", "100")))
    assert.equal("+OK\r\n", ask(s, cmd("SET", "long", "v", "EX", "1000")))
    assert.equal("+OK\r\n", ask(s, cmd("SET", "plain", "v")))
    local ttl = tonumber(ask(s, cmd("PTTL", "long")):match("^:(%-?%d+)"))
    assert.is_true(ttl > 0 and ttl <= 1000000, "pttl " .. ttl)
    assert.is_true(H.wait_for(function() return ask(s, cmd("GET", "short")) == "$-1\r\n" end, LONG))
    assert.equal(":-2\r\n", ask(s, cmd("TTL", "short")))
    assert.equal(":0\r\n", ask(s, cmd("EXISTS", "short")))
    -- 2,000 keys that expire and are never read again
    local req = {}
    for i = 1, 2000 do req[i] = cmd("SET", "gone" .. i, "v", "PX", "50") end
    assert(s:send(table.concat(req)))
    assert.equal(("+OK\r\n"):rep(2000), s:receive(5 * 2000))
    assert.is_true(H.wait_for(function()
      return ask(s, cmd("KEYS", "gone*")) == "*0\r\n"
    end, LONG))
    -- 50,000 keys that expire after 1 ms: the sweep, 1,000 keys a tenth of
    -- a second at most, needs 5 s to drop them all, and until then KEYS,
    -- DBSIZE and EXISTS must pass over the ones it still holds
    req = {}
    for i = 1, 50000 do req[i] = cmd("SET", "brief" .. i, "v", "PX", "1") end
    assert(s:send(table.concat(req)))
    assert.equal(("+OK\r\n"):rep(50000), s:receive(5 * 50000))
    assert.is_true(H.wait_for(function() return ask(s, cmd("EXISTS", "brief50000")) == ":0\r\n" end, LONG))
    assert.equal("*0\r\n", ask(s, cmd("KEYS", "brief*")))
    assert.equal(":2\r\n", ask(s, cmd("DBSIZE")))
    local held = tonumber(ask(s, cmd("INFO")):match("db0:keys=(%d+)"))
    assert.is_true(held > 2, "the sweep was done before KEYS could be checked against it")
    -- the sweep drops them: INFO counts the keys held, expired or not
    assert.is_true(H.wait_for(function()
      return ask(s, cmd("INFO")):match("db0:keys=(%d+)") == "2"
    end, LONG), ask(s, cmd("INFO")))
    assert.matches("db0:keys=2,expires=1", ask(s, cmd("INFO")))
    local keys = {}
    for k in ask(s, cmd("KEYS", "*")):gmatch("%$%d+\r\n([^\r]*)\r\n") do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "long", "plain" }, keys)
    s:close()
    stop(p)
  end)

  it("runs redis-benchmark to the end, with and without pipelining", function()
    local p = start()
    for _, extra in ipairs{ "", "-P 16" } do
      local out, ok = H.peer(("redis-benchmark -h 127.0.0.1 -p %d -n 2000 -c 10 -t ping,set,get -q %s")
        :format(p.port, extra), "", LONG)
      assert.is_true(ok, out)
      for _, t in ipairs{ "PING_INLINE", "PING_MBULK", "SET", "GET" } do
        assert.matches(t .. ": [%d.]+ requests per second", out)
      end
      assert.not_matches("[Ee]rror", out)
      assert.not_matches("WARNING", out) -- CONFIG GET save and appendonly were answered
    end
    -- what it stored: SET key:__rand_int__ and a value of 3 bytes
    assert.equal("1\n", cli(p.port, "exists key:__rand_int__"))
    local s = connect(p.port)
    assert.matches("^%$3\r\n...\r\n$", ask(s, cmd("GET", "key:__rand_int__")))
    s:close()
    stop(p)
  end)

  it("with two workers, keeps one set of keys that every worker sees", function()
    local p = start("-w 2")
    -- connections until each worker serves one (the kernel spreads them by
    -- a hash of the addresses: 64 all on one worker has odds of 2^-63)
    local on, all = {}, {}
    for _ = 1, 64 do
      local s = connect(p.port)
      all[#all + 1] = s
      local w = worker_of(s)
      on[w] = on[w] or s
      if on[1] and on[2] then break end
    end
    assert.truthy(on[1] and on[2], "no connection landed on one of the workers")
    local a, b = on[1], on[2]
    assert.matches("glisten_store:shared", ask(a, cmd("INFO")))
    assert.equal("+OK\r\n", ask(a, cmd("SET", "k", "from worker 1")))
    assert.equal("$13\r\nfrom worker 1\r\n", ask(b, cmd("GET", "k")))
    assert.equal("+OK\r\n", ask(b, cmd("SET", "", "\0\r\n")))
    assert.equal("$3\r\n\0\r\n\r\n", ask(a, cmd("GET", "")))
    assert.equal("$-1\r\n", ask(a, cmd("SET", "k", "again", "NX")))
    assert.equal("+OK\r\n", ask(a, cmd("SET", "t", "v", "EX", "100")))
    assert.is_true(about(100)(ask(b, cmd("TTL", "t"))))
    assert.equal(":-1\r\n", ask(b, cmd("TTL", "k")))
    assert.equal("+OK\r\n", ask(b, cmd("SET", "t", "w")))
    assert.equal(":-1\r\n", ask(a, cmd("TTL", "t")))
    assert.equal(":1\r\n", ask(a, cmd("EXPIRE", "t", "50")))
    assert.is_true(about(50)(ask(b, cmd("TTL", "t"))))
    -- INCR from both workers at once, pipelined: exact
    local n = 500
    assert(a:send(cmd("INCR", "c"):rep(n)))
    assert(b:send(cmd("INCR", "c"):rep(n)))
    local last = 0
    for _, s in ipairs{ a, b } do
      for _ = 1, n do
        local v = tonumber(reply(s):match("^:(%d+)"))
        assert.is_true(v > 0)
        last = math.max(last, v)
      end
    end
    assert.equal(2 * n, last)
    assert.equal("$4\r\n1000\r\n", ask(b, cmd("GET", "c")))
    assert.equal("+OK\r\n", ask(a, cmd("SET", "c", "9223372036854775807")))
    assert.equal("-ERR increment or decrement would overflow\r\n", ask(b, cmd("INCR", "c")))
    assert.equal("$19\r\n9223372036854775807\r\n", ask(a, cmd("GET", "c")))
    assert.equal("+OK\r\n", ask(a, cmd("SET", "s", "abc")))
    assert.equal("-ERR value is not an integer or out of range\r\n", ask(b, cmd("INCR", "s")))
    local keys = {}
    for k in ask(b, cmd("KEYS", "*")):gmatch("%$%d+\r\n([^\r]*)\r\n") do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "", "c", "k", "s", "t" }, keys)
    assert.equal(":5\r\n", ask(a, cmd("DBSIZE")))
    assert.equal(":2\r\n", ask(b, cmd("DEL", "k", "t", "nope")))
    assert.equal("*2\r\n$-1\r\n$3\r\nabc\r\n", ask(a, cmd("MGET", "k", "s")))
    assert.equal("+OK\r\n", ask(b, cmd("FLUSHALL")))
    assert.equal("*0\r\n", ask(a, cmd("KEYS", "*")))
    for _, s in ipairs(all) do s:close() end
    stop(p)
  end)
end)
