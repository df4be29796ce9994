-- An HTTP/1.1 server: keep-alive, pipelining, request bodies (Content-Length
-- and chunked), Expect: 100-continue, HEAD, and static files sent with
-- sock:sendfile.
--
--   glisten-lua scripts/http.lua 8080
--   HTTP_STATIC_DIR=/srv/files glisten-lua -w auto scripts/http.lua 8080
--
--   curl http://127.0.0.1:8080/                                   -> hello
--   curl --data-binary @photo.jpg http://127.0.0.1:8080/echo      -> the body back
--   curl -H 'Transfer-Encoding: chunked' --data-binary @x http://127.0.0.1:8080/echo
--   curl -O http://127.0.0.1:8080/static/photo.jpg                -> HTTP_STATIC_DIR/photo.jpg
--   curl -I http://127.0.0.1:8080/static/photo.jpg                -> its headers alone
--
-- Routes: GET / (a short page, the one the benchmark asks for), POST /echo
-- (the request's body back), GET /static/NAME (the files of HTTP_STATIC_DIR,
-- "static" when unset: subfolders yes, names starting with "." and so ".."
-- no). HEAD goes with every GET. Anything else is 404, or 405 for a method
-- a route does not take.
--
-- Each connection runs one loop in with_init: read a request line and its
-- headers with receive("*l"), read the body, answer, and go on with the
-- next request while the connection is kept alive (HTTP/1.1 unless
-- "Connection: close"; HTTP/1.0 only with "Connection: keep-alive").
-- Pipelined requests are answered in order, as each is read after the
-- answer to the one before. A request that breaks the protocol gets its
-- error (400, 413, 414, 431, 501, 505) with "Connection: close", and the
-- connection ends.

-- The longest request line, header line or chunk-size line, in bytes (the
-- server's max_line: receive("*l") refuses a longer one).
local MAX_LINE = 8192
-- The most bytes, and lines, of one request's header section (or trailers).
local MAX_HEAD = 32768
local MAX_HEADERS = 100
-- The largest request body, whether sent with Content-Length or chunked.
local MAX_BODY = 8 * 1024 * 1024
-- A connection that reads and writes nothing for this long is closed.
local IDLE_TIMEOUT = 60
-- After an error reply, what the client still sends is read and dropped
-- until it pauses for LINGER_IDLE seconds (LINGER_MAX seconds and
-- LINGER_BYTES at most), then the connection closes: a close with unread
-- input would reset the connection, and the client could lose the reply.
local LINGER_IDLE, LINGER_MAX, LINGER_BYTES = 1, 5, 1024 * 1024
-- The folder GET /static/NAME serves.
local STATIC_DIR = os.getenv("HTTP_STATIC_DIR") or "static"

local find, sub, byte, lower, match, gsub, gmatch, char =
  string.find, string.sub, string.byte, string.lower, string.match,
  string.gsub, string.gmatch, string.char
local concat, tonumber, now = table.concat, tonumber, glisten.now

local REASONS = {
  [200] = "OK", [400] = "Bad Request", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [413] = "Content Too Large", [414] = "URI Too Long",
  [431] = "Request Header Fields Too Large", [501] = "Not Implemented",
  [505] = "HTTP Version Not Supported",
}

-- The head of a response: status line and headers, blank line included.
-- `extra` is more header lines, each starting with "\r\n".
local function head(code, ctype, length, keep, extra)
  return "HTTP/1.1 " .. code .. " " .. REASONS[code] .. "\r\nContent-Type: " .. ctype
    .. "\r\nContent-Length: " .. length .. (extra or "")
    .. (keep and "\r\nConnection: keep-alive\r\n\r\n" or "\r\nConnection: close\r\n\r\n")
end

-- The page of GET /, made once: the reply to most requests a benchmark sends.
local HELLO = "hello"
local HELLO_HEAD = { [true] = head(200, "text/plain", #HELLO, true),
                     [false] = head(200, "text/plain", #HELLO, false) }
local HELLO_GET = { [true] = HELLO_HEAD[true] .. HELLO, [false] = HELLO_HEAD[false] .. HELLO }

-- Sends a head and a body: one write for a small body, two for a large one,
-- which is not copied.
local function send2(sock, h, body)
  if #body < 16384 then return sock:send(h .. body) end
  local ok, err = sock:send(h)
  if not ok then return nil, err end
  return sock:send(body)
end

-- Reads and drops what the client still sends (see LINGER_IDLE), then
-- closes.
local function linger_close(sock)
  local deadline, got = now() + LINGER_MAX, 0
  while got < LINGER_BYTES do
    local left = deadline - now()
    if left <= 0 then break end
    local data = sock:receive(nil, left < LINGER_IDLE and left or LINGER_IDLE)
    if not data then break end
    got = got + #data
  end
  sock:close()
end

-- Answers with an error status, then ends the connection. Returns false (the
-- loop's "stop").
local function fail(sock, code, why)
  local body = REASONS[code] .. (why and ": " .. why or "") .. "\n"
  sock:send(head(code, "text/plain", #body, false) .. body)
  linger_close(sock)
  return false
end

-- Answers a plain status (403, 404, 405) on a connection that may stay open.
local function status(sock, code, method, keep, extra)
  local body = REASONS[code] .. "\n"
  local h = head(code, "text/plain", #body, keep, extra)
  return sock:send(method == "HEAD" and h or h .. body)
end

-- The field value of a header line from byte `from` on, without the spaces
-- and tabs around it (no pattern that could backtrack over a long value).
local function field_value(line, from)
  local s = find(line, "[^ \t]", from)
  if not s then return "" end
  local e = #line
  local b = byte(line, e)
  while b == 32 or b == 9 do
    e = e - 1
    b = byte(line, e)
  end
  return sub(line, s, e)
end

-- The headers this server acts on, by name as clients usually spell it;
-- WATCHED_LENGTH, by the length of the name, catches other spellings
-- ("content-LENGTH") with one lower() for names of those lengths only.
local WATCHED = {}
for _, name in ipairs({ "Host", "Expect", "Connection", "Content-Length", "Transfer-Encoding" }) do
  WATCHED[name], WATCHED[lower(name)] = lower(name), lower(name)
end
local WATCHED_LENGTH = { [4] = true, [6] = true, [10] = true, [14] = true, [17] = true }
-- A field name (a token) and its colon, from the start of the line.
local NAME_COLON = "^([%w!#$%%&'*+%-.^_`|~]+):"

-- Reads a chunked body (trailers read and dropped). Returns the body, or
-- nil and an error status and its reason, or nil when the client left.
local function read_chunked(sock)
  local parts, n, total = {}, 0, 0
  while true do
    local line, err = sock:receive("*l")
    if not line then
      if err == "too long" then return nil, 400, "chunk size line too long" end
      return nil
    end
    local hex, rest = match(line, "^(%x+)[ \t]*(.*)$")
    if not hex or (rest ~= "" and byte(rest) ~= 59) then -- 59: ";", an extension
      return nil, 400, "bad chunk size"
    end
    hex = match(hex, "^0*(.*)$")
    if #hex > 8 then return nil, 413 end
    local size = hex == "" and 0 or tonumber(hex, 16)
    if size == 0 then break end
    total = total + size
    if total > MAX_BODY then return nil, 413 end
    local data = sock:receive(size)
    if not data then return nil end
    n = n + 1
    parts[n] = data
    line, err = sock:receive("*l")
    if not line then return nil end
    if line ~= "" then return nil, 400, "chunk longer than its size" end
  end
  -- the trailer section, as bounded as the header section
  local bytes, lines = 0, 0
  while true do
    local line, err = sock:receive("*l")
    if not line then
      if err == "too long" then return nil, 431 end
      return nil
    end
    if line == "" then break end
    bytes, lines = bytes + #line, lines + 1
    if bytes > MAX_HEAD or lines > MAX_HEADERS then return nil, 431 end
  end
  return n == 1 and parts[1] or concat(parts)
end

-- Content types of static files, by extension.
local TYPES = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  txt = "text/plain; charset=utf-8", css = "text/css", js = "text/javascript",
  json = "application/json", xml = "application/xml", svg = "image/svg+xml",
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif",
  webp = "image/webp", ico = "image/x-icon", pdf = "application/pdf",
  wasm = "application/wasm", zip = "application/zip", gz = "application/gzip",
  mp4 = "video/mp4", woff2 = "font/woff2",
}

local function unhex(h) return char(tonumber(h, 16)) end

-- Whether a name under STATIC_DIR is refused: every segment must be
-- non-empty and not start with "." (so no "..", no way out of STATIC_DIR,
-- no hidden files), and no zero byte.
local function refused(name)
  if find(name, "%z") then return true end
  for segment in gmatch(name .. "/", "([^/]*)/") do
    if segment == "" or byte(segment) == 46 then return true end
  end
  return false
end

-- GET or HEAD /static/NAME. `name` is what follows "/static/", without the
-- query. Returns whether the connection may stay open.
local function static(sock, method, name, keep)
  name = gsub(name, "%%(%x%x)", unhex)
  if refused(name) then return status(sock, 403, method, keep) and keep end
  local f <close> = io.open(STATIC_DIR .. "/" .. name, "rb")
  -- a folder opens, but cannot be read
  if not f or select(2, f:read(0)) then return status(sock, 404, method, keep) and keep end
  local size = f:seek("end")
  local ext = match(name, "%.(%w+)$")
  local h = head(200, TYPES[ext and lower(ext)] or "application/octet-stream", size, keep)
  if not sock:send(h) then return false end
  if method == "HEAD" or size == 0 then return keep end
  -- a file cut short while it is sent leaves the reply short: close then
  return sock:sendfile(f, 0, size) == size and keep
end

-- Reads and answers one request. Returns true to go on with the next one
-- on this connection, false when the connection is done (and closed).
local function exchange(sock)
  local line, err = sock:receive("*l")
  while line == "" do line, err = sock:receive("*l") end -- blank lines before a request
  if not line then
    if err == "too long" then return fail(sock, 414) end
    sock:close()
    return false
  end
  local _, _, method, target, version = find(line, "^(%u+) (%S+) HTTP/(%d%.%d)$")
  if not method then return fail(sock, 400, "bad request line") end
  if version ~= "1.1" and version ~= "1.0" then return fail(sock, 505) end

  -- the header section: only the fields in WATCHED matter here
  local bytes, lines, hosts = 0, 0, 0
  local length, te, connection, expect
  while true do
    line, err = sock:receive("*l")
    if not line then
      if err == "too long" then return fail(sock, 431) end
      sock:close()
      return false
    end
    if line == "" then break end
    bytes, lines = bytes + #line, lines + 1
    if bytes > MAX_HEAD or lines > MAX_HEADERS then return fail(sock, 431) end
    local _, colon, name = find(line, NAME_COLON)
    if not colon then return fail(sock, 400, "bad header line") end
    name = WATCHED[name] or WATCHED_LENGTH[#name] and WATCHED[lower(name)]
    if name then
      if name == "host" then
        hosts = hosts + 1
      else
        local value = field_value(line, colon + 1)
        if name == "content-length" then
          if not find(value, "^%d+$") or length and length ~= tonumber(value) then
            return fail(sock, 400, "bad Content-Length")
          end
          length = tonumber(value)
        elseif name == "transfer-encoding" then
          te = te and te .. "," .. value or value
        elseif name == "connection" then
          connection = connection and connection .. "," .. value or value
        else
          expect = lower(value) == "100-continue"
        end
      end
    end
  end
  if hosts > 1 or hosts == 0 and version == "1.1" then
    return fail(sock, 400, "an HTTP/1.1 request needs one Host")
  end

  local keep = version == "1.1"
  if connection then
    for token in gmatch(lower(connection), "[^,%s]+") do
      if token == "close" then keep = false; break end
      if token == "keep-alive" then keep = true end
    end
  end

  local chunked = false
  if te then
    if lower(te) ~= "chunked" then return fail(sock, 501, "a transfer coding other than chunked") end
    if length then return fail(sock, 400, "both Content-Length and Transfer-Encoding") end
    chunked = true
  elseif length and length > MAX_BODY then
    return fail(sock, 413)
  end
  local has_body = chunked or length and length > 0

  local path = target
  if target ~= "/" then
    if byte(target) ~= 47 then -- "/": else the absolute form, http://host/path
      path = match(target, "^[hH][tT][tT][pP][sS]?://[^/?#]*(.*)$")
      if not path then return fail(sock, 400, "bad request target") end
      if path == "" or byte(path) == 63 then path = "/" .. path end
    end
    local q = find(path, "?", 1, true)
    if q then path = sub(path, 1, q - 1) end
  end

  -- the hot route first: GET / with no body
  if path == "/" and method == "GET" and not has_body then
    if not sock:send(HELLO_GET[keep]) then return false end
    if not keep then sock:close() end
    return keep
  end

  local route = path == "/" and "/" or path == "/echo" and "/echo"
    or sub(path, 1, 8) == "/static/" and "/static/"
  local allowed = route == "/echo" and method == "POST"
    or route and route ~= "/echo" and (method == "GET" or method == "HEAD")
  if not allowed then
    local extra = route == "/echo" and "\r\nAllow: POST"
      or route and "\r\nAllow: GET, HEAD"
    if has_body then -- a body that will not be read: answer, then close
      status(sock, route and 405 or 404, method, false, extra)
      linger_close(sock)
      return false
    end
    keep = status(sock, route and 405 or 404, method, keep, extra) and keep
    if not keep then sock:close() end
    return keep
  end

  local body = ""
  if has_body then
    if expect and version == "1.1" then
      if not sock:send("HTTP/1.1 100 Continue\r\n\r\n") then return false end
    end
    local code, why
    if chunked then
      body, code, why = read_chunked(sock)
    else
      body = sock:receive(length)
    end
    if not body then
      if code then return fail(sock, code, why) end
      sock:close() -- the client left half way
      return false
    end
  end

  if route == "/echo" then
    if not send2(sock, head(200, "application/octet-stream", #body, keep), body) then
      return false
    end
  elseif route == "/" then
    if not sock:send(method == "HEAD" and HELLO_HEAD[keep] or HELLO_GET[keep]) then return false end
  else
    keep = static(sock, method, sub(path, 9), keep)
  end
  if not keep then sock:close() end
  return keep
end

return {
  max_line = MAX_LINE,
  idle_timeout = IDLE_TIMEOUT,
  with_init = function(state)
    local sock = state.socket
    while exchange(sock) do end
  end,
  handler = function() end, -- every byte is read by with_init's loop
}
