-- A numbered byte stream for the specs, loaded by spec/helper.lua (as
-- H.stream, H.flood, H.read_stream) and by scripts the specs run in other
-- processes (through H.STREAM, a line of source that loads this file).
-- Each 64 KiB block starts with its number and is filled with numbered
-- 8-byte cells, so a byte lost, repeated or out of order shows.
local M = {}

local BLOCK = 65536
M.BLOCK = BLOCK
local FILL = {}
for k = 1, (BLOCK - 16) // 8 do FILL[k] = ("%7d|"):format(k) end
FILL = table.concat(FILL)

-- Bytes first..last of the stream (from 1).
function M.stream(first, last)
  local b0, b1 = (first - 1) // BLOCK, (last - 1) // BLOCK
  local t = {}
  for b = b0, b1 do t[#t + 1] = ("<%14d>"):format(b) .. FILL end
  local off = first - 1 - b0 * BLOCK
  return table.concat(t):sub(off + 1, off + last - first + 1)
end

-- Sends the stream from byte from + 1 on (default 0), `piece` bytes a
-- send (default a block), each with a timeout of `timeout` seconds
-- (default 0.2), until the first refusal: a send that gives up (a peer
-- that does not read fills the kernel's buffers, then the queue). No fixed
-- size: the kernel may hold any amount. Returns the byte count of the
-- stream taken (every byte of which will be sent) and the refusal
-- ("timeout", or why the socket failed).
function M.flood(sock, piece, timeout, from)
  local taken = from or 0
  piece = piece or BLOCK
  sock:settimeout(timeout or 0.2)
  while taken < 1024 * 1024 * 1024 do -- a bound against a hang only
    local n, err, part = sock:send(M.stream(taken + 1, taken + piece))
    if not n then return taken + part, err end
    taken = taken + n
  end
  return taken, "never refused"
end

-- Reads n bytes of the stream, from byte from + 1 on, and checks them;
-- raises (at the caller's level) with what went wrong.
function M.read_stream(sock, from, n)
  local got = 0
  while got < n do
    local want = math.min(BLOCK, n - got)
    local data, err, part = sock:receive(want)
    if not data then
      error(("%d of %d bytes arrived, then %s (and %d more)"):format(got, n, err, #part), 2)
    end
    if data ~= M.stream(from + got + 1, from + got + want) then
      error(("bytes %d to %d of the stream are not what was sent"):format(
        from + got + 1, from + got + want), 2)
    end
    got = got + want
  end
end

return M
