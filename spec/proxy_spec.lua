-- The PROXY protocol (docs/reference.md, "The PROXY protocol"):
-- proxy_protocol and --proxy-protocol, sock:proxyinfo(), getpeername and
-- getsockname from the header, handshake_timeout and stats().proxy_failed,
-- through the command. Headers are written by hand (printf and nc, and
-- bytes built here, CRC32C included) and sent by a real HAProxy. The specs
-- that run HAProxy carry the tag #haproxy (group spec_haproxy, Skipped on a
-- machine without it or without openssl); those with a TLS peer #openssl.
local glisten = H.glisten
local certs = dofile("spec/certs.lua")

local LONG = 60 -- bounds a hang only

local running = {} -- HAProxy processes, ended after each spec
after_each(function()
  for _, h in ipairs(running) do h.stop() end
  running = {}
  H.no_leaks()
end)

local C
local function pki()
  C = C or certs.make(H.tmpdir .. "/pki")
  return C
end

local nfile = 0
local function tmpfile(data)
  nfile = nfile + 1
  return H.writefile(("%s/proxy_spec%d"):format(H.tmpdir, nfile), data or "")
end

local function peer(cmd, input) return H.peer(cmd, input, LONG) end

-- The server script: it answers lines: "who" with what the socket says of
-- its addresses, its PROXY header and TLS ("@who k=v|..."), "stats" with
-- glisten.stats(), "bye" by closing, and anything else with "@echo " and
-- the line in hex; with_init and with_close append "init COMMAND" (the
-- header's command, or "none") and "close REASON" to its events file.
local BODY = [==[
local glisten = require "glisten"
local function note(s)
  local f = assert(io.open(EVENTS, "a"))
  f:write(s, "\n")
  f:close()
end
local function show(v) if v == nil then return "nil" end return tostring(v) end
local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
local function addr(a)
  if not a then return "nil" end
  return ("%s %s %s"):format(show(a.address), show(a.port), show(a.family))
end
local function who(s)
  local ip, port, fam = s:getpeername()
  local lip, lport, lfam = s:getsockname()
  local f = { "peer=" .. show(ip), "port=" .. show(port), "family=" .. show(fam),
    "sock=" .. ("%s %s %s"):format(show(lip), show(lport), show(lfam)) }
  local pi = s:proxyinfo()
  if pi then
    local types = {}
    for k in pairs(pi.tlvs) do types[#types + 1] = k end
    table.sort(types)
    for i, k in ipairs(types) do types[i] = ("%d:%s"):format(k, hex(pi.tlvs[k])) end
    f[#f + 1] = "version=" .. show(pi.version)
    f[#f + 1] = "command=" .. show(pi.command)
    f[#f + 1] = "src=" .. addr(pi.src)
    f[#f + 1] = "dst=" .. addr(pi.dst)
    f[#f + 1] = "tlvs=" .. table.concat(types, ",")
  else
    f[#f + 1] = "version=none"
  end
  local t = s:tlsinfo()
  f[#f + 1] = "tls=" .. (t and t.version or "none")
  return "@who " .. table.concat(f, "|") .. "|\n"
end
local OPTS = OPTIONS
OPTS.with_init = function(state)
  local pi = state.socket:proxyinfo()
  note("init " .. (pi and pi.command or "none"))
end
OPTS.with_close = function(_, why) note("close " .. why) end
OPTS.handler = function(chunk, state)
  state.buf = (state.buf or "") .. chunk
  while true do
    local line, rest = state.buf:match("^(.-)\n(.*)$")
    if not line then return end
    state.buf = rest
    local s = state.socket
    if line == "who" then s:send(who(s))
    elseif line == "stats" then
      local st = glisten.stats()
      s:send(("@stats connections=%d|tls_failed=%d|proxy_failed=%d|refused=%d|\n"):format(
        st.connections, st.tls_failed, st.proxy_failed, st.refused))
    elseif line == "bye" then s:close() return
    else s:send("@echo " .. hex(line) .. "\n") end
  end
end
return OPTS
]==]

local lua_table = H.lua_table

-- Starts the command serving the script with the options (Lua source of a
-- table; C: the certificates' paths) and flags; p.events is its events file.
local function serve(options, args)
  local events = tmpfile()
  local path = H.script(("local EVENTS = %q\nlocal C = %s\nlocal OPTIONS = %s\n"):format(
    events, lua_table(C or {}), options or "{ proxy_protocol = true }") .. BODY)
  local p = H.start(("%s %s 0"):format(args or "", path))
  p.events = events
  return p
end

-- How many lines of p's events file match the pattern.
local function count(p, pattern) return H.count_lines(p.events, pattern) end

-- The "@who" (or another "@") line in text, as a table.
local function fields(text, what)
  local line = text and text:match("@" .. (what or "who") .. " ([^\n]*)")
  if not line then return nil end
  local t = {}
  for k, v in line:gmatch("([%w_]+)=([^|]*)|") do t[k] = v end
  return t
end

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

local function v1(src, dst, sport, dport, proto)
  return ("PROXY %s %s %s %d %d\r\n"):format(proto or "TCP4", src, dst, sport, dport)
end

-- CRC32C (Castagnoli, reflected 0x82F63B78), bit by bit.
local function crc32c(s)
  local crc = 0xFFFFFFFF
  for i = 1, #s do
    crc = crc ~ s:byte(i)
    for _ = 1, 8 do
      crc = (crc >> 1) ~ (0x82F63B78 & -(crc & 1))
    end
  end
  return ~crc & 0xFFFFFFFF
end

local SIG = "\r\n\r\n\0\r\nQUIT\n"

-- A version 2 header: cmd 0 (LOCAL) or 1 (PROXY), the family and transport
-- byte, the address block, TLVs ({type, value}, in order) and, with crc, a
-- CRC32C TLV last (bad_crc: its value then off by one bit).
local function v2(cmd, fam, block, tlvs, crc, bad_crc)
  local body = { block }
  for _, t in ipairs(tlvs or {}) do body[#body + 1] = string.pack(">B s2", t[1], t[2]) end
  if crc then body[#body + 1] = string.pack(">B I2 I4", 3, 4, 0) end
  body = table.concat(body)
  local h = SIG .. string.char(0x20 | cmd, fam) .. string.pack(">I2", #body) .. body
  if crc then
    local value = crc32c(h) ~ (bad_crc and 1 or 0)
    h = h:sub(1, -5) .. string.pack(">I4", value)
  end
  return h
end

local function ipv4(a, b, c, d) return string.char(a, b, c, d) end
local IPV6_LOOPBACK = ("\0"):rep(15) .. "\1"

local function v2_inet(src, dst, sport, dport)
  return src .. dst .. string.pack(">I2 I2", sport, dport)
end

-- A connection to p that sends data at once.
local function send(p, data)
  local c = H.connect(p.port, nil, LONG)
  assert(c:send(data))
  return c
end

-- "PROXY header refused from 127.0.0.1:PORT: REASON" in p's log.
local function refused(p, reason)
  return p:stderr():match("glisten: PROXY header refused from 127%.0%.0%.1:%d+: " .. reason)
end

-- The counters, asked with a header of its own.
local function stats(p)
  local c = send(p, "PROXY UNKNOWN\r\nstats\nbye\n")
  local t = assert(fields(c:receive("*a"), "stats"))
  c:close()
  for k, v in pairs(t) do t[k] = tonumber(v) end
  return t
end

describe("headers written by hand", function()
  it("take a version 1 TCP4 header from printf and nc: getpeername, getsockname and proxyinfo are its", function()
    local p = serve("{ proxy_protocol = true }")
    local out = peer(("nc -N 127.0.0.1 %d"):format(p.port),
      v1("127.10.20.30", "127.0.0.9", 4242, 8080) .. "who\n")
    local w = assert(fields(out), out)
    assert.same({ "127.10.20.30", "4242", "inet", "127.0.0.9 8080 inet" }, { w.peer, w.port, w.family, w.sock })
    assert.same({ "1", "PROXY", "127.10.20.30 4242 inet", "127.0.0.9 8080 inet", "", "none" },
      { w.version, w.command, w.src, w.dst, w.tlvs, w.tls })
    assert.is_true(H.wait_for(function() return count(p, "^close closed$") == 1 end, LONG))
    assert.equal(1, count(p, "^init PROXY$"))
    assert.equal(0, p:stop())
  end)

  it("takes --proxy-protocol, and version 1 TCP6", function()
    local p = serve("{}", "--proxy-protocol")
    local c = send(p, v1("::1", "::1", 4242, 443, "TCP6") .. "who\n")
    local w = assert(fields(c:receive("*l")))
    assert.same({ "::1", "4242", "inet6", "::1 443 inet6" }, { w.peer, w.port, w.family, w.sock })
    assert.same({ "1", "PROXY", "::1 4242 inet6", "::1 443 inet6" }, { w.version, w.command, w.src, w.dst })
    c:close()
    assert.equal(0, p:stop())
  end)

  it("keeps the connection's own addresses for version 1 UNKNOWN", function()
    local p = serve()
    for _, header in ipairs{ "PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n" } do
      local c = send(p, header .. "who\n")
      local ip, port = c:getsockname()
      local w = assert(fields(c:receive("*l")))
      assert.same({ ip, tostring(port), "inet", "1", "nil", "nil" },
        { w.peer, w.port, w.family, w.version, w.src, w.dst })
      assert.equal("127.0.0.1 " .. p.port .. " inet", w.sock)
      c:close()
    end
    assert.equal(0, p:stop())
  end)

  it("takes version 2 over IPv4 with TLVs, a CRC32C among them, each as sent", function()
    assert.equal(0xE3069283, crc32c("123456789")) -- the check value of CRC-32C
    local p = serve()
    local tlvs = { { 0x01, "h2" }, { 0x02, "authority.test" }, { 0x04, "\0\0\0" },
      { 0x05, "unique-42" }, { 0xE0, "\0\1\2\255 binary" } }
    local header = v2(1, 0x11, v2_inet(ipv4(127, 10, 20, 30), ipv4(127, 0, 0, 9), 50000, 443), tlvs, true)
    local c = send(p, header .. "who\n")
    local w = assert(fields(c:receive("*l")))
    assert.same({ "127.10.20.30", "50000", "inet", "127.0.0.9 443 inet" }, { w.peer, w.port, w.family, w.sock })
    assert.same({ "2", "PROXY", "127.10.20.30 50000 inet", "127.0.0.9 443 inet" },
      { w.version, w.command, w.src, w.dst })
    local want = {}
    for _, t in ipairs(tlvs) do want[#want + 1] = ("%d:%s"):format(t[1], hex(t[2])) end
    table.insert(want, 3, "3:" .. hex(header:sub(-4)))
    assert.equal(table.concat(want, ","), w.tlvs)
    c:close()
    assert.equal(0, p:stop())
  end)

  it("takes version 2 over IPv6, and LOCAL (a health check) with the connection's own addresses", function()
    local p = serve()
    local c = send(p, v2(1, 0x21, v2_inet(IPV6_LOOPBACK, IPV6_LOOPBACK, 1234, 5678)) .. "who\n")
    local w = assert(fields(c:receive("*l")))
    assert.same({ "::1", "1234", "inet6", "::1 5678 inet6", "2", "PROXY" },
      { w.peer, w.port, w.family, w.sock, w.version, w.command })
    c:close()
    -- LOCAL, with an address block that is skipped unread
    c = send(p, v2(0, 0x11, v2_inet(ipv4(127, 9, 9, 9), ipv4(127, 9, 9, 9), 1, 2)) .. "who\n")
    local ip, port = c:getsockname()
    w = assert(fields(c:receive("*l")))
    assert.same({ ip, tostring(port), "inet", "2", "LOCAL", "nil", "nil", "" },
      { w.peer, w.port, w.family, w.version, w.command, w.src, w.dst, w.tlvs })
    c:close()
    assert.is_true(H.wait_for(function() return count(p, "^init ") == 2 end, LONG))
    assert.equal(1, count(p, "^init LOCAL$"))
    assert.equal(0, p:stop())
  end)

  it("hands the bytes after the header, sent in the same write, to the handler intact", function()
    local p = serve()
    local data = H.random_bytes(3000):gsub("[\r\n]", "")
    for _, header in ipairs{ v1("127.1.1.1", "127.0.0.1", 1, 2),
                             v2(1, 0x11, v2_inet(ipv4(127, 1, 1, 1), ipv4(127, 0, 0, 1), 1, 2), {}, true) } do
      local c = send(p, header .. data .. "\nwho\n")
      assert.equal("@echo " .. hex(data), c:receive("*l"))
      assert.equal("127.1.1.1", fields(c:receive("*l")).peer)
      c:close()
    end
    -- and a header followed by a large request in the same write
    local big = H.random_bytes(200000):gsub("[\r\n]", "")
    local c = send(p, v1("127.1.1.2", "127.0.0.1", 1, 2) .. big .. "\n")
    local want = "@echo " .. hex(big) .. "\n"
    assert.equal(want, c:receive(#want))
    c:close()
    assert.equal(0, p:stop())
  end)

  it("waits for a header split over two writes with a pause", function()
    local p = serve()
    local headers = { v1("127.2.2.2", "127.0.0.1", 7, 8),
      v2(1, 0x11, v2_inet(ipv4(127, 2, 2, 2), ipv4(127, 0, 0, 1), 7, 8), { { 0x02, "split.test" } }, true) }
    for _, header in ipairs(headers) do
      for _, cut in ipairs{ 1, 5, 13, #header - 1 } do
        local c = send(p, header:sub(1, cut))
        glisten.sleep(0.2)
        c:send(header:sub(cut + 1) .. "after\nwho\n")
        assert.equal("@echo " .. hex("after"), c:receive("*l"))
        assert.equal("127.2.2.2", fields(c:receive("*l")).peer)
        c:close()
      end
    end
    assert.equal(0, stats(p).proxy_failed)
    assert.equal(0, p:stop())
  end)
end)

describe("a connection without a good header", function()
  local cases = {
    { "garbage (an HTTP request)", "GET / HTTP/1.0\r\n\r\n", "not a PROXY header" },
    { "a version 1 line too long", "PROXY UNKNOWN " .. ("x"):rep(150) .. "\r\n", "PROXY v1 header too long" },
    { "a bad version 1 address", v1("127.0.0.300", "127.0.0.1", 1, 2), "bad PROXY v1 address" },
    { "a bad version 1 port", v1("127.0.0.3", "127.0.0.1", 65536, 2), "bad PROXY v1 port" },
    { "a version 2 CRC32C that does not match",
      v2(1, 0x11, v2_inet(ipv4(127, 3, 3, 3), ipv4(127, 0, 0, 1), 1, 2), { { 0x02, "x" } }, true, true),
      "PROXY v2 CRC32C mismatch" },
    { "a version 2 header longer than 4,112 bytes",
      SIG .. "\x21\x11" .. string.pack(">I2", 4097) .. ("\0"):rep(4097), "PROXY v2 header too long" },
    { "a header cut short by the peer (nc -N)", "PROXY TCP4 127.0.", "incomplete PROXY header", "nc" },
    { "no header in handshake_timeout", "", "no PROXY header in time" },
    { "half a header in handshake_timeout", SIG:sub(1, 6), "no PROXY header in time" },
  }
  for _, case in ipairs(cases) do
    it("is refused, logged and counted, never reaching with_init: " .. case[1], function()
      local p = serve("{ proxy_protocol = true, handshake_timeout = 0.5 }")
      if case[4] == "nc" then -- it half-closes after its input
        local out = peer(("nc -N 127.0.0.1 %d"):format(p.port), case[2])
        assert.equal("", out)
      else
        local c = send(p, case[2])
        H.assert_closed(c)
        c:close()
      end
      assert.is_true(H.wait_for(function() return refused(p, case[3]) ~= nil end, LONG), p:stderr())
      assert.equal(0, count(p, "^init"))
      local st = stats(p)
      assert.equal(1, st.proxy_failed)
      assert.equal(0, st.tls_failed)
      assert.equal(1, count(p, "^init"))
      assert.equal(0, p:stop())
    end)
  end

  it("counts every refusal and logs them at most once a second", function()
    local p = serve()
    for i = 1, 20 do
      local c = send(p, "BAD " .. i .. "\n")
      H.assert_closed(c)
      c:close()
    end
    assert.equal(20, stats(p).proxy_failed)
    local _, lines = p:stderr():gsub("PROXY header refused", "")
    assert.is_true(lines >= 1 and lines < 20, p:stderr())
    assert.equal(1, count(p, "^init"))
    assert.equal(0, p:stop())
  end)

  it("counts max_connections_per_address by the client the header names, not the proxy", function()
    local p = serve("{ proxy_protocol = true, max_connections_per_address = 2 }")
    local function client(header)
      local c = send(p, header .. "who\n")
      local line = c:receive("*l")
      return c, line and fields(line)
    end
    local held = {}
    for i = 1, 2 do -- two from one client, through the one proxy address
      local c, w = client(v1("127.4.4.4", "127.0.0.1", 1000 + i, 2))
      assert.equal("127.4.4.4", w and w.peer)
      held[i] = c
    end
    local over = send(p, v1("127.4.4.4", "127.0.0.1", 1003, 2) .. "who\n")
    H.assert_closed(over) -- its third: refused, as at accept without a proxy
    over:close()
    -- others behind the same proxy are served: by version 1 and 2, IPv6
    local c, w = client(v1("127.5.5.5", "127.0.0.1", 1, 2))
    assert.equal("127.5.5.5", w and w.peer)
    held[#held + 1] = c
    c, w = client(v2(1, 0x21, v2_inet(("\0"):rep(15) .. "\7", IPV6_LOOPBACK, 3, 4)))
    assert.equal("::7", w and w.peer)
    held[#held + 1] = c
    -- a header without the client's address (UNKNOWN, LOCAL) counts under
    -- the connection's own peer, the proxy
    local unknown = {}
    for i = 1, 2 do
      c, w = client("PROXY UNKNOWN\r\n")
      assert.equal("127.0.0.1", w and w.peer)
      unknown[i] = c
    end
    over = send(p, v2(0, 0x00, "") .. "who\n")
    H.assert_closed(over)
    over:close()
    for _, u in ipairs(unknown) do u:close() end
    -- a place comes back when its connection ends
    held[1]:close()
    assert.is_true(H.wait_for(function() return count(p, "^close closed$") == 3 end, LONG))
    c, w = client(v1("127.4.4.4", "127.0.0.1", 1004, 2))
    assert.equal("127.4.4.4", w and w.peer)
    held[1] = c
    local st = stats(p)
    assert.same({ 2, 0 }, { st.refused, st.proxy_failed })
    assert.equal(8, count(p, "^init ")) -- the stats client's too
    for _, h in ipairs(held) do h:close() end
    assert.equal(0, p:stop())
  end)

  it("serves the next client after any refusal, and holds a slot only until its end", function()
    local p = serve("{ proxy_protocol = true, max_connections = 1 }")
    local bad = send(p, "nonsense\n")
    H.assert_closed(bad)
    bad:close()
    local c = send(p, v1("127.4.4.4", "127.0.0.1", 1, 2) .. "who\n")
    assert.equal("127.4.4.4", fields(c:receive("*l")).peer)
    c:close()
    assert.equal(0, p:stop())
  end)
end)

-- HAProxy on free ports of 127.0.0.1 in front of glisten-lua: one frontend
-- per backend line given (a server's address and options); returns its
-- frontend ports and a stop(); it runs until the spec ends.
local runner_pid = tonumber(H.readfile("/proc/self/stat"):match("^(%d+)"))

local function listening(port)
  local hexport = (":%04X "):format(port)
  for line in (H.readfile("/proc/net/tcp") or ""):gmatch("[^\n]+") do
    local laddr, state = line:match("^%s*%d+: (%x+:%x+) %x+:%x+ (%x+)")
    if laddr and (laddr .. " "):find(hexport, 1, true) and state == "0A" then return true end
  end
  return false
end

local function haproxy(backends)
  local cfg = { "global", "  maxconn 2000", "defaults", "  mode tcp", "  timeout connect 5s",
    "  timeout client 60s", "  timeout server 60s" }
  local ports = {}
  for i, b in ipairs(backends) do
    local l = assert(glisten.listen(0, "127.0.0.1"))
    ports[i] = l.port
    l:close()
    cfg[#cfg + 1] = ("frontend f%d\n  bind 127.0.0.1:%d\n  default_backend b%d"):format(i, ports[i], i)
    cfg[#cfg + 1] = ("backend b%d\n  server s%d %s"):format(i, i, b)
  end
  local path = tmpfile(table.concat(cfg, "\n") .. "\n")
  local pidf, log = tmpfile(), tmpfile()
  -- a watchdog ends it should this runner die first (as H.start's does)
  local cmd = ("(env -u LD_PRELOAD haproxy -f %s -db >%s 2>&1 & c=$!; echo $c >%s; "
    .. "(while kill -0 %d && kill -0 $c; do sleep 1; done 2>/dev/null; "
    .. "kill -0 %d 2>/dev/null || kill -9 $c 2>/dev/null) & wait $c) >/dev/null 2>&1 &")
    :format(H.quote(path), H.quote(log), H.quote(pidf), runner_pid, runner_pid)
  os.execute("sh -c " .. H.quote(cmd))
  local h = { ports = ports }
  function h.log() return H.readfile(log) or "" end
  function h.stop()
    local pid = (H.readfile(pidf) or ""):match("%d+")
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  end
  running[#running + 1] = h
  local ok = H.wait_for(function()
    for _, port in ipairs(ports) do if not listening(port) then return false end end
    return true
  end, LONG)
  assert(ok, "haproxy did not start:\n" .. h.log())
  return h
end

describe("behind HAProxy", function()
  it("takes send-proxy (version 1): the client's own address and port #haproxy", function()
    local p = serve()
    local hp = haproxy{ ("127.0.0.1:%d send-proxy"):format(p.port) }
    for _ = 1, 3 do
      local c = H.connect(hp.ports[1], nil, LONG)
      local ip, port = c:getsockname()
      c:send("who\n")
      local w = assert(fields(c:receive("*l")))
      assert.same({ ip, tostring(port), "inet" }, { w.peer, w.port, w.family })
      assert.same({ "1", "PROXY", ("%s %d inet"):format(ip, port), ("127.0.0.1 %d inet"):format(hp.ports[1]) },
        { w.version, w.command, w.src, w.dst })
      assert.equal(("127.0.0.1 %d inet"):format(hp.ports[1]), w.sock)
      c:close()
    end
    assert.equal(0, stats(p).proxy_failed)
    assert.equal(0, p:stop())
  end)

  it("takes send-proxy-v2 with a CRC32C, and its LOCAL health checks #haproxy", function()
    local p = serve()
    local hp = haproxy{
      ("127.0.0.1:%d send-proxy-v2 proxy-v2-options crc32c"):format(p.port),
      ("127.0.0.1:%d send-proxy-v2 check check-send-proxy inter 200"):format(p.port),
    }
    local c = H.connect(hp.ports[1], nil, LONG)
    local ip, port = c:getsockname()
    local data = H.random_bytes(1000):gsub("[\r\n]", "")
    c:send(data .. "\nwho\n")
    assert.equal("@echo " .. hex(data), c:receive("*l"))
    local w = assert(fields(c:receive("*l")))
    assert.same({ ip, tostring(port), "inet", "2", "PROXY" }, { w.peer, w.port, w.family, w.version, w.command })
    assert.equal(("127.0.0.1 %d inet"):format(hp.ports[1]), w.dst)
    assert.matches("^3:%x%x%x%x%x%x%x%x$", w.tlvs) -- checked by glisten-lua, or refused
    c:close()
    -- the health checks of the second server: LOCAL headers
    assert.is_true(H.wait_for(function() return count(p, "^init LOCAL$") >= 2 end, LONG), H.readfile(p.events))
    assert.equal(0, stats(p).proxy_failed)
    assert.equal(0, p:stop())
  end)

  it("passes TLS through with send-proxy-v2-ssl to a server with tls and proxy_protocol #haproxy", function()
    pki()
    local p = serve("{ proxy_protocol = true, tls = { cert = C.cert, key = C.key } }")
    local hp = haproxy{ ("127.0.0.1:%d send-proxy-v2-ssl"):format(p.port) }
    -- socat as the TLS client, from a port of its own choosing here
    local l = assert(glisten.listen(0, "127.0.0.1"))
    local from = l.port
    l:close()
    local out, ok = peer(("socat -T %d - OPENSSL:127.0.0.1:%d,cafile=%s,commonname=localhost,bind=127.0.0.1:%d")
      :format(LONG, hp.ports[1], H.quote(C.ca), from), "through\nwho\nbye\n")
    assert.is_true(ok, out)
    assert.matches("@echo " .. hex("through") .. "\n", out)
    local w = assert(fields(out), out)
    assert.same({ "127.0.0.1", tostring(from), "2", "PROXY", "TLSv1.3" }, { w.peer, w.port, w.version, w.command, w.tls })
    assert.equal(("127.0.0.1 %d inet"):format(hp.ports[1]), w.dst)
    -- the SSL TLV (0x20) HAProxy adds: the client's TLS passed through, so
    -- it says no TLS of HAProxy's own (client bits 0)
    assert.matches("32:00", w.tlvs)
    assert.is_true(H.wait_for(function() return count(p, "^close ") == 1 end, LONG))
    assert.equal(0, p:stop())
  end)
end)

describe("PROXY before TLS", function()
  it("refuses a TLS client that sends no header, counted as a PROXY failure #openssl", function()
    pki()
    local p = serve("{ proxy_protocol = true, tls = { cert = C.cert, key = C.key } }")
    local out, ok = peer(("openssl s_client -connect 127.0.0.1:%d -CAfile %s"):format(p.port, H.quote(C.ca)), "who\n")
    assert.is_falsy(ok, out)
    assert.is_true(H.wait_for(function() return refused(p, "not a PROXY header") ~= nil end, LONG), p:stderr())
    assert.equal(0, count(p, "^init"))
    -- a header, then a TLS handshake that fails: a TLS failure
    local c = send(p, v1("127.5.5.5", "127.0.0.1", 1, 2) .. "GET / HTTP/1.0\r\n\r\n")
    H.assert_closed(c)
    c:close()
    assert.is_true(H.wait_for(function()
      return p:stderr():match("TLS handshake failed from 127%.0%.0%.1:%d+: http request") ~= nil
    end, LONG), p:stderr())
    assert.equal(0, p:stop())
  end)
end)
