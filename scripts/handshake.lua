-- A text handshake, then binary frames: the client says "HELLO <name>" on
-- a line; from then on both sides speak in frames, each a 4-byte
-- big-endian length and that many bytes (any bytes). Every frame the client
-- sends comes back prefixed with its name.
--   glisten-lua scripts/handshake.lua 9001
--   printf 'HELLO alice\n\0\0\0\2hi' | nc -N 127.0.0.1 9001 | od -c
--
-- The connection starts in packet = "line", so handler gets the greeting
-- as one line; sock:setpacket(4) then switches to length-prefixed frames.
-- Bytes that came with the greeting (the client need not wait for WELCOME)
-- are cut as frames: nothing is lost or read twice. A frame's length is
-- bounded by max_receive: a longer one ends the connection.
return {
  packet = "line",
  max_receive = 1024 * 1024,

  handler = function(msg, state)
    local sock = state.socket
    if not state.name then -- the greeting
      local name = msg:match("^HELLO (%w+)$")
      if not name then
        sock:send("ERR expected: HELLO <name>\n")
        return sock:close()
      end
      state.name = name
      sock:send("WELCOME ", name, "\n")
      sock:setpacket(4)
      return
    end
    local reply = state.name .. ": " .. msg
    sock:send(string.pack(">s4", reply))
  end,
}
