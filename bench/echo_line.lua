-- A line echo on packet = "line": handler gets each line without its end,
-- and sends it back with one. bench/run --callgrind counts its instructions
-- per message beside scripts/echo.lua's (raw mode) on the same lines.
return {
  packet = "line",
  handler = function(line, state) state.socket:send(line, "\n") end,
}
