-- A memcached server: the text protocol of memcached's protocol.txt, as
-- memcached 1.6 answers it.
--   glisten-lua scripts/memcached.lua 11211
--   printf 'set greeting 0 0 5\r\nhello\r\nget greeting\r\n' | nc -N 127.0.0.1 11211
--   memccp --servers=127.0.0.1:11211 somefile; memccat --servers=127.0.0.1:11211 somefile
--   memcstat --servers=127.0.0.1:11211
--
-- Commands: get, gets, gat, gats (any number of keys); set, add, replace,
-- append, prepend, cas (flags, exptime, noreply); delete; incr, decr (64-bit
-- unsigned: incr wraps, decr stops at 0); touch; flush_all [delay]
-- [noreply]; version; verbosity; stats (and "stats reset"); quit. Many
-- commands may arrive in one read (pipelining); the replies go out in order.
--
-- packet = "line": glisten cuts the input into command lines (in C), and
-- handler gets one per call; a storage command's data block, which may
-- hold any bytes, is read inside handler with receive(bytes + 2), which
-- takes exactly that many bytes whatever the packet mode. Replies go out as
-- pieces (sock:send(a, b, c), or a table), not joined into a new string.
--
-- Limits, as memcached's defaults: a key of at most 250 bytes; a value of at
-- most 1 MiB less 1 KiB (MAX_VALUE: the rest of memcached's 1 MiB item is
-- its key and header), a larger one is refused with "SERVER_ERROR object
-- too large for cache" and its data read and dropped; items of at most
-- 64 MiB in all (the MEMCACHED_MEMORY_MB environment variable sets another
-- figure), past which the items stored longest ago and not read since are
-- evicted (memcached's LRU, approximated by a clock); a command line of at
-- most 64 KiB (max_line): a longer one closes the connection without a
-- reply, as memcached 1.6 closes one whose over-long line is not a get
-- (memcached reads a get of any length; here a get is bounded too). A
-- last command line the peer ends with its close instead of "\r\n" is
-- still run (glisten hands it to handler), where memcached ignores it.
--
-- Expiry: exptime 0 never expires, up to 30 days (2592000) is seconds from
-- now, more is a Unix time, negative is expired at once. Expired items are
-- dropped when next looked at, or evicted.
--
-- One worker: the items live in this worker's Lua state, and every command
-- runs against them without a lock because one worker runs one callback at a
-- time. Several workers (-w N) would each have their own items, and
-- glisten.shared cannot do cas, append or incr on an item in one atomic step,
-- so the script refuses to load in a pool of more than one worker. To use
-- more cores, run several servers on several ports and list them all to the
-- client (--servers=127.0.0.1:11211,127.0.0.1:11212), which spreads the keys
-- over them, as memcached clients do across servers.
local glisten = require "glisten"

if glisten.worker_count() > 1 then
  error("memcached.lua keeps its items in one worker's Lua state: serve it "
    .. "with one worker (-w 1), and several servers for several cores", 0)
end

local find, match, sub, byte = string.find, string.match, string.sub, string.byte
local tonumber, tostring, concat, ult, tointeger = tonumber, tostring, table.concat, math.ult,
  math.tointeger
local now = glisten.now

local VERSION = "1.6.0-glisten-lua"
local MAX_KEY = 250
local MAX_VALUE = 1024 * 1024 - 1024
local MAX_BYTES = tonumber(os.getenv("MEMCACHED_MEMORY_MB") or "64")
if not MAX_BYTES or MAX_BYTES < 1 then
  error("MEMCACHED_MEMORY_MB must be a number of MiB, 1 or more", 0)
end
MAX_BYTES = math.floor(MAX_BYTES * 1024 * 1024)
local ITEM_COST = 96 -- bytes counted per item besides its key, VALUE line and data
local MAX_RELATIVE = 60 * 60 * 24 * 30 -- exptimes past this are Unix times

-- The items. Each is { head, data, expiry, cas, key, hot }: head is the
-- line a get answers with, "VALUE <key> <flags> <bytes>\r\n", made once
-- when the item is stored; data is the data block with its "\r\n", the
-- very string receive returned, so a get sends head, data and "END\r\n" as
-- they are and a set copies its value nowhere; expiry is 0 (never) or a
-- time as glisten.now() counts; cas is its unique 64-bit number; hot is set
-- by every get and cleared by the clock.
local HEAD <const>, DATA <const>, EXPIRY <const>, CAS <const>, KEY <const>, HOT <const> =
  1, 2, 3, 4, 5, 6
local items = {}
-- The items in the order they were stored, oldest at ring[head], for
-- eviction; an entry whose item was replaced or deleted since is skipped.
local ring, head, tail = {}, 1, 0
local used, curr_items = 0, 0 -- the bytes counted, and the live items
local cas_seq = 0

local started = now()
local pid = 0 -- the process's id, for stats (Lua has no getpid)
do
  local f = io.open("/proc/self/stat")
  if f then
    pid = f:read("n") or 0
    f:close()
  end
end
local counters = {}
local COUNTERS = { "curr_connections", "total_connections", "cmd_get", "cmd_set",
  "cmd_flush", "cmd_touch", "get_hits", "get_misses", "get_expired", "delete_misses",
  "delete_hits", "incr_misses", "incr_hits", "decr_misses", "decr_hits", "cas_misses",
  "cas_hits", "cas_badval", "touch_hits", "touch_misses", "store_too_large",
  "total_items", "evictions" }
-- The commonest counters are locals (a global table lookup per request adds up).
local cmd_get, get_hits, get_misses, cmd_set = 0, 0, 0, 0
local function reset_counters()
  for _, name in ipairs(COUNTERS) do counters[name] = 0 end
  cmd_get, get_hits, get_misses, cmd_set = 0, 0, 0, 0
end
reset_counters()

local STORED, NOT_STORED, EXISTS, NOT_FOUND = "STORED\r\n", "NOT_STORED\r\n",
  "EXISTS\r\n", "NOT_FOUND\r\n"
local END, ERROR, CRLF = "END\r\n", "ERROR\r\n", "\r\n"
local VERSION_LINE = "VERSION " .. VERSION .. CRLF
local BAD_FORMAT = "CLIENT_ERROR bad command line format\r\n"
local BAD_CHUNK = "CLIENT_ERROR bad data chunk\r\n"
local BAD_EXPTIME = "CLIENT_ERROR invalid exptime argument\r\n"
local TOO_LARGE = "SERVER_ERROR object too large for cache\r\n"

local function cost(it) return #it[HEAD] + #it[DATA] + #it[KEY] + ITEM_COST end

-- Forgets the item it stored under key.
local function unlink(key, it)
  items[key] = nil
  used = used - cost(it)
  curr_items = curr_items - 1
end

-- The live item under key, or nil; an expired one is dropped.
local function live(key)
  local it = items[key]
  if it then
    local exp = it[EXPIRY]
    if exp == 0 or exp > now() then return it end
    unlink(key, it)
  end
  return nil
end

-- Evicts until the items fit in MAX_BYTES: the oldest stored first, but an
-- item read since it was last looked at here goes to the back once more
-- (a clock, so items still being read stay).
local function evict()
  local t = now()
  while used > MAX_BYTES and head <= tail do
    local it = ring[head]
    ring[head] = nil
    head = head + 1
    local key = it[KEY]
    if items[key] == it then
      local exp = it[EXPIRY]
      if it[HOT] and (exp == 0 or exp > t) then
        it[HOT] = false
        tail = tail + 1
        ring[tail] = it
      else
        unlink(key, it)
        counters.evictions = counters.evictions + 1
      end
    end
  end
end

-- Rebuilds the ring without the entries of replaced and deleted items, once
-- they outnumber the live ones: the ring stays within twice the items.
local function compact()
  local fresh, n = {}, 0
  for i = head, tail do
    local it = ring[i]
    if items[it[KEY]] == it then
      n = n + 1
      fresh[n] = it
    end
  end
  ring, head, tail = fresh, 1, n
end

-- Stores a new item under key, in place of any other: its VALUE line, its
-- data with "\r\n", its expiry.
local function link(key, value_line, data, exp)
  cas_seq = cas_seq + 1
  local it = { value_line, data, exp, cas_seq, key, false }
  local old = items[key]
  if old then
    used = used - cost(old)
  else
    curr_items = curr_items + 1
  end
  items[key] = it
  used = used + cost(it)
  tail = tail + 1
  ring[tail] = it
  counters.total_items = counters.total_items + 1
  if used > MAX_BYTES then evict() end
  if tail - head > 2 * curr_items + 1024 then compact() end
end

-- The head line of an item: flags and bytes (the data's length) in decimal.
local function header(key, flags, bytes)
  return "VALUE " .. key .. " " .. flags .. " " .. bytes .. CRLF
end

-- The parts of an item: flags (a string), the data without its "\r\n".
local function unpack_item(it)
  return match(it[HEAD], "^VALUE [^ ]+ (%d+) "), sub(it[DATA], 1, -3)
end

-- The expiry time of exptime e (an integer), as items keep it.
local function expiry(e)
  if e == 0 then return 0 end
  if e < 0 then return -1 end
  if e > MAX_RELATIVE then return e end
  return now() + e
end

-- The unsigned 64-bit integer a string of decimal digits spells, as a Lua
-- integer (two's complement: from 2^63 on it reads negative), or nil past
-- 2^64 - 1.
local function u64(s)
  if #s < 19 then return tonumber(s) end
  local n = 0
  for i = 1, #s do
    local d = byte(s, i) - 48
    if ult(0x1999999999999999, n) or (n == 0x1999999999999999 and d > 5) then return nil end
    n = n * 10 + d
  end
  return n
end

-- n as an unsigned 64-bit integer, in decimal.
local function u64str(n)
  if n >= 0 then return tostring(n) end
  local q = (n >> 1) // 5 -- n // 10, unsigned
  return q .. (n - q * 10)
end

-- The integer s spells in decimal (an exptime), or nil.
local function integer(s)
  return find(s, "^%-?%d+$") and tointeger(tonumber(s)) or nil
end

-- The words of s from position at, in the reusable table words; their
-- count. Only the uncommon paths use it.
local words = {}
local function split(s, at)
  local n = 0
  for w in s:sub(at):gmatch("[^ ]+") do
    n = n + 1
    words[n] = w
  end
  return n
end

-- Reads and drops n bytes of a data block memcached refuses; false when the
-- peer went away first.
local function swallow(sock, n)
  while n > 0 do
    local piece = n > 65536 and 65536 or n
    if not sock:receive(piece) then return false end
    n = n - piece
  end
  return true
end

local commands = {}

-- set, add, replace, append, prepend and cas: the command line, then the
-- data block. Each mode decides, given the live item (or nil), what to reply
-- and whether to store.
local function storage(mode)
  local is_cas = mode == "cas"
  return function(sock, line, at)
    -- one space before the key, as clients write it: the key is found with
    -- a plain find, not a character class tried on each of its bytes
    local key, flags, exptime, bytes, rest
    local k = find(line, " ", at + 1, true)
    if k and k > at + 1 then
      flags, exptime, bytes, rest = match(line, "^(%d+) +(%-?%d+) +(%d+) *(.-) *$", k + 1)
      if flags then key = sub(line, at + 1, k - 1) end
    end
    if not key then -- any other spacing
      key, flags, exptime, bytes, rest = match(line, "^ +([^ ]+) +(%d+) +(%-?%d+) +(%d+) *(.-) *$", at)
    end
    local unique, noreply
    if key and rest ~= "" then -- cas's unique, noreply, or a word memcached ignores
      if is_cas then
        unique, rest = match(rest, "^(%d+) *([^ ]*)$")
        if not unique then
          key = nil -- to the checks below: ERROR or CLIENT_ERROR
        end
      else
        if find(rest, " ", 1, true) then return sock:send(ERROR) end
      end
      noreply = rest == "noreply"
    elseif is_cas then
      key = nil
    end
    local f = key and tonumber(flags)
    local e = key and tointeger(tonumber(exptime)) -- nil past 64 bits
    local n = key and tonumber(bytes)
    if not (key and f <= 4294967295 and e and n <= 2147483645 and #key <= MAX_KEY
        and (not unique or u64(unique))) then
      -- which error: too few or too many words is ERROR, a bad one CLIENT_ERROR
      local count = split(line, at)
      local want = is_cas and 5 or 4
      if count < want or count > want + 1 then return sock:send(ERROR) end
      if words[count] == "noreply" then return end
      return sock:send(BAD_FORMAT)
    end
    cmd_set = cmd_set + 1
    if n > MAX_VALUE then
      counters.store_too_large = counters.store_too_large + 1
      if mode == "set" then -- memcached drops what a refused set would replace
        local old = items[key]
        if old then unlink(key, old) end
      end
      -- a peer gone meanwhile ends the connection after this handler
      if swallow(sock, n + 2) and not noreply then return sock:send(TOO_LARGE) end
      return
    end
    -- the data block and its "\r\n"; nil when the peer went away first,
    -- and nothing is stored
    local data = sock:receive(n + 2)
    if not data then return end
    local cr, lf = byte(data, -2, -1)
    if cr ~= 13 or lf ~= 10 then
      if not noreply then return sock:send(BAD_CHUNK) end
      return
    end
    -- the numbers as the command line wrote them, unless with leading zeros
    if #flags > 1 and byte(flags) == 48 then flags = tostring(f) end
    if #bytes > 1 and byte(bytes) == 48 then bytes = tostring(n) end
    local reply = STORED
    if mode == "set" then
      link(key, header(key, flags, bytes), data, expiry(e))
    else
      local it = live(key)
      if mode == "add" then
        if it then reply = NOT_STORED else link(key, header(key, flags, bytes), data, expiry(e)) end
      elseif mode == "replace" then
        if it then link(key, header(key, flags, bytes), data, expiry(e)) else reply = NOT_STORED end
      elseif mode == "cas" then
        if not it then
          reply = NOT_FOUND
          counters.cas_misses = counters.cas_misses + 1
        elseif it[CAS] ~= u64(unique) then
          reply = EXISTS
          counters.cas_badval = counters.cas_badval + 1
        else
          link(key, header(key, flags, bytes), data, expiry(e))
          counters.cas_hits = counters.cas_hits + 1
        end
      elseif not it then -- append, prepend
        reply = NOT_STORED
      else -- the item keeps its flags and expiry
        local oflags, odata = unpack_item(it)
        local size = #odata + n
        if size > MAX_VALUE then
          reply = NOT_STORED -- as memcached, which cannot allocate it
        elseif mode == "append" then
          link(key, header(key, oflags, size), odata .. data, it[EXPIRY])
        else
          link(key, header(key, oflags, size), sub(data, 1, n) .. it[DATA], it[EXPIRY])
        end
      end
    end
    if not noreply then return sock:send(reply) end
  end
end
for _, mode in ipairs { "set", "add", "replace", "append", "prepend", "cas" } do
  commands[mode] = storage(mode)
end

-- get, gets, gat, gats: keys from position at; exp: a new expiry for gat.
-- The reply is a table of pieces (each item's head and data, then END),
-- which send writes without joining them when there are at most 64; it
-- goes out in parts of about 256 KiB, so a get of many large values never
-- holds them all in one string.
local function retrieve(sock, line, at, with_cas, exp)
  local pos = at
  while true do -- a key too long is the whole reply, before any part goes
    local s, e = find(line, "[^ ]+", pos)
    if not s then break end
    if e - s + 1 > MAX_KEY then return sock:send(BAD_FORMAT) end
    pos = e + 1
  end
  local out, n, size, t = {}, 0, 0, now()
  pos = at
  while true do
    local s, e = find(line, "[^ ]+", pos)
    if not s then break end
    pos = e + 1
    local key = sub(line, s, e)
    cmd_get = cmd_get + 1
    local it = items[key]
    if it then
      local x = it[EXPIRY]
      if x ~= 0 and x <= t then
        unlink(key, it)
        counters.get_expired = counters.get_expired + 1
        it = nil
      end
    end
    if it then
      get_hits = get_hits + 1
      it[HOT] = true
      if exp then
        it[EXPIRY] = exp
        counters.touch_hits = counters.touch_hits + 1
      end
      local data = it[DATA]
      if with_cas then
        out[n + 1] = sub(it[HEAD], 1, -3) .. " " .. u64str(it[CAS]) .. CRLF
      else
        out[n + 1] = it[HEAD]
      end
      out[n + 2] = data
      n = n + 2
      size = size + #data
      if size > 256 * 1024 then
        if not sock:send(out) then return end
        out, n, size = {}, 0, 0
      end
    else
      get_misses = get_misses + 1
      if exp then counters.touch_misses = counters.touch_misses + 1 end
    end
  end
  out[n + 1] = END
  return sock:send(out)
end

-- A get of one key: the common case, three pieces with no table and no copy.
local function get_one(sock, key)
  if #key > MAX_KEY then return sock:send(BAD_FORMAT) end
  cmd_get = cmd_get + 1
  local it = items[key]
  if it then
    local exp = it[EXPIRY]
    if exp == 0 or exp > now() then
      get_hits = get_hits + 1
      it[HOT] = true
      return sock:send(it[HEAD], it[DATA], END)
    end
    unlink(key, it)
    counters.get_expired = counters.get_expired + 1
  end
  get_misses = get_misses + 1
  return sock:send(END)
end

function commands.get(sock, line, at)
  local key, after = match(line, "^ +([^ ]+) *()", at)
  if not key then return sock:send(ERROR) end
  if after <= #line then return retrieve(sock, line, at, false) end
  return get_one(sock, key)
end

function commands.gets(sock, line, at)
  if not find(line, "^ +[^ ]", at) then return sock:send(ERROR) end
  return retrieve(sock, line, at, true)
end

-- gat and gats: get and touch, "gat <exptime> <key>*".
local function gat(with_cas)
  return function(sock, line, at)
    local exptime, keys = match(line, "^ +([^ ]+)()", at)
    if not exptime then return sock:send(ERROR) end
    local e = integer(exptime)
    if not e then return sock:send(BAD_EXPTIME) end
    counters.cmd_touch = counters.cmd_touch + 1
    return retrieve(sock, line, keys, with_cas, expiry(e))
  end
end
commands.gat, commands.gats = gat(false), gat(true)

function commands.delete(sock, line, at)
  local count = split(line, at)
  if count < 1 or count > 3 then return sock:send(ERROR) end
  local noreply = words[count] == "noreply"
  if count > 1 and not (count == 2 and (noreply or words[2] == "0")
      or count == 3 and words[2] == "0" and noreply) then
    if noreply then return end
    return sock:send("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n")
  end
  local key = words[1]
  if #key > MAX_KEY then
    if not noreply then return sock:send(BAD_FORMAT) end
    return
  end
  local it = live(key)
  local reply = NOT_FOUND
  if it then
    unlink(key, it)
    reply = "DELETED\r\n"
    counters.delete_hits = counters.delete_hits + 1
  else
    counters.delete_misses = counters.delete_misses + 1
  end
  if not noreply then return sock:send(reply) end
end

-- incr and decr: "incr <key> <delta> [noreply]", on a value that is a
-- 64-bit unsigned decimal number.
local function arith(is_incr)
  local hits = is_incr and "incr_hits" or "decr_hits"
  local misses = is_incr and "incr_misses" or "decr_misses"
  return function(sock, line, at)
    local count = split(line, at)
    if count < 2 or count > 3 then return sock:send(ERROR) end
    local noreply = count == 3 and words[3] == "noreply"
    local reply
    local key, delta = words[1], match(words[2], "^%+?(%d+)$")
    delta = delta and u64(delta)
    if #key > MAX_KEY then
      reply = BAD_FORMAT
    elseif not delta then
      reply = "CLIENT_ERROR invalid numeric delta argument\r\n"
    else
      local it = live(key)
      if not it then
        counters[misses] = counters[misses] + 1
        reply = NOT_FOUND
      else
        local flags, data = unpack_item(it)
        -- as strtoull: spaces first, then digits, then a space or the end
        local digits, after = match(data, "^%s*%+?(%d+)()")
        local v = digits and (after > #data or find(data, "^%s", after)) and u64(digits)
        if not v then
          reply = "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        else
          if is_incr then
            v = v + delta -- wraps at 2^64, as memcached's
          elseif ult(v, delta) then
            v = 0
          else
            v = v - delta
          end
          local s = u64str(v)
          link(key, header(key, flags, #s), s .. CRLF, it[EXPIRY])
          counters[hits] = counters[hits] + 1
          reply = s .. CRLF
        end
      end
    end
    if not noreply then return sock:send(reply) end
  end
end
commands.incr, commands.decr = arith(true), arith(false)

function commands.touch(sock, line, at)
  local count = split(line, at)
  if count < 2 or count > 3 then return sock:send(ERROR) end
  local noreply = count == 3 and words[3] == "noreply"
  local reply
  local key, e = words[1], integer(words[2])
  if #key > MAX_KEY then
    reply = BAD_FORMAT
  elseif not e then
    reply = BAD_EXPTIME
  else
    counters.cmd_touch = counters.cmd_touch + 1
    local it = live(key)
    if it then
      it[EXPIRY] = expiry(e)
      counters.touch_hits = counters.touch_hits + 1
      reply = "TOUCHED\r\n"
    else
      counters.touch_misses = counters.touch_misses + 1
      reply = NOT_FOUND
    end
  end
  if not noreply then return sock:send(reply) end
end

-- flush_all [delay] [noreply]: every item stored before the flush is gone;
-- with a delay, the flush happens then (a later flush_all replaces it).
local pending_flush
local function flush()
  items, ring, head, tail = {}, {}, 1, 0
  used, curr_items = 0, 0
end
function commands.flush_all(sock, line, at)
  local count = split(line, at)
  if count > 2 then return sock:send(ERROR) end
  local noreply = words[count] == "noreply" and count > 0
  local delay = 0
  if count > (noreply and 1 or 0) then
    delay = integer(words[1])
    if not delay then
      if not noreply then return sock:send(BAD_EXPTIME) end
      return
    end
  end
  counters.cmd_flush = counters.cmd_flush + 1
  if pending_flush then
    pending_flush:cancel()
    pending_flush = nil
  end
  if delay <= 0 then
    flush()
  else
    local at_time = expiry(delay)
    pending_flush = glisten.after(math.max(0, at_time - now()), function()
      pending_flush = nil
      flush()
    end)
  end
  if not noreply then return sock:send("OK\r\n") end
end

function commands.version(sock)
  return sock:send(VERSION_LINE)
end

function commands.verbosity(sock, line, at)
  local count = split(line, at)
  if count < 1 or count > 2 then return sock:send(ERROR) end
  local noreply = words[count] == "noreply"
  if not find(words[1], "^%d+$") then
    if not noreply then return sock:send(BAD_FORMAT) end
    return
  end
  if not noreply then return sock:send("OK\r\n") end
end

function commands.stats(sock, line, at)
  local count = split(line, at)
  if count == 1 and words[1] == "reset" then
    local open = counters.curr_connections
    reset_counters()
    counters.curr_connections = open
    return sock:send("RESET\r\n")
  elseif count > 0 then
    return sock:send(ERROR)
  end
  local t = now()
  counters.cmd_get, counters.get_hits, counters.get_misses, counters.cmd_set =
    cmd_get, get_hits, get_misses, cmd_set
  local out = {
    "STAT pid " .. pid,
    "STAT uptime " .. math.floor(t - started),
    "STAT time " .. math.floor(t),
    "STAT version " .. VERSION,
    "STAT pointer_size 64",
    "STAT threads 1",
  }
  for _, name in ipairs(COUNTERS) do out[#out + 1] = "STAT " .. name .. " " .. counters[name] end
  out[#out + 1] = "STAT curr_items " .. curr_items
  out[#out + 1] = "STAT bytes " .. used
  out[#out + 1] = "STAT limit_maxbytes " .. MAX_BYTES
  out[#out + 1] = "END\r\n"
  return sock:send(concat(out, CRLF))
end

function commands.quit(sock) return sock:close() end

-- One command line, without its end of line: dispatches on its first word.
-- The commands after it wait until it is done, data block included.
local function handler(line, state)
  local sock = state.socket
  -- the commonest line, "get <key>", found with plain finds (a pattern
  -- would try a character class on each byte of the key)
  if find(line, "get ", 1, true) == 1 and #line > 4 and not find(line, " ", 5, true) then
    return get_one(sock, sub(line, 5))
  end
  local name, at = match(line, "^ *([^ ]+)()")
  local f = commands[name] -- name is nil on an empty line: no command
  if not f then return sock:send(ERROR) end
  return f(sock, line, at)
end

return {
  packet = "line",
  max_line = 64 * 1024, -- the longest command line (a get of many keys)
  handler = handler,
  with_init = function()
    counters.curr_connections = counters.curr_connections + 1
    counters.total_connections = counters.total_connections + 1
  end,
  with_close = function()
    counters.curr_connections = counters.curr_connections - 1
  end,
}
