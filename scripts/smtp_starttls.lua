-- An SMTP server's session up to the message (RFC 5321, RFC 3207): EHLO,
-- STARTTLS, then AUTH PLAIN, offered only once the session is under TLS,
-- MAIL, RCPT, DATA and QUIT. The message is counted, not delivered.
--   glisten-lua --tls-cert cert.pem --tls-key key.pem --tls-starttls \
--     scripts/smtp_starttls.lua 2525
--   openssl s_client -starttls smtp -connect 127.0.0.1:2525 -crlf -quiet
-- (--tls-starttls: the tls settings are for sock:starttls(), connections
-- start plain.) The one account is user "alice", password "secret".
local glisten = require "glisten"

local USERS = { alice = "secret" }
local MAX_MESSAGE = 1024 * 1024

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function unbase64(s)
  s = s:gsub("[^%w%+/=]", "")
  if #s % 4 ~= 0 then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local n, pad = 0, 0
    for j = i, i + 3 do
      local c = s:sub(j, j)
      local v = B64:find(c, 1, true)
      if c == "=" then v, pad = 1, pad + 1 elseif not v then return nil end
      n = n * 64 + (v - 1)
    end
    local bytes = string.char(n >> 16 & 255, n >> 8 & 255, n & 255)
    out[#out + 1] = bytes:sub(1, 3 - pad)
  end
  return table.concat(out)
end

-- One session, run from with_init: every line is read with receive("*l").
local function session(sock)
  local tls, user, from, rcpt = false, nil, nil, {}
  local function reply(s) return sock:send(s .. "\r\n") end
  reply("220 glisten ESMTP ready")
  while true do
    local line, err = sock:receive("*l", 300)
    if not line then return end -- closed, timed out, or too long
    local verb, arg = line:match("^(%a+)%s*(.-)%s*$")
    verb = verb and verb:upper()
    if verb == "EHLO" or verb == "HELO" then
      from, rcpt = nil, {}
      if verb == "HELO" then
        reply("250 glisten")
      elseif tls then
        reply("250-glisten greets " .. arg .. "\r\n250-AUTH PLAIN\r\n250 8BITMIME")
      else
        reply("250-glisten greets " .. arg .. "\r\n250-STARTTLS\r\n250 8BITMIME")
      end
    elseif verb == "STARTTLS" and not tls then
      reply("220 Ready to start TLS")
      -- bytes sent behind STARTTLS before the handshake would be taken for
      -- TLS ones: starttls refuses them ("plaintext pending") and closes
      local ok, e = sock:starttls()
      if not ok then
        io.stderr:write("smtp: starttls failed: ", tostring(e), "\n")
        return
      end
      tls, user, from, rcpt = true, nil, nil, {} -- RFC 3207: start over
    elseif verb == "AUTH" and tls and not user then
      local mech, initial = arg:match("^(%S+)%s*(%S*)$")
      if not mech or mech:upper() ~= "PLAIN" then
        reply("504 5.5.4 only AUTH PLAIN")
      else
        if initial == "" then
          reply("334 ")
          initial = sock:receive("*l", 60) or ""
        end
        local plain = unbase64(initial) or ""
        local _, name, pass = plain:match("^([^%z]*)%z([^%z]*)%z([^%z]*)$")
        if name and USERS[name] == pass then
          user = name
          reply("235 2.7.0 Authentication successful")
        else
          reply("535 5.7.8 Authentication credentials invalid")
        end
      end
    elseif verb == "AUTH" then
      reply(tls and "503 5.5.1 already authenticated" or
            "530 5.7.0 Must issue a STARTTLS command first")
    elseif verb == "MAIL" and not user then
      reply("530 5.7.0 Authentication required")
    elseif verb == "MAIL" then
      from, rcpt = arg:match("^[Ff][Rr][Oo][Mm]:%s*(.*)$"), {}
      reply(from and "250 2.1.0 OK" or "501 5.5.4 MAIL FROM:<address>")
    elseif verb == "RCPT" and from then
      local to = arg:match("^[Tt][Oo]:%s*(.*)$")
      if to then rcpt[#rcpt + 1] = to end
      reply(to and "250 2.1.5 OK" or "501 5.5.4 RCPT TO:<address>")
    elseif verb == "DATA" and from and #rcpt > 0 then
      reply("354 End data with <CR><LF>.<CR><LF>")
      local size = 0
      while true do
        local l = sock:receive("*l", 300)
        if not l then return end
        if l == "." then break end
        size = size + #l + 2
      end
      if size > MAX_MESSAGE then
        reply("552 5.3.4 Message too big")
      else
        reply(("250 2.0.0 OK: %d bytes for %d recipient(s) from %s"):format(
          size, #rcpt, user))
      end
      from, rcpt = nil, {}
    elseif verb == "RSET" then
      from, rcpt = nil, {}
      reply("250 2.0.0 OK")
    elseif verb == "NOOP" then
      reply("250 2.0.0 OK")
    elseif verb == "QUIT" then
      reply("221 2.0.0 Bye")
      sock:close()
      return
    else
      reply("503 5.5.1 Bad sequence of commands")
    end
  end
end

function with_init(state)
  session(state.socket)
  state.socket:close()
end

function handler() end -- every byte is read by the session
