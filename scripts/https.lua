-- A small HTTP/1.1 server, over TLS when given a certificate: keep-alive,
-- requests without a body, and one page that says what TLS agreed on.
--   glisten-lua --tls-cert cert.pem --tls-key key.pem scripts/https.lua 8443
--   curl --cacert cert.pem https://localhost:8443/
-- (Without --tls-* it serves plain HTTP; a request with a body is refused
-- with 413.)
local MAX_HEADERS = 64

local function respond(sock, status, body, keep)
  return sock:send(("HTTP/1.1 %s\r\nContent-Type: text/plain\r\n"
    .. "Content-Length: %d\r\nConnection: %s\r\n\r\n%s"):format(
    status, #body, keep and "keep-alive" or "close", body))
end

local function page(sock, path)
  local t = sock:tlsinfo()
  local lines = { "path " .. path }
  if t then
    lines[#lines + 1] = "tls " .. t.version .. " " .. t.cipher
    lines[#lines + 1] = "alpn " .. tostring(t.alpn)
    lines[#lines + 1] = "server_name " .. tostring(t.server_name)
    lines[#lines + 1] = "resumed " .. tostring(t.resumed)
    lines[#lines + 1] = "client " .. (t.peer and t.peer.subject or "none")
  else
    lines[#lines + 1] = "tls none"
  end
  return table.concat(lines, "\n") .. "\n"
end

-- One connection: requests one after another until either side closes.
function with_init(state)
  local sock = state.socket
  while true do
    local request = sock:receive("*l", 30)
    if not request then break end
    local method, path, version = request:match("^(%u+) (%S+) HTTP/(1%.[01])$")
    local headers, n = {}, 0
    while true do
      local line = sock:receive("*l", 30)
      if not line then return sock:close() end
      if line == "" then break end
      n = n + 1
      if n > MAX_HEADERS then
        respond(sock, "431 Request Header Fields Too Large", "too many headers\n")
        return sock:close()
      end
      local k, v = line:match("^([^:]+):%s*(.-)%s*$")
      if k then headers[k:lower()] = v end
    end
    if not method then
      respond(sock, "400 Bad Request", "bad request line\n")
      return sock:close()
    end
    local keep = version == "1.1" and (headers.connection or ""):lower() ~= "close"
    if headers["content-length"] and headers["content-length"] ~= "0"
        or headers["transfer-encoding"] then
      respond(sock, "413 Content Too Large", "no bodies here\n")
      return sock:close()
    end
    local body = page(sock, path)
    if method == "HEAD" then
      sock:send(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"):format(#body))
    elseif method == "GET" then
      respond(sock, "200 OK", body, keep)
    else
      respond(sock, "405 Method Not Allowed", "GET or HEAD\n", keep)
    end
    if not keep then break end
  end
  sock:close()
end

function handler() end -- every byte is read by with_init
