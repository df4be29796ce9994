-- Echo server: sends every chunk back.
--   glisten-lua scripts/echo.lua 8080
--   nc 127.0.0.1 8080
function handler(msg, state)
  state.socket:send(msg)
end
