-- TLS from the client's side and upgrades in place: connect{tls =}, with
-- verification against a CA, by name, and its failures; sock:starttls as
-- the client and as the server, "plaintext pending"; the STARTTLS SMTP and
-- HTTPS examples with openssl s_client and curl. Certificates are made at
-- start with openssl (a CA, a server certificate for localhost and
-- 127.0.0.1 signed by it, a client certificate signed by it).
local glisten = H.glisten

local LONG = 60 -- bounds a hang only
local dir = H.tmpdir .. "/tlsclient"

local function sh(cmd)
  local ok = os.execute("env -u LD_PRELOAD " .. cmd .. " >/dev/null 2>&1")
  assert(ok, "failed: " .. cmd)
end

-- The certificates, made once for the whole file.
local CA, CERT, KEY, CCERT, CKEY
setup(function()
  assert(os.execute("mkdir -p " .. H.quote(dir)))
  local d = H.quote(dir)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  sh(("openssl req -x509 %s -days 2 -subj /CN=glisten-test-ca -keyout %s/ca.key -out %s/ca.pem"):format(ec, d, d))
  for _, who in ipairs({ "server", "client" }) do
    sh(("openssl req %s -subj /CN=%s -keyout %s/%s.key -out %s/%s.csr"):format(
      ec, who == "server" and "localhost" or "alice", d, who, d, who))
    H.writefile(dir .. "/" .. who .. ".ext", who == "server"
      and "subjectAltName=DNS:localhost,IP:127.0.0.1\n" or "extendedKeyUsage=clientAuth\n")
    sh(("openssl x509 -req -in %s/%s.csr -CA %s/ca.pem -CAkey %s/ca.key -CAcreateserial -days 2 -extfile %s/%s.ext -out %s/%s.pem"):format(
      d, who, d, d, d, who, d, who))
  end
  CA, CERT, KEY = dir .. "/ca.pem", dir .. "/server.pem", dir .. "/server.key"
  CCERT, CKEY = dir .. "/client.pem", dir .. "/client.key"
end)

teardown(function() os.execute("rm -rf " .. H.quote(dir)) end)
after_each(H.no_leaks)

-- A TLS echo server in its own process; extra: more flags.
local function tls_echo(extra)
  return H.start(("--tls-cert %s --tls-key %s %s scripts/echo.lua 0"):format(
    H.quote(CERT), H.quote(KEY), extra or ""))
end

describe("connect with tls", function()
  it("verifies the server against ca and its name, and echoes through TLS", function()
    local p = tls_echo()
    local c = assert(glisten.connect("localhost", p.port, { tls = { ca = CA }, timeout = 5 }))
    c:settimeout(5)
    assert.equal(6, c:send("hello\n"))
    assert.equal("hello", c:receive("*l"))
    local t = c:tlsinfo()
    assert.equal("TLSv1.3", t.version)
    assert.equal("localhost", t.server_name) -- the host, sent as SNI
    assert.is_true(t.verified)
    assert.equal("CN=localhost", t.peer.subject)
    assert.equal("CN=glisten-test-ca", t.peer.issuer)
    assert.same({ "localhost", "127.0.0.1" }, t.peer.san)
    assert.matches("^%x+$", t.peer.sha256)
    assert.matches("^%-%-%-%-%-BEGIN CERTIFICATE", t.peer.pem)
    c:close()
    assert.equal(0, p:stop())
  end)

  it("checks an address as one (no name sent) and honours tls.server_name", function()
    local p = tls_echo()
    local c = assert(glisten.connect("127.0.0.1", p.port, { tls = { ca = CA }, timeout = 5 }))
    assert.is_nil(c:tlsinfo().server_name) -- an address is not sent as SNI
    c:close()
    local bad, err = glisten.connect("127.0.0.1", p.port,
      { tls = { ca = CA, server_name = "other.example" }, timeout = 5 })
    assert.is_nil(bad)
    assert.equal("certificate verify failed: hostname mismatch", err)
    assert.equal(0, p:stop())
  end)

  it("fails with \"certificate verify failed: <reason>\" against the system's store, and counts it once", function()
    local p = tls_echo()
    local before = glisten.stats().errors
    local c, err = glisten.connect("localhost", p.port, { tls = true, timeout = 5 })
    assert.is_nil(c)
    assert.equal("certificate verify failed: unable to get local issuer certificate", err)
    assert.equal(before + 1, glisten.stats().errors)
    -- verification off: served, and tlsinfo says it did not verify
    c = assert(glisten.connect("localhost", p.port, { tls = { verify = false }, timeout = 5 }))
    c:settimeout(5)
    c:send("x\n")
    assert.equal("x", c:receive("*l"))
    c:close()
    H.wait_for(function() return p:stderr():match("unknown ca") end, 5)
    assert.matches("TLS handshake failed from 127%.0%.0%.1:%d+: tlsv1 alert unknown ca", p:stderr())
    assert.equal(0, p:stop())
  end)

  it("presents a client certificate to a server that requires one", function()
    local who = H.script([[
      return { handler = function(m, s)
        local t = s.socket:tlsinfo()
        s.socket:send(tostring(t.verified) .. " " .. t.peer.subject .. "\n")
      end }
    ]])
    local p = H.start(("--tls-cert %s --tls-key %s --tls-ca %s --tls-verify required %s 0"):format(
      H.quote(CERT), H.quote(KEY), H.quote(CA), H.quote(who)))
    local c = assert(glisten.connect("localhost", p.port,
      { tls = { ca = CA, cert = CCERT, key = CKEY }, timeout = 5 }))
    c:settimeout(5)
    c:send("who\n")
    assert.equal("true CN=alice", c:receive("*l"))
    c:close()
    -- without one, the server refuses (TLS 1.3: after the client's
    -- handshake, so the refusal arrives as the stream's end)
    local d = glisten.connect("localhost", p.port, { tls = { ca = CA }, timeout = 5 })
    if d then
      d:settimeout(5)
      d:send("who\n")
      local line, err = d:receive("*l")
      assert.is_nil(line)
      assert.truthy(err == "closed" or err:match("certificate"), err)
      d:close()
    end
    assert.truthy(H.wait_for(function() return p:stderr():match("peer did not return a certificate") end, 5),
      p:stderr())
    assert.equal(0, p:stop())
  end)

  it("runs over a Unix socket too, both ways", function()
    local path = dir .. "/tls.sock"
    local p = H.start(("--tls-cert %s --tls-key %s scripts/echo.lua unix:%s"):format(
      H.quote(CERT), H.quote(KEY), H.quote(path)))
    local c = assert(glisten.connect("unix:" .. path,
      { tls = { ca = CA, server_name = "localhost" }, timeout = 5 }))
    c:settimeout(5)
    c:send("over unix\n")
    assert.equal("over unix", c:receive("*l"))
    assert.is_true(c:tlsinfo().verified)
    c:close()
    -- no name to check against: the chain alone would pass, so a wrong
    -- name must still fail
    local bad, err = glisten.connect("unix:" .. path,
      { tls = { ca = CA, server_name = "nothere.example" }, timeout = 5 })
    assert.is_nil(bad)
    assert.equal("certificate verify failed: hostname mismatch", err)
    assert.equal(0, p:stop())
  end)

  it("reports a bad tls option as misuse, and a missing ca file as nil, err", function()
    assert.has_error(function() glisten.connect("localhost", 1, { tls = 5 }) end,
      "option 'tls' must be a table (or true)")
    assert.has_error(function() glisten.connect("localhost", 1, { tls = { verify = "yes" } }) end,
      "option 'tls.verify' must be a boolean")
    assert.has_error(function() glisten.connect("localhost", 1, { tls = { nope = 1 } }) end,
      "unknown option 'tls.nope'")
    local p = tls_echo()
    local c, err = glisten.connect("localhost", p.port, { tls = { ca = dir .. "/missing.pem" }, timeout = 5 })
    assert.is_nil(c)
    assert.matches("^tls: .*missing%.pem", err)
    assert.equal(0, p:stop())
  end)
end)

describe("a served TLS connection", function()
  it("keeps send's backpressure and max_output: 8 MiB echoed through a 64 KiB queue, byte for byte, while the client reads late", function()
    local N = 8 * 1024 * 1024
    H.serving({
      tls = { cert = CERT, key = KEY },
      max_output = 65536,
      handler = function(msg, state)
        local ok, err = state.socket:send(msg) -- waits while the client does not read
        assert(ok, err)
      end,
    }, function(srv)
      local c = assert(glisten.connect("localhost", srv.port, { tls = { ca = CA }, timeout = 5 }))
      local sent
      local writer = glisten.spawn(function()
        sent = 0
        while sent < N do
          local n = math.min(65536, N - sent)
          assert(c:send(H.stream(sent + 1, sent + n)))
          sent = sent + n
        end
      end)
      glisten.sleep(0.3) -- the server's queue and the kernel's fill meanwhile
      c:settimeout(10)
      H.read_stream(c, 0, N)
      assert.equal(N, sent)
      c:close()
    end)
  end)

  it("says a stream cut without close_notify is closed, with that as the detail", function()
    local script = H.script([[
      return {
        handler = function(m, s) s.socket:send(m) end,
        with_close = function(state, reason, detail)
          io.stderr:write("with_close ", reason, " ", tostring(detail), "\n")
        end,
      }
    ]])
    local p = H.start(("--tls-cert %s --tls-key %s %s 0"):format(H.quote(CERT), H.quote(KEY), H.quote(script)))
    -- a client killed while connected: its kernel ends the stream, no
    -- close_notify
    os.execute(("env -u LD_PRELOAD sh -c '(echo hi; sleep 2) | timeout -s KILL 1 openssl s_client -connect 127.0.0.1:%d -quiet' >/dev/null 2>&1"):format(p.port))
    assert.truthy(H.wait_for(function() return p:stderr():match("with_close") end, 10), p:stderr())
    assert.matches("with_close closed peer closed without close_notify\n", p:stderr())
    assert.equal(0, p:stop())
  end)

  it("reports the peer's close_notify as closed", function()
    local reasons = {}
    H.serving({
      tls = { cert = CERT, key = KEY },
      handler = function() end,
      with_close = function(state, reason, detail)
        reasons[#reasons + 1] = reason .. " " .. tostring(detail)
      end,
    }, function(srv)
      local c = assert(glisten.connect("localhost", srv.port, { tls = { ca = CA }, timeout = 5 }))
      c:close() -- close_notify
      assert.truthy(H.wait_for(function() return #reasons == 1 end, 5))
      assert.equal("closed nil", reasons[1]) -- no detail: a clean end
    end)
  end)
end)

describe("shutdown over TLS", function()
  it("the client's shutdown(\"send\") is a close_notify the server reads as the end, and the answer still comes", function()
    H.serving({
      tls = { cert = CERT, key = KEY },
      with_init = function(state)
        local all = assert(state.socket:receive("*a"))
        state.socket:send(("%d bytes\n"):format(#all))
      end,
      handler = function() end,
    }, function(srv)
      local c = assert(glisten.connect("localhost", srv.port, { tls = { ca = CA }, timeout = 5 }))
      c:settimeout(5)
      assert(c:send(string.rep("x", 300000)))
      assert.equal(1, c:shutdown("send"))
      assert.equal("300000 bytes", c:receive("*l"))
      H.assert_closed(c)
      c:close()
    end)
  end)

  it("a served connection that shuts down its sending side still reads what the client sends", function()
    local got, reason = {}, nil
    H.serving({
      tls = { cert = CERT, key = KEY },
      with_init = function(state)
        state.socket:send("bye\n")
        assert(state.socket:shutdown("send"))
      end,
      handler = function(msg) got[#got + 1] = msg end,
      with_close = function(state, r, detail) reason = r .. " " .. tostring(detail) end,
    }, function(srv)
      local c = assert(glisten.connect("localhost", srv.port, { tls = { ca = CA }, timeout = 5 }))
      c:settimeout(5)
      assert.equal("bye", c:receive("*l"))
      H.assert_closed(c) -- the server's close_notify
      assert.equal(5, c:send("after"))
      assert.truthy(H.wait_for(function() return table.concat(got) == "after" end))
      c:close()
      assert.truthy(H.wait_for(function() return reason end))
      assert.equal("closed nil", reason) -- a clean end both ways
    end)
  end)
end)

describe("starttls", function()
  -- An in-process server that upgrades on "STARTTLS": its handler reads
  -- the command, says GO, upgrades, then echoes what comes under TLS with
  -- the version it runs.
  local function upgrade_server(fn, extra_tls)
    local tls = { cert = CERT, key = KEY, starttls = true }
    for k, v in pairs(extra_tls or {}) do tls[k] = v end
    H.serving({
      tls = tls,
      with_init = function(state)
        local s = state.socket
        s:settimeout(5)
        local line = s:receive("*l")
        if line ~= "STARTTLS" then return s:close() end
        s:send("GO\n")
        local ok, err = s:starttls()
        state.result = { ok, err }
        if not ok then s:close() end
      end,
      handler = function(msg, state)
        state.socket:send(state.socket:tlsinfo().version .. " " .. msg)
      end,
    }, fn)
  end

  it("upgrades a served socket and a connected one in place", function()
    upgrade_server(function(srv)
      local c = H.connect(srv.port)
      assert.is_nil(c:tlsinfo()) -- plain so far
      c:send("STARTTLS\n")
      assert.equal("GO", c:receive("*l"))
      assert.is_true(c:starttls({ ca = CA, server_name = "localhost" }))
      assert.equal("TLSv1.3", c:tlsinfo().version)
      c:send("hi\n")
      assert.equal("TLSv1.3 hi", c:receive("*l"))
      assert.has_error(function() c:starttls() end, "starttls: the socket is already on TLS")
      c:close()
    end)
  end)

  it("refuses plaintext sent behind STARTTLS: nil, \"plaintext pending\", and closes", function()
    local result
    H.serving({
      tls = { cert = CERT, key = KEY, starttls = true },
      with_init = function(state)
        local s = state.socket
        s:settimeout(5)
        s:receive("*l")
        glisten.sleep(0.2) -- the injected line arrives meanwhile
        result = { s:starttls() }
      end,
      handler = function() end,
    }, function(srv)
      local c = H.connect(srv.port)
      c:send("STARTTLS\nMAIL FROM:<injected>\n")
      H.assert_closed(c)
      assert.truthy(H.wait_for(function() return result end, 5))
      assert.same({ nil, "plaintext pending" }, result)
      c:close()
    end)
  end)

  it("as a client, fails verification with the reason and closes", function()
    upgrade_server(function(srv)
      local c = H.connect(srv.port)
      c:send("STARTTLS\n")
      assert.equal("GO", c:receive("*l"))
      local ok, err = c:starttls() -- the system's store knows no test CA
      assert.is_nil(ok)
      assert.equal("certificate verify failed: unable to get local issuer certificate", err)
      local again, err2 = c:send("x")
      assert.is_nil(again)
      assert.truthy(err2)
      c:close()
    end)
  end)

  it("makes an accepted socket of listen the server, with the settings given", function()
    local l = assert(glisten.listen(0))
    local server_saw
    glisten.spawn(function()
      local a = assert(l:accept(5))
      a:settimeout(5)
      assert.equal("STARTTLS", a:receive("*l"))
      a:send("GO\n")
      assert(a:starttls({ cert = CERT, key = KEY }))
      server_saw = a:tlsinfo().version .. " " .. a:receive("*l")
      a:close()
    end)
    local c = H.connect(l.port)
    c:send("STARTTLS\n")
    assert.equal("GO", c:receive("*l"))
    assert.is_true(c:starttls({ ca = CA, server_name = "localhost" }))
    c:send("secret\n")
    H.assert_closed(c)
    c:close()
    l:close()
    assert.equal("TLSv1.3 secret", server_saw)
  end)

  it("raises when the server has no tls settings to upgrade with", function()
    local err
    H.serving({
      with_init = function(state)
        local ok, e = pcall(state.socket.starttls, state.socket)
        err = e
        state.socket:close()
      end,
      handler = function() end,
    }, function(srv)
      local c = H.connect(srv.port)
      H.assert_closed(c)
      c:close()
    end)
    assert.matches("the server has no tls settings", err)
  end)
end)

-- A peer's output (openssl, curl; H.peer).
local function peer(cmd, input) return (H.peer(cmd, input, LONG)) end

describe("the examples", function()
  it("scripts/smtp_starttls.lua: openssl s_client -starttls smtp, AUTH only under TLS", function()
    local p = H.start(("--tls-cert %s --tls-key %s --tls-starttls scripts/smtp_starttls.lua 0"):format(
      H.quote(CERT), H.quote(KEY)))
    -- plain: STARTTLS is offered and AUTH is refused
    local c = H.connect(p.port)
    assert.equal("220 glisten ESMTP ready", c:receive("*l"))
    c:send("EHLO me\r\nAUTH PLAIN x\r\nQUIT\r\n")
    local plain = c:receive("*a")
    assert.matches("250%-STARTTLS", plain)
    assert.matches("530 5%.7%.0 Must issue a STARTTLS command first", plain)
    c:close()
    -- under TLS with a real client: AUTH, a message, QUIT
    local auth = "AGFsaWNlAHNlY3JldA==" -- "\0alice\0secret"
    local out = peer(("sh -c '(sleep 1; printf \"EHLO me\\r\\nAUTH PLAIN %s\\r\\nMAIL FROM:<a@x>\\r\\nRCPT TO:<b@y>\\r\\nDATA\\r\\nhello\\r\\n.\\r\\nQUIT\\r\\n\"; sleep 2) | openssl s_client -starttls smtp -connect 127.0.0.1:%d -CAfile %s -verify_return_error -quiet'"):format(
      auth, p.port, H.quote(CA)))
    assert.matches("250%-AUTH PLAIN", out)
    assert.not_matches("250%-STARTTLS\r?\n250%-AUTH", out)
    assert.matches("235 2%.7%.0 Authentication successful", out)
    assert.matches("250 2%.0%.0 OK: 7 bytes for 1 recipient%(s%) from alice", out)
    assert.matches("221 2%.0%.0 Bye", out)
    assert.equal(0, p:stop())
  end)

  it("scripts/https.lua: curl --cacert over HTTPS with keep-alive and ALPN", function()
    local p = H.start(("--tls-cert %s --tls-key %s --alpn http/1.1 scripts/https.lua 0"):format(
      H.quote(CERT), H.quote(KEY)))
    local url = ("https://localhost:%d"):format(p.port)
    local out = peer(("curl -sS --cacert %s %s/a %s/b"):format(H.quote(CA), url, url))
    assert.matches("path /a\ntls TLSv1%.3 [%w_]+\nalpn http/1%.1\nserver_name localhost\n", out)
    assert.matches("path /b\n", out)
    -- a client certificate is not asked for: none
    assert.matches("client none", out)
    -- and the same script serves plain HTTP without the flags
    local q = H.start("scripts/https.lua 0")
    out = peer(("curl -sS http://127.0.0.1:%d/plain"):format(q.port))
    assert.equal("path /plain\ntls none\n", out)
    assert.equal(0, p:stop())
    assert.equal(0, q:stop())
  end)
end)
