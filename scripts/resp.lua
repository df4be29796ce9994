-- A key-value server speaking Redis's protocol (RESP2), for redis-cli,
-- redis-benchmark and Redis client libraries.
--   glisten-lua scripts/resp.lua 6379            (one worker: a Lua table)
--   glisten-lua -w auto scripts/resp.lua 6379    (every CPU: glisten.shared)
--   redis-cli -p 6379 set greeting hello         then: redis-cli -p 6379 get greeting
--   printf 'PING\r\n' | nc -N 127.0.0.1 6379     (inline commands work too)
--   redis-benchmark -p 6379 -t ping,set,get -q
--
-- Commands: PING, ECHO, GET, SET (EX, PX, NX, XX, KEEPTTL, GET), DEL and
-- EXISTS (many keys), INCR, INCRBY, DECR, DECRBY, EXPIRE and PEXPIRE (NX, XX,
-- GT, LT), TTL, PTTL, PERSIST, KEYS (glob patterns: * ? [abc] [^a] [a-z] \x),
-- MGET, MSET, DBSIZE, FLUSHALL and FLUSHDB; and what clients send on connect:
-- COMMAND (an empty list), CONFIG GET (save, appendonly and a few more),
-- CLIENT SETNAME/GETNAME/ID/SETINFO, SELECT 0, HELLO 2, INFO, QUIT. Replies
-- and errors are Redis's, word for word ("-ERR syntax error", "-ERR wrong
-- number of arguments for 'get' command", ...); after a command's error the
-- connection goes on. Keys and values are any bytes. Commands pipelined in
-- one read are all answered, in order, in one write.
--
-- Input is checked before it is kept: a bulk string longer than MAX_BULK,
-- an array of more than MAX_ARGS elements, a command whose bulks add up to
-- more than MAX_COMMAND, or a header line or inline command without its end
-- of line within MAX_INLINE bytes is a protocol error: the reply is Redis's
-- ("-ERR Protocol error: invalid bulk length", "... invalid multibulk
-- length", "... too big inline request") and the connection is closed, as
-- Redis closes it. The commands read before the error are answered first.
local MAX_BULK = 16 * 1024 * 1024    -- bytes in one bulk string (Redis: 512 MiB)
local MAX_ARGS = 1024 * 1024         -- elements of one command's array
local MAX_COMMAND = 64 * 1024 * 1024 -- bytes of all the bulks of one command
local MAX_INLINE = 64 * 1024         -- an inline command or a header line
local OUT_BATCH = 64 * 1024          -- pipelined replies written once this many bytes are held
--
-- Where the keys live. One worker keeps them in a Lua table: the fastest.
-- With several workers (-w N) every worker must see the same keys, so they
-- live in glisten.shared, the dictionary of the whole process; the script
-- asks glisten.worker_count() at load. RESP_STORE=shared in the environment
-- picks the dictionary on one worker too (to measure it), as does loading
-- the script with "shared" as its argument:
--   return assert(loadfile("scripts/resp.lua"))("shared")
-- What each gives:
--   table:  no size cap (cap the worker with --max-memory: past it the
--           command that needed memory fails and its connection closes);
--           expiry is lazy (a key is dropped when read after its time) and
--           a sweep every 0.1 s looks at up to 1,000 keys with a time to
--           live, so expired keys never read are reclaimed as well.
--   shared: 64 MiB in all, the least recently used keys evicted when full
--           (as Redis's allkeys-lru), expiry by the dictionary. GET, SET,
--           SET NX, INCR and DEL of one key are atomic across workers; SET XX,
--           EXPIRE and the multi-key commands are a read then a write. A
--           value that reads as a canonical integer is kept as a number, so
--           INCR is the dictionary's own atomic incr; a key's expiry time is
--           kept beside it (under "\1" .. key) for TTL to read.
local glisten = glisten or require "glisten"

local byte, char, find, sub, match, upper, lower, gsub =
  string.byte, string.char, string.find, string.sub, string.match,
  string.upper, string.lower, string.gsub
local concat, tonumber, tostring, type, pairs, next = table.concat,
  tonumber, tostring, type, pairs, next
local mtype, floor, maxint, minint = math.type, math.floor,
  math.maxinteger, math.mininteger
local now = glisten.now

local WORKERS = glisten.worker_count()
local SHARED = WORKERS > 1 or ((...) or os.getenv("RESP_STORE")) == "shared"

-- Replies ---------------------------------------------------------------

local OK, PONG, NIL, ZERO, ONE = "+OK\r\n", "+PONG\r\n", "$-1\r\n", ":0\r\n", ":1\r\n"
local EMPTY = "*0\r\n"
local ERR_SYNTAX = "-ERR syntax error\r\n"
local ERR_INT = "-ERR value is not an integer or out of range\r\n"
local ERR_OVERFLOW = "-ERR increment or decrement would overflow\r\n"
local ERR_OOM = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"

local function bulk(s) return "$" .. #s .. "\r\n" .. s .. "\r\n" end
local function int(n) return ":" .. n .. "\r\n" end

-- An error reply; \r and \n in what a peer sent become spaces, as Redis does,
-- so an error is always one line.
local function err(msg) return "-" .. gsub(msg, "[\r\n]", " ") .. "\r\n" end

-- An array of bulk strings (nil: a null bulk) from list[1..n].
local function array(list, n)
  local out = { "*" .. n .. "\r\n" }
  for i = 1, n do
    local v = list[i]
    out[i + 1] = v == nil and NIL or "$" .. #v .. "\r\n" .. v .. "\r\n"
  end
  return concat(out)
end

local function arity(name)
  return "-ERR wrong number of arguments for '" .. name .. "' command\r\n"
end

-- The integer a string holds, as Redis's string2ll reads it (digits with an
-- optional minus sign, no leading zeros, within 64 bits), or nil.
local function toint(s)
  local n = tonumber(s)
  if n and mtype(n) == "integer" and tostring(n) == s then return n end
  return nil
end

-- The store -------------------------------------------------------------
-- Times are milliseconds since the epoch. Each store offers:
--   get(k) -> value | nil            set(k, v [, ttl_ms]) -> true | nil (no room)
--   add(k, v [, ttl_ms]) -> true | false (exists) | nil (no room)
--   del(k) -> whether it was there    incr(k, by) -> n | nil, error reply
--   ttl(k) -> ms left | -1 (none) | -2 (missing)
--   expire(k, ms) (ms nil: persist; the key exists)
--   each(fn) calls fn(k) for each live key; flush()
--   held() -> keys held, of which with a time to live (expired ones not yet
--             dropped count, as in Redis's INFO)

local get, set, add, del, incr, ttl, expire, each, flush, held

if not SHARED then
  local V, E = {}, {} -- values; deadlines of the keys that expire
  local nexp = 0      -- entries in E

  local function drop(k)
    V[k] = nil
    if E[k] then E[k] = nil; nexp = nexp - 1 end
  end

  function get(k)
    local v = V[k]
    if v ~= nil then
      local d = E[k]
      if d and d <= now() * 1000 then drop(k); return nil end
    end
    return v
  end

  function set(k, v, ms)
    V[k] = v
    if ms then
      if not E[k] then nexp = nexp + 1 end
      E[k] = now() * 1000 + ms
    elseif nexp > 0 and E[k] then
      E[k] = nil; nexp = nexp - 1
    end
    return true
  end

  function add(k, v, ms)
    if get(k) ~= nil then return false end
    return set(k, v, ms)
  end

  function del(k)
    if get(k) == nil then return false end
    drop(k)
    return true
  end

  function incr(k, by)
    local v, n = get(k), 0
    if v ~= nil then
      n = toint(v)
      if not n then return nil, ERR_INT end
    end
    local r = n + by -- wraps on overflow: caught here
    if (by > 0 and r < n) or (by < 0 and r > n) then return nil, ERR_OVERFLOW end
    V[k] = tostring(r) -- keeps its time to live, as Redis does
    return r
  end

  function ttl(k)
    if get(k) == nil then return -2 end
    local d = E[k]
    return d and floor(d - now() * 1000) or -1
  end

  function expire(k, ms)
    if ms then
      if not E[k] then nexp = nexp + 1 end
      E[k] = now() * 1000 + ms
    elseif E[k] then
      E[k] = nil; nexp = nexp - 1
    end
  end

  function each(fn)
    local t = now() * 1000
    for k in pairs(V) do
      local d = E[k]
      if not d or d > t then fn(k) end
    end
  end

  function flush() V, E, nexp = {}, {}, 0 end

  function held()
    local n = 0
    for _ in pairs(V) do n = n + 1 end
    return n, nexp
  end

  -- The sweep: up to 10 rounds of 100 keys that expire, every 0.1 s, from
  -- where the last one stopped; another round only while a round finds more
  -- than a quarter of its keys expired (Redis's active expiry, in short).
  local cursor
  glisten.every(0.1, function()
    if nexp == 0 then return end
    local t = now() * 1000
    if cursor ~= nil and E[cursor] == nil then cursor = nil end -- gone: start over
    for _ = 1, 10 do
      local expired = 0
      for _ = 1, 100 do
        local k, d = next(E, cursor)
        if k == nil then cursor = nil; break end
        if d <= t then
          V[k] = nil; E[k] = nil; nexp = nexp - 1; expired = expired + 1
          -- a key cleared during the walk is still a valid place for next
        end
        cursor = k
      end
      if expired <= 25 or cursor == nil then break end
    end
    if cursor ~= nil and E[cursor] == nil then cursor = nil end
  end)
else
  local shared = glisten.shared
  -- Keys in the dictionary: a key as it is, but "" and keys whose first
  -- byte is 0 or 1 get a 0 byte in front; a key's expiry time lives under
  -- 1 .. key. So no two keys meet, and every dictionary key is non-empty.
  local function dk(k)
    local b = byte(k, 1)
    if not b or b < 2 then return "\0" .. k end
    return k
  end

  -- A canonical integer is kept as a number, so that incr works on it.
  local function value(v)
    return toint(v) or v
  end

  function get(k)
    local v = shared:get(dk(k))
    if v ~= nil and type(v) ~= "string" then return tostring(v) end
    return v
  end

  function set(k, v, ms)
    if not shared:set(dk(k), value(v), ms and ms / 1000 or 0) then return nil end
    if ms then shared:set("\1" .. k, now() * 1000 + ms, ms / 1000)
    else shared:delete("\1" .. k) end
    return true
  end

  function add(k, v, ms)
    local ok, e = shared:add(dk(k), value(v), ms and ms / 1000 or 0)
    if not ok then
      if e == "exists" then return false end
      return nil
    end
    if ms then shared:set("\1" .. k, now() * 1000 + ms, ms / 1000)
    else shared:delete("\1" .. k) end
    return true
  end

  function del(k)
    local key = dk(k)
    if shared:get(key) == nil then return false end
    shared:delete(key)
    shared:delete("\1" .. k)
    return true
  end

  function incr(k, by)
    local key = dk(k)
    local r, e = shared:incr(key, by, 0)
    if not r then
      if e == "not a number" then return nil, ERR_INT end
      return nil, ERR_OOM
    end
    local before = r - by -- the dictionary wraps on overflow: undone here
    if (by > 0 and r < before) or (by < 0 and r > before) then
      shared:incr(key, -by)
      return nil, ERR_OVERFLOW
    end
    return r
  end

  function ttl(k)
    if shared:get(dk(k)) == nil then return -2 end
    local d = shared:get("\1" .. k)
    if not d then return -1 end
    local ms = floor(d - now() * 1000)
    return ms > 0 and ms or 0
  end

  function expire(k, ms)
    local key = dk(k)
    local v = shared:get(key)
    if v == nil then return end
    shared:set(key, v, ms and ms / 1000 or 0)
    if ms then shared:set("\1" .. k, now() * 1000 + ms, ms / 1000)
    else shared:delete("\1" .. k) end
  end

  function each(fn)
    for _, key in ipairs(shared:keys(0)) do
      local b = byte(key, 1)
      if b == 0 then fn(sub(key, 2))
      elseif b ~= 1 then fn(key) end
    end
  end

  function flush()
    for _, key in ipairs(shared:keys(0)) do shared:delete(key) end
  end

  function held()
    local n, e = 0, 0
    for _, key in ipairs(shared:keys(0)) do
      if byte(key, 1) == 1 then e = e + 1 else n = n + 1 end
    end
    return n, e
  end
end

-- Glob patterns (KEYS, CONFIG GET) ----------------------------------------

-- A character as a Lua pattern item that matches it alone.
local function lit(c)
  if find(c, "^%w$") then return c end
  return "%" .. c
end

-- The Lua pattern matching what Redis's glob pattern g matches: * any bytes,
-- ? one byte, [abc] [^abc] [a-z] a set, \x the byte x.
local function glob(g)
  local out, i, n = { "^" }, 1, #g
  while i <= n do
    local c = sub(g, i, i)
    if c == "*" then
      while sub(g, i + 1, i + 1) == "*" do i = i + 1 end
      out[#out + 1] = ".-"
    elseif c == "?" then
      out[#out + 1] = "."
    elseif c == "\\" and i < n then
      i = i + 1
      out[#out + 1] = lit(sub(g, i, i))
    elseif c == "[" then
      local j, neg, set = i + 1, false, {}
      if sub(g, j, j) == "^" then neg, j = true, j + 1 end
      while j <= n and sub(g, j, j) ~= "]" do
        local a = byte(g, j)
        if a == 92 and j < n then -- \x
          j = j + 1
          set[#set + 1] = lit(sub(g, j, j))
        elseif sub(g, j + 1, j + 1) == "-" and j + 2 <= n and sub(g, j + 2, j + 2) ~= "]" then
          local b = byte(g, j + 2)
          if a > b then a, b = b, a end
          for x = a, b do set[#set + 1] = lit(char(x)) end
          j = j + 2
        else
          set[#set + 1] = lit(char(a))
        end
        j = j + 1
      end
      if #set == 0 then -- [] matches nothing, [^] any byte
        out[#out + 1] = neg and "." or "[^\0-\255]"
      else
        out[#out + 1] = "[" .. (neg and "^" or "") .. concat(set) .. "]"
      end
      i = j
    else
      out[#out + 1] = lit(c)
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return concat(out)
end

-- Commands ----------------------------------------------------------------
-- Each takes (argv, argc, state) and returns its reply, and true when the
-- connection must close after it.

local C = {}

function C.PING(argv, argc)
  if argc == 1 then return PONG end
  if argc == 2 then return bulk(argv[2]) end
  return arity("ping")
end

function C.ECHO(argv, argc)
  if argc ~= 2 then return arity("echo") end
  return bulk(argv[2])
end

function C.GET(argv, argc)
  if argc ~= 2 then return arity("get") end
  local v = get(argv[2])
  if v == nil then return NIL end
  return "$" .. #v .. "\r\n" .. v .. "\r\n"
end

-- SET key value [NX | XX] [GET] [EX s | PX ms | KEEPTTL]
function C.SET(argv, argc)
  if argc == 3 then -- the common case, without options
    if not set(argv[2], argv[3]) then return ERR_OOM end
    return OK
  end
  if argc < 3 then return arity("set") end
  local nx, xx, getold, keep, unit, amount
  local i = 4
  while i <= argc do
    local o = upper(argv[i])
    if o == "NX" and not xx then nx = true
    elseif o == "XX" and not nx then xx = true
    elseif o == "GET" then getold = true
    elseif o == "KEEPTTL" and not unit then keep = true
    elseif (o == "EX" or o == "PX") and not unit and not keep and i < argc then
      unit, amount = o, argv[i + 1]
      i = i + 1
    else
      return ERR_SYNTAX
    end
    i = i + 1
  end
  local ms
  if unit then
    local n = toint(amount)
    if not n then return ERR_INT end
    if n <= 0 or (unit == "EX" and n > maxint // 1000) then
      return "-ERR invalid expire time in 'set' command\r\n"
    end
    ms = unit == "EX" and n * 1000 or n
  end
  local k, v = argv[2], argv[3]
  local old = get(k)
  if keep and old ~= nil then
    local left = ttl(k)
    if left >= 0 then ms = left > 0 and left or 1 end
  end
  local done
  if nx then
    done = add(k, v, ms)
  elseif xx and old == nil then
    done = false
  else
    done = set(k, v, ms)
  end
  if done == nil then return ERR_OOM end
  if getold then return old == nil and NIL or bulk(old) end
  return done and OK or NIL
end

function C.MGET(argv, argc)
  if argc < 2 then return arity("mget") end
  local vals = {}
  for i = 2, argc do vals[i - 1] = get(argv[i]) end
  return array(vals, argc - 1)
end

function C.MSET(argv, argc)
  if argc < 3 or argc % 2 == 0 then return arity("mset") end
  for i = 2, argc, 2 do
    if not set(argv[i], argv[i + 1]) then return ERR_OOM end
  end
  return OK
end

function C.DEL(argv, argc)
  if argc < 2 then return arity("del") end
  local n = 0
  for i = 2, argc do
    if del(argv[i]) then n = n + 1 end
  end
  return int(n)
end

function C.EXISTS(argv, argc)
  if argc < 2 then return arity("exists") end
  local n = 0
  for i = 2, argc do
    if get(argv[i]) ~= nil then n = n + 1 end
  end
  return int(n)
end

local function incrby(k, by)
  local n, e = incr(k, by)
  if not n then return e end
  return ":" .. n .. "\r\n"
end

function C.INCR(argv, argc)
  if argc ~= 2 then return arity("incr") end
  return incrby(argv[2], 1)
end

function C.DECR(argv, argc)
  if argc ~= 2 then return arity("decr") end
  return incrby(argv[2], -1)
end

function C.INCRBY(argv, argc)
  if argc ~= 3 then return arity("incrby") end
  local by = toint(argv[3])
  if not by then return ERR_INT end
  return incrby(argv[2], by)
end

function C.DECRBY(argv, argc)
  if argc ~= 3 then return arity("decrby") end
  local by = toint(argv[3])
  if not by or by == minint then return by and "-ERR decrement would overflow\r\n" or ERR_INT end
  return incrby(argv[2], -by)
end

-- EXPIRE key seconds [NX | XX | GT | LT], and PEXPIRE in milliseconds.
local function expire_cmd(name, scale, argv, argc)
  if argc < 3 then return arity(name) end
  local f = {} -- the options given: NX, XX, GT, LT
  for i = 4, argc do
    local o = upper(argv[i])
    if o ~= "NX" and o ~= "XX" and o ~= "GT" and o ~= "LT" then
      return err("ERR Unsupported option " .. argv[i])
    end
    f[o] = true
  end
  if f.NX and (f.XX or f.GT or f.LT) then
    return "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
  end
  if f.GT and f.LT then
    return "-ERR GT and LT options at the same time are not compatible\r\n"
  end
  local n = toint(argv[3])
  if not n then return ERR_INT end
  if n > maxint // scale or n < minint // scale then
    return "-ERR invalid expire time in '" .. name .. "' command\r\n"
  end
  local k = argv[2]
  local left = ttl(k)
  if left == -2 then return ZERO end
  local ms = n * scale
  -- no time to live counts as an infinite one for GT and LT
  if (f.NX and left >= 0) or (f.XX and left < 0)
    or (f.GT and (left < 0 or ms <= left))
    or (f.LT and left >= 0 and ms >= left) then
    return ZERO
  end
  if ms <= 0 then del(k) else expire(k, ms) end
  return ONE
end

function C.EXPIRE(argv, argc) return expire_cmd("expire", 1000, argv, argc) end
function C.PEXPIRE(argv, argc) return expire_cmd("pexpire", 1, argv, argc) end

function C.PERSIST(argv, argc)
  if argc ~= 2 then return arity("persist") end
  if ttl(argv[2]) < 0 then return ZERO end
  expire(argv[2], nil)
  return ONE
end

function C.TTL(argv, argc)
  if argc ~= 2 then return arity("ttl") end
  local ms = ttl(argv[2])
  if ms < 0 then return int(ms) end
  return int((ms + 500) // 1000)
end

function C.PTTL(argv, argc)
  if argc ~= 2 then return arity("pttl") end
  return int(ttl(argv[2]))
end

function C.KEYS(argv, argc)
  if argc ~= 2 then return arity("keys") end
  local pat, list, n = argv[2], {}, 0
  if pat == "*" then
    each(function(k) n = n + 1; list[n] = k end)
  else
    pat = glob(pat)
    each(function(k)
      if find(k, pat) then n = n + 1; list[n] = k end
    end)
  end
  return array(list, n)
end

function C.DBSIZE(argv, argc)
  if argc ~= 1 then return arity("dbsize") end
  local n = 0
  each(function() n = n + 1 end)
  return int(n)
end

local function flushall(argv, argc)
  if argc > 2 then return ERR_SYNTAX end
  if argc == 2 then
    local o = upper(argv[2])
    if o ~= "ASYNC" and o ~= "SYNC" then return ERR_SYNTAX end
  end
  flush()
  return OK
end
function C.FLUSHALL(argv, argc) return flushall(argv, argc) end
function C.FLUSHDB(argv, argc) return flushall(argv, argc) end

function C.SELECT(argv, argc)
  if argc ~= 2 then return arity("select") end
  local n = toint(argv[2])
  if not n then return ERR_INT end
  if n ~= 0 then return "-ERR DB index is out of range\r\n" end
  return OK
end

function C.QUIT() return OK, true end

-- What CONFIG GET answers: what redis-benchmark and clients ask at connect.
local CONFIG = {
  save = "", appendonly = "no", databases = "1", maxmemory = "0",
  ["maxmemory-policy"] = SHARED and "allkeys-lru" or "noeviction",
  ["proto-max-bulk-len"] = tostring(MAX_BULK), timeout = "0",
}

local function subcommand(name, argv)
  return err("ERR unknown subcommand '" .. sub(argv[2], 1, 128) .. "'. Try " .. name .. " HELP.")
end

function C.CONFIG(argv, argc)
  if argc < 2 then return arity("config") end
  if upper(argv[2]) ~= "GET" then return subcommand("CONFIG", argv) end
  if argc < 3 then return arity("config|get") end
  local list, n = {}, 0
  for i = 3, argc do
    local pat = glob(lower(argv[i]))
    for name, v in pairs(CONFIG) do
      if find(name, pat) then list[n + 1], list[n + 2], n = name, v, n + 2 end
    end
  end
  return array(list, n)
end

function C.COMMAND(argv, argc)
  if argc == 1 then return EMPTY end
  local sc = upper(argv[2])
  if sc == "DOCS" or sc == "INFO" then return EMPTY end
  if sc == "COUNT" then
    local n = 0
    for name in pairs(C) do
      if name == upper(name) then n = n + 1 end
    end
    return int(n)
  end
  return subcommand("COMMAND", argv)
end

function C.CLIENT(argv, argc, state)
  if argc < 2 then return arity("client") end
  local sc = upper(argv[2])
  if sc == "SETNAME" then
    if argc ~= 3 then return arity("client|setname") end
    if find(argv[3], "[^!-~]") then
      return "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    end
    state.name = argv[3] ~= "" and argv[3] or nil
    return OK
  elseif sc == "GETNAME" then
    return state.name and bulk(state.name) or NIL
  elseif sc == "ID" then
    return int(state.socket.id)
  elseif sc == "SETINFO" then
    return OK
  end
  return subcommand("CLIENT", argv)
end

function C.HELLO(argv, argc, state)
  if argc >= 2 and argv[2] ~= "2" then
    if not toint(argv[2]) then return "-ERR Protocol version is not an integer or out of range\r\n" end
    return "-NOPROTO unsupported protocol version\r\n"
  end
  return array({ "server", "redis", "version", "7.0.0", "proto", "2", "id",
    tostring(state.socket.id), "mode", "standalone", "role", "master" }, 12)
end

function C.INFO()
  local n, e = held()
  return bulk(concat({
    "# Server", "redis_version:7.0.0", "redis_mode:standalone",
    "glisten_worker:" .. glisten.worker_id(), "glisten_workers:" .. WORKERS,
    "glisten_store:" .. (SHARED and "shared" or "table"), "",
    "# Keyspace", n > 0 and ("db0:keys=" .. n .. ",expires=" .. e .. ",avg_ttl=0") or nil,
  }, "\r\n") .. "\r\n")
end

-- Lower-case names too, so that neither needs upper() per command.
do
  local names = {}
  for name in pairs(C) do names[#names + 1] = name end
  for _, name in ipairs(names) do C[lower(name)] = C[name] end
end

-- The unknown command's reply, as Redis words it.
local function unknown(argv, argc)
  local args = {}
  local len = 0
  for i = 2, argc do
    if len >= 128 then break end
    local a = "'" .. sub(argv[i], 1, 128 - len) .. "' "
    args[#args + 1] = a
    len = len + #a
  end
  return err("ERR unknown command '" .. sub(argv[1], 1, 128) .. "', with args beginning with: " .. concat(args))
end

-- Inline commands -----------------------------------------------------------

local ESC = { n = "\n", r = "\r", t = "\t", b = "\b", a = "\a" }

-- Splits an inline command into argv as Redis's sdssplitargs does: words
-- between blanks, "double quotes" with \n \r \t \b \a \xHH and \<byte>,
-- 'single quotes' with \'. Returns the count, or nil for unbalanced quotes.
local function split(line, argv)
  if not find(line, "[\"']") then -- the common case: no quotes
    local n, p = 0, 1
    while true do
      local s, e = find(line, "%S+", p)
      if not s then return n end
      n = n + 1
      argv[n] = sub(line, s, e)
      p = e + 1
    end
  end
  local n, p, len = 0, 1, #line
  while true do
    p = find(line, "%S", p)
    if not p then return n end
    local word, q = {}, nil
    while p <= len do
      local c = sub(line, p, p)
      if q == '"' then
        if c == "\\" and match(line, "^x%x%x", p + 1) then
          word[#word + 1] = char(tonumber(sub(line, p + 2, p + 3), 16)); p = p + 3
        elseif c == "\\" and p < len then
          p = p + 1
          local e = sub(line, p, p)
          word[#word + 1] = ESC[e] or e
        elseif c == '"' then
          if p < len and not find(line, "^%s", p + 1) then return nil end
          p = p + 1
          break
        else
          word[#word + 1] = c
        end
      elseif q == "'" then
        if c == "\\" and sub(line, p + 1, p + 1) == "'" then
          word[#word + 1] = "'"; p = p + 1
        elseif c == "'" then
          if p < len and not find(line, "^%s", p + 1) then return nil end
          p = p + 1
          break
        else
          word[#word + 1] = c
        end
      elseif find(c, "%s") then
        break
      elseif c == '"' or c == "'" then
        q = c
      else
        word[#word + 1] = c
      end
      p = p + 1
      if p > len and q then return nil end -- the quote never closed
    end
    n = n + 1
    argv[n] = concat(word)
  end
end

-- The connection ------------------------------------------------------------
-- handler gets the bytes of each read. Most reads hold whole commands of one
-- to three short bulk strings (PING, GET key, SET key value, pipelined or
-- not): the fast path reads each with two calls, byte and one pattern match,
-- since calls into C cost far more than Lua's own instructions. Anything else
-- (a longer array, a bulk with \r in it or of 1,000 bytes or more, an inline
-- command of several words, a command cut in two by the read) goes to the
-- general reader. A command the read cut short is finished there at once,
-- with receive: the reads up to the end of its line, or exactly the bytes
-- its bulk lacks in one piece (the bytes after those stay in the socket for
-- the next call of handler). So nothing is parsed or copied twice, however
-- slowly the bytes come.

local send, receive -- the socket's methods, found at the first connection

-- "0" to "999" as integers: a table lookup where tonumber would be a call.
local LEN = {}
for i = 0, 999 do LEN[tostring(i)] = i end

-- An array of 1, 2 or 3 bulk strings without \r in them, from the "\r\n"
-- after its count to the end of its last bulk: lengths and bulks, and where
-- the next command starts.
local B = "%$(%d+)\r\n([^\r]*)\r\n"
local FAST1 = "^\r\n" .. B .. "()"
local FAST2 = "^\r\n" .. B .. B .. "()"
local FAST3 = "^\r\n" .. B .. B .. B .. "()"
local INLINE1 = "^([^%s\"']+)\r?\n()" -- a one-word inline command

-- Runs the command in argv[1..argc], then clears argv. Returns the reply,
-- and true when the connection must close after it.
local function run(argv, argc, state)
  local name = argv[1]
  local fn = C[name]
  if not fn and #name <= 16 then fn = C[upper(name)] end
  local reply, quit
  if fn then reply, quit = fn(argv, argc, state)
  else reply = unknown(argv, argc) end
  for i = 1, argc do argv[i] = nil end
  return reply, quit
end

-- Writes the replies out[1..nout] (nothing after them) in one send, one
-- writev of the pieces, and forgets them.
local function write_out(sock, out, nout)
  if nout == 1 then send(sock, out[1])
  elseif nout > 1 then send(sock, out) end
  for i = 1, nout do out[i] = nil end
end

-- What a line that never ends is called, by where it started.
local TOO_BIG = {
  mbulk = "too big mbulk count string", bulk = "too big bulk count string",
  inline = "too big inline request",
}

-- The general reader: every command in buf from pos on, its replies added
-- after the nout already in state.out, then all written. A command that
-- buf holds only the start of is finished with receive (the replies before
-- it written first).
local function general(state, buf, pos, nout)
  local sock, argv, out = state.socket, state.argv, state.out
  local argc, nargs, room = 0, 0, 0 -- the array being read: its count, bulks read, room left
  local n, held = #buf, 0
  local fail, quit -- a protocol error's words; QUIT was read
  while true do
    local want, line -- what the command lacks: want bytes from pos, or the end of a line
    while true do -- every complete command in buf, answered in order
      if argc == 0 then -- a new command
        if pos > n then break end
        if byte(buf, pos) == 42 then -- '*': an array of bulk strings
          local cnt, p = match(buf, "^(%-?%d+)\r\n()", pos + 1)
          if not cnt then
            -- a "\n" (its line's end) and no count before it: wrong
            if find(buf, "\n", pos + 1, true) then fail = "invalid multibulk length"
            else line = "mbulk" end
            break
          end
          cnt = tonumber(cnt)
          if cnt > MAX_ARGS then fail = "invalid multibulk length"; break end
          pos = p
          if cnt <= 0 then goto continue end -- an empty array: nothing to run
          argc, nargs, room = cnt, 0, MAX_COMMAND
        else -- an inline command: one line
          local e = find(buf, "\n", pos, true)
          if not e then line = "inline"; break end
          local text = sub(buf, pos, e > pos and byte(buf, e - 1) == 13 and e - 2 or e - 1)
          pos = e + 1
          local cnt = split(text, argv)
          if not cnt then fail = "unbalanced quotes in request"; break end
          if cnt == 0 then goto continue end -- an empty line: no reply
          argc, nargs = cnt, cnt
        end
      end
      while nargs < argc do -- the bulks of the array
        if pos > n then line = "bulk"; break end
        local len, p = match(buf, "^%$(%d+)\r\n()", pos)
        if not len then
          local c = byte(buf, pos)
          if c ~= 36 then fail = "expected '$', got '" .. char(c) .. "'"
          elseif find(buf, "\n", pos + 1, true) then fail = "invalid bulk length"
          else line = "bulk" end
          break
        end
        len = tonumber(len)
        if len > MAX_BULK or len > room then fail = "invalid bulk length"; break end
        local last = p + len - 1
        if last + 2 > n then want = last + 3 - pos; break end
        nargs = nargs + 1
        argv[nargs] = sub(buf, p, last)
        room = room - len
        pos = last + 3
      end
      if fail or nargs < argc then break end
      do -- a whole command: run it
        local reply
        reply, quit = run(argv, argc, state)
        argc, nargs = 0, 0
        nout = nout + 1
        out[nout] = reply
        held = held + #reply
        if quit then break end
        if held >= OUT_BATCH then
          write_out(sock, out, nout)
          nout, held = 0, 0
        end
      end
      ::continue::
    end
    if fail or quit or (not want and not line) then break end
    -- the command was cut short: the replies so far, then the rest of it
    write_out(sock, out, nout)
    nout, held = 0, 0
    local have = n - pos + 1
    if line then -- reads until a "\n" comes, the line's pieces kept apart
      local parts, total = { sub(buf, pos) }, have
      while total <= MAX_INLINE do
        local data = receive(sock)
        if not data then break end
        parts[#parts + 1] = data
        total = total + #data
        if find(data, "\n", 1, true) then break end
      end
      if #parts == 1 or not find(parts[#parts], "\n", 1, true) then
        if total <= MAX_INLINE then -- the peer left: its unfinished command goes too
          for i = 1, nargs do argv[i] = nil end
          return
        end
        fail = TOO_BIG[line]
        break
      end
      buf = concat(parts)
    else -- exactly the bytes the bulk lacks
      local data = receive(sock, want - have)
      if not data then
        for i = 1, nargs do argv[i] = nil end
        return
      end
      buf = sub(buf, pos) .. data
    end
    pos, n = 1, #buf
  end

  if fail then
    nout = nout + 1
    out[nout] = err("ERR Protocol error: " .. fail)
  end
  write_out(sock, out, nout)
  if fail or quit then sock:close() end
end

local function with_init(state)
  if not send then send, receive = state.socket.send, state.socket.receive end
  state.argv, state.out = {}, {}
end

local function handler(msg, state)
  local argv, out, pos, n = state.argv, state.out, 1, #msg
  local nout, held = 0, 0
  while pos <= n do -- the fast path
    local b1, b2 = byte(msg, pos, pos + 1)
    local argc, e = 0, nil
    if b1 == 42 then
      if b2 == 50 then -- "*2"
        local l1, a1, l2, a2, p = match(msg, FAST2, pos + 2)
        if p and LEN[l1] == #a1 and LEN[l2] == #a2 then
          argv[1], argv[2], argc, e = a1, a2, 2, p
        end
      elseif b2 == 51 then -- "*3"
        local l1, a1, l2, a2, l3, a3, p = match(msg, FAST3, pos + 2)
        if p and LEN[l1] == #a1 and LEN[l2] == #a2 and LEN[l3] == #a3 then
          argv[1], argv[2], argv[3], argc, e = a1, a2, a3, 3, p
        end
      elseif b2 == 49 then -- "*1"
        local l1, a1, p = match(msg, FAST1, pos + 2)
        if p and LEN[l1] == #a1 then argv[1], argc, e = a1, 1, p end
      end
    else
      local w, p = match(msg, INLINE1, pos)
      if w then argv[1], argc, e = w, 1, p end
    end
    if not e then return general(state, msg, pos, nout) end
    pos = e
    local reply, quit = run(argv, argc, state)
    if nout == 0 and pos > n and not quit then
      return send(state.socket, reply) -- the common case: one command per read
    end
    nout = nout + 1
    out[nout] = reply
    held = held + #reply
    if quit then
      write_out(state.socket, out, nout)
      return state.socket:close()
    end
    if held >= OUT_BATCH then
      write_out(state.socket, out, nout)
      nout, held = 0, 0
    end
  end
  write_out(state.socket, out, nout)
end

return {
  with_init = with_init,
  handler = handler,
}
