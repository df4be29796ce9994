-- scripts/http.lua under the glisten-lua command, with real HTTP clients:
-- curl for GET, HEAD, uploads (Content-Length, chunked, Expect:
-- 100-continue), keep-alive and static files; raw sockets for pipelining
-- and for malformed requests; wrk for a short load.
local glisten = H.glisten

local start, cleanup, quote = H.start, H.no_leaks, H.quote
local SCRIPT = "scripts/http.lua"

-- Every wait here only bounds a hang; a busy machine must never reach it.
local LONG = 60

-- The limits at the top of the script, read from its source, so the specs
-- follow them when they change.
local LIMITS = {}
do
  local src = assert(H.readfile(SCRIPT))
  for _, name in ipairs({ "MAX_LINE", "MAX_HEAD", "MAX_HEADERS", "MAX_BODY" }) do
    local expr = assert(src:match("\nlocal " .. name .. " = ([^\n]+)"), name)
    LIMITS[name] = assert(load("return " .. expr))()
  end
end

-- The folder the server's /static/ serves, and a file next to it (outside
-- it) that must never be served.
local STATIC = H.tmpdir .. "/http_static"
local SECRET = H.tmpdir .. "/http_secret.txt"
assert(os.execute("mkdir -p " .. quote(STATIC .. "/sub")))
H.writefile(SECRET, "the secret next to the static folder\n")
local BLOB = H.random_bytes(1024 * 1024 + 7)
H.writefile(STATIC .. "/blob.bin", BLOB)
H.writefile(STATIC .. "/index.html", "<p>hello</p>\n")
H.writefile(STATIC .. "/sub/note.txt", "a note in a subfolder\n")
H.writefile(STATIC .. "/.hidden", "hidden\n")
H.writefile(STATIC .. "/empty.txt", "")

-- glisten-lua serving the script, its static folder STATIC.
local function serve(args)
  return start((args and args .. " " or "") .. SCRIPT,
    { prefix = "HTTP_STATIC_DIR=" .. quote(STATIC) })
end

local nfile = 0
local function tmpname()
  nfile = nfile + 1
  return ("%s/http_spec%d"):format(H.tmpdir, nfile)
end

-- Runs curl with args (its progress meter off, errors on); returns what it
-- printed (stdout and stderr) and whether it succeeded.
local function curl(args)
  return H.peer("curl -sS " .. args, nil, LONG)
end

local function url(p, path) return ("http://127.0.0.1:%d%s"):format(p.port, path) end

-- A client whose every call waits at most LONG seconds.
local function connect(p) return H.connect(p.port, nil, LONG) end

-- Reads one response from sock: {status =, line =, headers = {lowercase
-- name = value}, body =}. A response to HEAD (head_only) has no body.
local function response(sock, head_only)
  local line, err = sock:receive("*l")
  if not line then return nil, err end
  local r = { line = line, headers = {}, body = "" }
  r.status = tonumber(line:match("^HTTP/1%.1 (%d%d%d) "))
  assert(r.status, "status line: " .. line)
  while true do
    local h = assert(sock:receive("*l"))
    if h == "" then break end
    local k, v = h:match("^([^:]+): (.*)$")
    assert(k, "header line: " .. h)
    k = k:lower()
    assert(r.headers[k] == nil, "header sent twice: " .. k)
    r.headers[k] = v
  end
  local n = tonumber(r.headers["content-length"])
  assert(n, "no Content-Length in " .. line)
  if n > 0 and not head_only then r.body = assert(sock:receive(n)) end
  return r
end

-- The response's status line and headers as curl -i or -I prints them,
-- by lowercase name.
local function curl_head(out)
  local status = out:match("HTTP/1%.1 (%d%d%d)")
  local headers = {}
  for k, v in out:gmatch("\n([%w%-]+): ([^\r\n]*)\r") do headers[k:lower()] = v end
  return tonumber(status), headers
end

-- Sends a request that breaks the protocol; checks the status of the
-- answer, that it says "Connection: close", and that the server closes
-- the connection after it (once the client has sent nothing more for a
-- while: the script's lingering close). Returns the response.
local function refused(p, request, status)
  local s = connect(p)
  assert(s:send(request))
  local r = assert(response(s))
  assert.equal(status, r.status, r.line .. "\n" .. r.body)
  assert.equal("close", r.headers.connection)
  local data, err = s:receive("*a")
  assert.is_nil(err)
  assert.equal("", data) -- nothing more: no answer to what came after
  s:close()
  return r
end

-- Runs refused(p, request, status) for each {request, status} at once, each
-- in a coroutine of its own (each waits out the server's lingering close);
-- fails with every error they raised. Returns the responses, in order.
local function refuse_all(p, cases)
  local left, errors, responses = #cases, {}, {}
  for i, case in ipairs(cases) do
    glisten.spawn(function()
      local ok, r = pcall(refused, p, case[1], case[2])
      if ok then responses[i] = r else errors[#errors + 1] = ("%q: %s"):format(case[1]:sub(1, 120), tostring(r)) end
      left = left - 1
    end)
  end
  assert(H.wait_for(function() return left == 0 end, LONG * 2), "the refusals did not end")
  assert(#errors == 0, table.concat(errors, "\n"))
  return responses
end

describe("scripts/http.lua", function()
  after_each(cleanup)

  it("answers GET / with curl, and HEAD with the same headers and no body", function()
    local p = serve()
    local out, ok = curl("-i " .. url(p, "/"))
    assert.is_true(ok, out)
    local status, get = curl_head(out)
    assert.equal(200, status)
    assert.equal("5", get["content-length"])
    assert.equal("hello", out:match("\r\n\r\n(.*)$"))
    out, ok = curl("-I " .. url(p, "/"))
    assert.is_true(ok, out)
    local head_status, head = curl_head(out)
    assert.equal(200, head_status)
    assert.same(get, head)

    -- HEAD then GET on one connection: had HEAD sent a body, the GET's
    -- status line would not come next
    local s = connect(p)
    s:send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local r1 = assert(response(s, true))
    assert.equal(200, r1.status)
    assert.equal("5", r1.headers["content-length"])
    local r2 = assert(response(s))
    assert.equal(200, r2.status)
    assert.equal("hello", r2.body)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("echoes a POST body of several MB byte for byte, with and without Expect", function()
    local p = serve()
    local body = H.random_bytes(3 * 1024 * 1024 + 11)
    local src, got = H.writefile(tmpname(), body), tmpname()
    -- curl asks for 100-continue itself for a body this large
    local out, ok = curl(("-v --data-binary @%s -o %s %s"):format(quote(src), quote(got), url(p, "/echo")))
    assert.is_true(ok, out)
    assert.truthy(out:find("< HTTP/1.1 100 Continue", 1, true), out)
    assert.truthy(out:find("< HTTP/1.1 200 OK", 1, true), out)
    assert.is_true(H.readfile(got) == body, "the echoed body differs")
    -- and with the body sent at once
    out, ok = curl(("-v -H 'Expect:' --data-binary @%s -o %s %s"):format(quote(src), quote(got), url(p, "/echo")))
    assert.is_true(ok, out)
    assert.falsy(out:find("100 Continue", 1, true), out)
    assert.is_true(H.readfile(got) == body, "the echoed body differs")
    assert.equal(0, p:stop())
  end)

  it("echoes a chunked upload from curl, and one with extensions and trailers", function()
    local p = serve()
    local body = H.random_bytes(600 * 1000 + 3)
    local src, got = H.writefile(tmpname(), body), tmpname()
    local out, ok = curl(("-v -H 'Transfer-Encoding: chunked' --data-binary @%s -o %s %s")
      :format(quote(src), quote(got), url(p, "/echo")))
    assert.is_true(ok, out)
    assert.truthy(out:find("> Transfer-Encoding: chunked", 1, true), out)
    assert.is_true(H.readfile(got) == body, "the echoed body differs")

    -- by hand: a chunk extension, a size with leading zeros, trailers, and
    -- the next request behind it in the same write
    local s = connect(p)
    s:send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "5;name=value\r\nhello\r\n0006\r\n world\r\n0\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n"
      .. "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local r = assert(response(s))
    assert.equal(200, r.status)
    assert.equal("hello world", r.body)
    r = assert(response(s))
    assert.equal("hello", r.body)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("reads header names and the values it acts on in any case", function()
    local p = serve()
    local s = connect(p)
    s:send("POST /echo HTTP/1.1\r\nhOST: x\r\ncontent-LENGTH: 3\r\n\r\nabc"
      .. "POST /echo HTTP/1.1\r\nHOST: x\r\nTRANSFER-ENCODING:Chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
      .. "POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-Continue\r\ncontent-length:   2  \r\n\r\n")
    assert.equal("abc", assert(response(s)).body)
    assert.equal("de", assert(response(s)).body)
    assert.equal("HTTP/1.1 100 Continue", s:receive("*l"))
    assert.equal("", s:receive("*l"))
    s:send("fg" .. "GET / HTTP/1.1\r\nHost: x\r\nCONNECTION: Close\r\n\r\n")
    assert.equal("fg", assert(response(s)).body)
    local r = assert(response(s))
    assert.equal("close", r.headers.connection)
    H.assert_closed(s)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("sends 100 Continue before it reads the body of an Expect: 100-continue request", function()
    local p = serve()
    local out, ok = curl(("-v -H 'Expect: 100-continue' --data-binary 'small body' %s"):format(url(p, "/echo")))
    assert.is_true(ok, out)
    assert.truthy(out:find("< HTTP/1.1 100 Continue", 1, true), out)
    assert.truthy(out:find("small body", 1, true), out)

    -- by hand: the 100 comes while the body has not been sent
    local s = connect(p)
    s:send("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n")
    assert.equal("HTTP/1.1 100 Continue", s:receive("*l"))
    assert.equal("", s:receive("*l"))
    s:send("payload")
    local r = assert(response(s))
    assert.equal(200, r.status)
    assert.equal("payload", r.body)
    -- not to HTTP/1.0 (the client cannot know it), nor for a refused route
    s:send("POST /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n")
    r = assert(response(s))
    assert.equal(404, r.status)
    assert.equal("close", r.headers.connection)
    s:close()
    s = connect(p)
    s:send("POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok")
    r = assert(response(s))
    assert.equal(200, r.status)
    assert.equal("ok", r.body)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("keeps HTTP/1.1 connections alive for curl, and closes HTTP/1.0 ones unless asked", function()
    local p = serve()
    local f1, f2, f3 = tmpname(), tmpname(), tmpname()
    local out, ok = curl(("-v %s -o %s %s -o %s %s -o %s"):format(url(p, "/"), quote(f1),
      url(p, "/static/index.html"), quote(f2), url(p, "/"), quote(f3)))
    assert.is_true(ok, out)
    local _, connects = out:gsub("Connected to", "")
    local _, reuses = out:gsub("Re%-using existing connection", "")
    assert.equal(1, connects, out)
    assert.equal(2, reuses, out)
    assert.equal("hello", H.readfile(f1))
    assert.equal("<p>hello</p>\n", H.readfile(f2))
    assert.equal("hello", H.readfile(f3))

    out, ok = curl(("-v -0 %s %s"):format(url(p, "/"), url(p, "/")))
    assert.is_true(ok, out)
    _, connects = out:gsub("Connected to", "")
    assert.equal(2, connects, out)
    assert.truthy(out:find("< Connection: close", 1, true), out)

    out, ok = curl(("-v -0 -H 'Connection: keep-alive' %s %s"):format(url(p, "/"), url(p, "/")))
    assert.is_true(ok, out)
    _, connects = out:gsub("Connected to", "")
    assert.equal(1, connects, out)
    assert.truthy(out:find("< Connection: keep-alive", 1, true), out)

    -- "Connection: close" from an HTTP/1.1 client: answered, then closed
    local s = connect(p)
    s:send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local r = assert(response(s))
    assert.equal("close", r.headers.connection)
    H.assert_closed(s)
    s:close()
    -- HTTP/1.0 without it: the same
    s = connect(p)
    s:send("GET / HTTP/1.0\r\n\r\n")
    r = assert(response(s))
    assert.equal("hello", r.body)
    assert.equal("close", r.headers.connection)
    H.assert_closed(s)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("answers pipelined requests in order, in one write or cut anywhere", function()
    local p = serve()
    local batch = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nfirst\n"
      .. "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "HEAD /static/sub/note.txt HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n"
    local function check(s)
      local r = assert(response(s))
      assert.equal("hello", r.body)
      r = assert(response(s))
      assert.equal("first\n", r.body)
      r = assert(response(s))
      assert.equal(404, r.status)
      assert.equal("keep-alive", r.headers.connection)
      r = assert(response(s, true))
      assert.equal(200, r.status)
      assert.equal(tostring(#"a note in a subfolder\n"), r.headers["content-length"])
      r = assert(response(s))
      assert.equal("second", r.body)
    end
    local s = connect(p)
    s:send(batch)
    check(s)
    -- the same requests a byte at a time: the same answers
    for i = 1, #batch do assert(s:send(batch, i, i)) end
    check(s)
    -- and the connection is still good
    s:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal("hello", assert(response(s)).body)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("serves a static file byte for byte to curl, with its length and type", function()
    local p = serve()
    local got = tmpname()
    local out, ok = curl(("-D - -o %s %s"):format(quote(got), url(p, "/static/blob.bin")))
    assert.is_true(ok, out)
    local status, headers = curl_head(out)
    assert.equal(200, status)
    assert.equal(tostring(#BLOB), headers["content-length"])
    assert.equal("application/octet-stream", headers["content-type"])
    assert.is_true(H.readfile(got) == BLOB, "the file served differs")

    out = curl("-i " .. url(p, "/static/index.html?v=2"))
    status, headers = curl_head(out)
    assert.equal(200, status)
    assert.equal("text/html; charset=utf-8", headers["content-type"])
    assert.truthy(out:find("\r\n\r\n<p>hello</p>\n$"), out)

    out = curl("-i " .. url(p, "/static/sub/note.txt"))
    status, headers = curl_head(out)
    assert.equal(200, status)
    assert.equal("text/plain; charset=utf-8", headers["content-type"])
    assert.truthy(out:find("a note in a subfolder", 1, true), out)

    out = curl("-I " .. url(p, "/static/blob.bin"))
    status, headers = curl_head(out)
    assert.equal(200, status)
    assert.equal(tostring(#BLOB), headers["content-length"])

    out = curl("-i " .. url(p, "/static/empty.txt"))
    status, headers = curl_head(out)
    assert.equal(200, status)
    assert.equal("0", headers["content-length"])
    assert.equal(0, p:stop())
  end)

  it("answers 404 for a missing file or a folder, and refuses names that lead out", function()
    local p = serve()
    for _, path in ipairs({ "/static/nothing.txt", "/static/sub", "/static/sub/nothing" }) do
      local out = curl("-i " .. url(p, path))
      assert.equal(404, (curl_head(out)), path .. ": " .. out)
    end
    for _, path in ipairs({ "/static/../http_secret.txt", "/static/%2e%2e/http_secret.txt",
                            "/static/sub/../../http_secret.txt", "/static/..%2fhttp_secret.txt",
                            "/static/.hidden", "/static//etc/passwd", "/static/a%00b" }) do
      local out = curl("--path-as-is -i " .. url(p, path))
      assert.equal(403, (curl_head(out)), path .. ": " .. out)
      assert.falsy(out:find("secret", 1, true), out)
      assert.falsy(out:find("hidden\n", 1, true), out)
    end
    -- the same on one raw connection, which stays open through them
    local s = connect(p)
    s:send("GET /static/../http_secret.txt HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /static/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /static/index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(403, assert(response(s)).status)
    assert.equal(403, assert(response(s)).status)
    assert.equal("<p>hello</p>\n", assert(response(s)).body)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("answers 404 for an unknown path and 405 for a method a route does not take", function()
    local p = serve()
    local s = connect(p)
    s:send("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "POST /static/index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
      .. "GET http://example.com/?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    local r = assert(response(s))
    assert.equal(404, r.status)
    r = assert(response(s))
    assert.equal(405, r.status)
    assert.equal("GET, HEAD", r.headers.allow)
    r = assert(response(s))
    assert.equal(405, r.status)
    assert.equal("POST", r.headers.allow)
    r = assert(response(s))
    assert.equal(405, r.status)
    -- the absolute form names the same resources
    r = assert(response(s))
    assert.equal(200, r.status)
    assert.equal("hello", r.body)
    assert.equal("keep-alive", r.headers.connection)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("refuses malformed requests with 400 and closes the connection", function()
    local p = serve()
    local cases = {}
    for _, req in ipairs({
      "GARBAGE\r\n\r\n",
      "GET /\r\n\r\n",
      "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
      "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost x\r\n\r\n",                  -- no colon
      "GET / HTTP/1.1\r\nHost : x\r\n\r\n",                -- space before the colon
      "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",      -- obsolete line folding
      "GET / HTTP/1.1\r\n\r\n",                            -- no Host
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",      -- two
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3x\r\n\r\nabc",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nabc",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 x\r\nabc\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    }) do
      cases[#cases + 1] = { req, 400 }
    end
    for _, r in ipairs(refuse_all(p, cases)) do
      assert.truthy(r.body:find("^Bad Request"), r.body)
    end
    -- the same requests well formed pass, so the refusals above are for
    -- what each breaks
    local s = connect(p)
    s:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
      .. "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert.equal("abc", assert(response(s)).body)
    assert.equal("abc", assert(response(s)).body)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("answers 505 to a version other than 1.0 and 1.1, and 501 to an unknown coding", function()
    local p = serve()
    refuse_all(p, {
      { "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505 },
      { "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505 },
      { "GET / HTTP/0.9\r\n\r\n", 505 },
      { "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501 },
      { "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 501 },
    })
    assert.equal(0, p:stop())
  end)

  it("answers 413 to a body over its limit, declared or chunked", function()
    local p = serve()
    local max = LIMITS.MAX_BODY
    -- declared: refused before any of it is read
    refuse_all(p, {
      { ("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nsome of it"):format(max + 1), 413 },
      { "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413 },
    })
    -- declared, with much of the body sent behind the head by nc, which
    -- reads only once it has written it all: the reply reaches it whole,
    -- not lost to a reset (the server reads and drops what follows before
    -- it closes)
    local input = ("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"):format(max + 1)
      .. ("y"):rep(300 * 1000)
    for _ = 1, 10 do
      local out = H.peer(("nc -N 127.0.0.1 %d"):format(p.port), input, LONG)
      assert.equal("HTTP/1.1 413 Content Too Large\r\n", out:sub(1, 32))
    end
    -- chunked: once the chunks pass it
    local chunk = ("x"):rep(1024 * 1024)
    local s = connect(p)
    s:send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    local sent, sending = 0, true
    glisten.spawn(function() -- the server answers while this still sends
      while sent <= max do
        if not s:send(("%x\r\n%s\r\n"):format(#chunk, chunk)) then break end
        sent = sent + #chunk
      end
      sending = false
    end)
    local r = assert(response(s))
    assert.equal(413, r.status)
    assert.equal("close", r.headers.connection)
    assert.is_true(H.wait_for(function() return not sending end, LONG))
    s:close()
    -- and a body at the limit passes
    local body = H.random_bytes(max)
    local src, got = H.writefile(tmpname(), body), tmpname()
    local out, ok = curl(("--data-binary @%s -o %s %s"):format(quote(src), quote(got), url(p, "/echo")))
    assert.is_true(ok, out)
    assert.is_true(H.readfile(got) == body, "the echoed body differs")
    assert.equal(0, p:stop())
  end)

  it("answers 431 to a header section over its limits, and 414 to a long request line", function()
    local p = serve()
    local long = ("a"):rep(1000)
    local function headers(n)
      local t = {}
      for i = 1, n do t[i] = ("X-%d: %s\r\n"):format(i, long) end
      return table.concat(t)
    end
    local n = LIMITS.MAX_HEAD // #long + 1 -- past the bytes, not the count
    assert.is_true(n < LIMITS.MAX_HEADERS)
    local few = {}
    for i = 1, LIMITS.MAX_HEADERS + 1 do few[i] = ("X-%d: 1\r\n"):format(i) end
    refuse_all(p, {
      { "GET / HTTP/1.1\r\nHost: x\r\n" .. headers(n) .. "\r\n", 431 },
      -- past the count, not the bytes
      { "GET / HTTP/1.1\r\nHost: x\r\n" .. table.concat(few) .. "\r\n", 431 },
      -- one line longer than max_line
      { "GET / HTTP/1.1\r\nHost: x\r\nX-Long: " .. ("b"):rep(LIMITS.MAX_LINE) .. "\r\n\r\n", 431 },
      -- trailers count as headers
      { "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
        .. headers(n) .. "\r\n", 431 },
      { "GET /" .. ("c"):rep(LIMITS.MAX_LINE) .. " HTTP/1.1\r\nHost: x\r\n\r\n", 414 },
    })
    -- at the limits: served (a line of max_line bytes, a header section
    -- just under its bytes, then as many lines as it may have)
    local s = connect(p)
    local long_line = "X-Long: " .. ("b"):rep(LIMITS.MAX_LINE - 8)
    local fill = (LIMITS.MAX_HEAD - #long_line - #"Host: x") // (#long + 6)
    s:send("GET / HTTP/1.1\r\nHost: x\r\n" .. headers(fill) .. long_line .. "\r\n\r\n")
    assert.equal("hello", assert(response(s)).body)
    few[LIMITS.MAX_HEADERS] = nil -- with Host: the most there may be
    few[LIMITS.MAX_HEADERS + 1] = nil
    s:send("GET / HTTP/1.1\r\nHost: x\r\n" .. table.concat(few) .. "\r\n")
    assert.equal("hello", assert(response(s)).body)
    s:close()
    assert.equal(0, p:stop())
  end)

  it("holds nothing for clients that send half a request and leave", function()
    local p = serve()
    local function fds()
      local h = io.popen("ls /proc/" .. p.pid .. "/fd 2>/dev/null | wc -l")
      local n = tonumber(h:read("a"))
      h:close()
      return n
    end
    local base = fds()
    local halves = {
      "GET / HTT",
      "GET / HTTP/1.1\r\nHost: x\r\nX-Half: ",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly this much",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc",
      "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" .. ("z"):rep(200000),
    }
    for round = 1, 10 do
      for i, half in ipairs(halves) do
        local s = connect(p)
        assert(s:send(half))
        -- every other one resets instead of closing
        if (round + i) % 2 == 0 then s:setoption("linger", { on = true, timeout = 0 }) end
        s:close()
      end
    end
    -- the server is back to its descriptors, and serves
    assert.is_true(H.wait_for(function() return fds() == base end, LONG),
      ("%d descriptors open, %d before"):format(fds(), base))
    local out, ok = curl(url(p, "/"))
    assert.is_true(ok, out)
    assert.equal("hello", out)
    assert.equal(0, p:stop())
    assert.falsy(p:stderr():find("script error", 1, true), p:stderr())
  end)

  it("serves wrk's load, with and without keep-alive, with no error", function()
    local p = serve()
    for _, extra in ipairs({ "", "-H 'Connection: close' " }) do
      local out, ok = H.peer(("wrk -t 1 -c 10 -d 1 %s%s"):format(extra, url(p, "/")), nil, LONG)
      assert.is_true(ok, out)
      local n = tonumber(out:match("(%d+) requests in"))
      assert.truthy(n and n > 0, out)
      assert.falsy(out:find("Non-2xx", 1, true), out)
      assert.falsy(out:find("Socket errors", 1, true), out)
    end
    assert.equal(0, p:stop())
    assert.falsy(p:stderr():find("script error", 1, true), p:stderr())
  end)

  it("serves the same with two workers", function()
    local p = serve("-w 2")
    local out, ok = curl(("%s %s"):format(url(p, "/"), url(p, "/static/sub/note.txt")))
    assert.is_true(ok, out)
    assert.equal("helloa note in a subfolder\n", out)
    assert.equal(0, p:stop())
  end)
end)
