-- Unix sockets: glisten.serve{path =}, listen("unix:PATH"),
-- connect("unix:PATH"), the command's unix:PATH and --unix, with real
-- peers (socat, nc -U) and glisten clients. Every path is in a folder the
-- spec makes under its temporary folder, removed after each spec.
local glisten = H.glisten

local LONG = 60 -- bounds a hang only

local ndir = 0
local dir -- this spec's folder

before_each(function()
  ndir = ndir + 1
  dir = ("%s/unix%d"):format(H.tmpdir, ndir)
  assert(os.execute("mkdir -p " .. H.quote(dir)))
end)

after_each(function()
  H.no_leaks()
  os.execute("rm -rf " .. H.quote(dir))
end)

local function sock(name) return dir .. "/" .. (name or "s.sock") end

-- What `stat` says of path: its kind ("socket", "directory", ...) and its
-- permissions in octal; nil when there is nothing there.
local function stat(path)
  local f = io.popen("stat -c '%F %a' " .. H.quote(path) .. " 2>/dev/null")
  local out = f:read("a")
  f:close()
  local kind, mode = out:match("^(.-) (%d+)\n")
  return kind, mode
end

local nfile = 0
local function tmpfile(data)
  nfile = nfile + 1
  return H.writefile(("%s/unix_spec%d"):format(H.tmpdir, nfile), data or "")
end

local function peer(cmd, input) return H.peer(cmd, input, LONG) end

local function socat(path, input)
  return peer("socat - UNIX-CONNECT:" .. H.quote(path), input)
end

local function nc_unix(path, input)
  return peer("nc -N -U " .. H.quote(path), input)
end

describe("the command on a Unix socket", function()
  it("serves unix:PATH in place of PORT, to socat and nc -U; SIGTERM removes the file", function()
    local path = sock()
    local p = H.start("scripts/echo.lua unix:" .. H.quote(path))
    assert.equal(path, p.path)
    assert.matches("listening on unix:" .. path:gsub("%p", "%%%0") .. "\n", p:stderr())
    assert.equal("socket", stat(path))
    assert.same({ "hello\n", true }, { socat(path, "hello\n") })
    assert.same({ "from nc\n", true }, { nc_unix(path, "from nc\n") })
    local c = H.connect_unix(path)
    c:send("glisten\n")
    assert.equal("glisten", c:receive("*l"))
    c:close()
    assert.equal(0, p:stop())
    assert.is_nil(stat(path), "the socket file outlived a clean shutdown")
  end)

  it("takes --unix PATH and --mode, which sets the file's permissions", function()
    local path = sock()
    local p = H.start("--unix " .. H.quote(path) .. " --mode 660 scripts/echo.lua")
    assert.same({ "socket", "660" }, { stat(path) })
    assert.equal("x\n", (socat(path, "x\n")))
    assert.equal(0, p:stop())
    p = H.start("--unix=" .. H.quote(path) .. " --mode=600 scripts/echo.lua")
    assert.same({ "socket", "600" }, { stat(path) })
    assert.equal(0, p:stop())
    assert.is_nil(stat(path))
  end)

  it("replaces a stale socket file: its server was killed", function()
    local path = sock()
    local p = H.start("scripts/echo.lua unix:" .. H.quote(path))
    p:signal("KILL")
    p:wait()
    assert.equal("socket", stat(path)) -- left behind, nothing answers
    p = H.start("scripts/echo.lua unix:" .. H.quote(path))
    assert.equal("again\n", (socat(path, "again\n")))
    assert.equal(0, p:stop())
    assert.is_nil(stat(path))
  end)

  it("refuses a live socket, leaving its server serving and its file in place", function()
    local path = sock()
    local p = H.start("scripts/echo.lua unix:" .. H.quote(path))
    local rc, _, err = H.run("scripts/echo.lua unix:" .. H.quote(path))
    assert.equal(1, rc)
    assert.matches("cannot listen on unix:" .. path:gsub("%p", "%%%0") .. ": Address already in use", err)
    assert.equal("socket", stat(path))
    assert.equal("still\n", (socat(path, "still\n")))
    assert.equal(0, p:stop())
  end)

  it("refuses a path that is a file or a directory, and leaves it alone", function()
    local file = H.writefile(sock("plain"), "keep me")
    local rc, _, err = H.run("scripts/echo.lua unix:" .. H.quote(file))
    assert.equal(1, rc)
    assert.matches("exists and is a file, not a socket", err)
    assert.equal("keep me", H.readfile(file))
    rc, _, err = H.run("scripts/echo.lua unix:" .. H.quote(dir))
    assert.equal(1, rc)
    assert.matches("exists and is a directory, not a socket", err)
  end)

  it("refuses a path too long for sun_path, saying so", function()
    local long = dir .. "/" .. ("x"):rep(120)
    local rc, _, err = H.run("scripts/echo.lua unix:" .. H.quote(long))
    assert.equal(1, rc)
    assert.matches("path too long %(" .. #long .. " bytes, at most 107%)", err)
  end)

  it("serves a name in the abstract namespace (@NAME): no file", function()
    local name = ("glisten-spec-%d-%d"):format(os.time(), ndir)
    local p = H.start("scripts/echo.lua unix:@" .. name)
    assert.equal("@" .. name, p.path)
    assert.equal("abstract\n", (peer("socat - ABSTRACT-CONNECT:" .. name, "abstract\n")))
    local c = H.connect_unix("@" .. name)
    assert.same({ "@" .. name, nil, "unix" }, { c:getpeername() })
    c:close()
    assert.equal(0, p:stop())
  end)

  it("names the peer's path, process and user in a script error's log line", function()
    local path = sock(("p"):rep(107 - #dir - 1)) -- the longest path there is
    assert.equal(107, #path)
    local script = H.script([[
      return { handler = function(msg) error("boom " .. msg, 0) end }
    ]])
    local p = H.start(script .. " unix:" .. H.quote(path))
    local pidfile = tmpfile()
    peer(("sh -c 'echo $$ >%s; exec socat - UNIX-CONNECT:%s'"):format(pidfile, path), "x")
    local pid = H.readfile(pidfile):match("%d+")
    assert.is_true(H.wait_for(function() return p:stderr():match("script error") ~= nil end, LONG))
    local uid = io.popen("id -u"):read("l")
    assert.matches(("conn %%d+ %%(unix:%s pid %s uid %s%%): script error: boom x"):format(
      path:gsub("%p", "%%%0"), pid, uid), p:stderr())
    assert.equal(0, p:stop())
  end)

  it("gives a script its peer's credentials: getpeercred() is the peer process's pid, uid, gid", function()
    local path = sock()
    local script = H.script([[
      return { handler = function(msg, state)
        state.socket:send(table.concat({ state.socket:getpeercred() }, " ") .. "\n")
      end }
    ]])
    local p = H.start(script .. " unix:" .. H.quote(path))
    local pidfile = tmpfile()
    local out = peer(("sh -c 'echo $$ >%s; exec socat - UNIX-CONNECT:%s'"):format(pidfile, path), "cred\n")
    local ids = io.popen("id -u; id -g"):read("a")
    assert.equal(("%s %s %s\n"):format(H.readfile(pidfile):match("%d+"), ids:match("(%d+)\n(%d+)")), out)
    assert.equal(0, p:stop())
  end)

  -- Both workers accept on the one socket: while worker W is held inside a
  -- callback that cannot yield (callback_slice 0, a C call that waits for a
  -- file), a second client is served by the other worker.
  it("serves with -w 2 from one socket file that both workers accept on, and removes it once", function()
    local path = sock()
    local flag = dir .. "/release"
    local script = H.script(([[
      local glisten = require "glisten"
      return {
        callback_slice = 0,
        handler = function(msg, state)
          if msg:match("^hold") then
            state.socket:send("held by " .. glisten.worker_id() .. "\n")
            for _ = 1, 1200 do -- at most about a minute
              local f = io.open(%q)
              if f then f:close(); break end
              os.execute("sleep 0.05")
            end
          end
          state.socket:send("worker " .. glisten.worker_id() .. "\n")
        end,
      }
    ]]):format(flag))
    local p = H.start("-w 2 " .. script .. " unix:" .. H.quote(path))
    local _, lines = p:stderr():gsub("listening on", "")
    assert.equal(1, lines)
    assert.equal("socket", stat(path))
    local a = H.connect_unix(path, LONG)
    a:send("hold\n")
    local held = assert(a:receive("*l")):match("^held by (%d)$")
    assert.truthy(held)
    local b = H.connect_unix(path, LONG)
    b:send("who\n")
    local other = assert(b:receive("*l")):match("^worker (%d)$")
    assert.truthy(other)
    assert.not_equal(held, other)
    H.writefile(flag, "")
    assert.equal("worker " .. held, a:receive("*l"))
    a:close(); b:close()
    for i = 1, 6 do assert.matches("^worker [12]\n$", (socat(path, "n" .. i .. "\n"))) end
    assert.equal(0, p:stop())
    assert.is_nil(stat(path))
  end)

  it("caps connections per user with max_connections_per_address", function()
    local path = sock()
    local p = H.start("--max-connections-per-address 1 scripts/echo.lua unix:" .. H.quote(path))
    local a = H.connect_unix(path, LONG)
    a:send("one\n")
    assert.equal("one", a:receive("*l"))
    local b = H.connect_unix(path, LONG)
    H.assert_closed(b) -- refused: same user
    b:close()
    a:close()
    assert.is_true(H.wait_for(function()
      local c = H.connect_unix(path, LONG)
      c:send("two\n")
      local line = c:receive("*l")
      c:close()
      return line == "two"
    end, LONG))
    assert.equal(0, p:stop())
  end)
end)

-- Needs root and setpriv: a peer of another user (nobody) is counted apart.
describe("the cap per user on a Unix socket", function()
  it("counts each user apart #root", function()
    local name = ("glisten-spec-uid-%d-%d"):format(os.time(), ndir)
    local p = H.start("--max-connections-per-address 1 scripts/echo.lua unix:@" .. name)
    local a = H.connect_unix("@" .. name, LONG)
    a:send("root\n")
    assert.equal("root", a:receive("*l"))
    local out = peer("setpriv --reuid=65534 --regid=65534 --clear-groups socat - ABSTRACT-CONNECT:"
      .. name, "nobody\n")
    assert.equal("nobody\n", out)
    local b = H.connect_unix("@" .. name, LONG)
    H.assert_closed(b)
    b:close(); a:close()
    assert.equal(0, p:stop())
  end)
end)

describe("glisten.serve{path =}", function()
  it("serves, names both ends, and close removes the file", function()
    local path = sock()
    local srv = assert(glisten.serve{ path = path, mode = "600",
      handler = function(msg, state)
        local s = state.socket
        local pip, pport, pfam = s:getpeername()
        local sip, sport, sfam = s:getsockname()
        s:send(("%q %s %s | %s %s %s\n"):format(pip, tostring(pport), pfam, sip, tostring(sport), sfam))
      end })
    assert.equal(path, srv.path)
    assert.is_nil(srv.port)
    assert.is_nil(srv.host)
    assert.equal("glisten.server (unix:" .. path .. ")", tostring(srv))
    assert.same({ "socket", "600" }, { stat(path) })
    local c = H.connect_unix(path)
    c:send("x")
    assert.equal(('"" nil unix | %s nil unix'):format(path), c:receive("*l"))
    assert.same({ path, nil, "unix" }, { c:getpeername() })
    assert.same({ "", nil, "unix" }, { c:getsockname() })
    assert.matches("^glisten.socket %d+ %(unix:" .. path:gsub("%p", "%%%0") .. " pid %d+ uid %d+%)$", tostring(c))
    c:close()
    srv:close()
    assert.is_nil(stat(path))
    H.wait_for(function() return srv.connections == 0 end)
  end)

  it("returns nil, err for a live path and one too long; raises on a bad mode", function()
    local path = sock()
    local srv = assert(glisten.serve{ path = path, handler = function() end })
    local none, err = glisten.serve{ path = path, handler = function() end }
    assert.is_nil(none)
    assert.equal("cannot listen on unix:" .. path .. ": Address already in use", err)
    srv:close()
    none, err = glisten.serve{ path = dir .. "/" .. ("y"):rep(110), handler = function() end }
    assert.is_nil(none)
    assert.matches("path too long", err)
    for _, bad in ipairs{ 660, "999", "", "rw-rw----", "1777" } do
      assert.has_error(function()
        glisten.serve{ path = path, mode = bad, handler = function() end }
      end, "option 'mode' must be permissions in octal digits, as \"660\"")
    end
    assert.has_error(function() glisten.serve{ path = 1, handler = function() end } end,
      "option 'path' must be a string")
  end)

  it("serves with a pool of workers: server.path, one file, removed at close", function()
    local path = sock()
    local script = H.script([[return { handler = function(m, s) s.socket:send(m) end }]])
    local srv = assert(glisten.serve{ script = script, workers = 2, path = path })
    assert.equal(path, srv.path)
    assert.is_nil(srv.port)
    assert.equal("glisten.server (unix:" .. path .. ", 2 workers)", tostring(srv))
    for i = 1, 4 do
      local c = H.connect_unix(path)
      c:send("p" .. i)
      assert.equal("p" .. i, c:receive(2))
      c:close()
    end
    srv:close()
    assert.is_true(H.wait_for(function() return stat(path) == nil end, LONG))
    H.wait_for(function() return srv.connections == 0 end)
  end)
end)

describe("glisten.listen and glisten.connect on a Unix socket", function()
  it("listen(\"unix:PATH\") accepts; close removes the file", function()
    local path = sock()
    local l = assert(glisten.listen("unix:" .. path, { backlog = 4, mode = "640" }))
    assert.equal(path, l.path)
    assert.is_nil(l.port)
    assert.same({ "socket", "640" }, { stat(path) })
    local c = H.connect_unix(path)
    local s = assert(l:accept(5))
    c:send("ping\n")
    assert.equal("ping", s:receive("*l"))
    assert.same({ "", nil, "unix" }, { s:getpeername() })
    assert.same({ path, nil, "unix" }, { s:getsockname() })
    local pid = tonumber(H.readfile("/proc/self/stat"):match("^(%d+)"))
    assert.equal(pid, (s:getpeercred()))
    s:close(); c:close()
    l:close()
    assert.is_nil(stat(path))
  end)

  it("listen(0, {path =}) is the same; a host next to unix:PATH raises", function()
    local path = sock()
    local l = assert(glisten.listen(0, { path = path }))
    assert.equal(path, l.path)
    l:close()
    assert.is_nil(stat(path))
    assert.has_error(function() glisten.listen("unix:" .. path, "127.0.0.1") end)
  end)

  it("connect returns nil, err when nothing is there or nothing answers", function()
    local path = sock()
    assert.same({ nil, "No such file or directory" }, { glisten.connect("unix:" .. path, 1) })
    -- a server killed with its file left: refused
    local p = H.start("scripts/echo.lua unix:" .. H.quote(path))
    p:signal("KILL")
    p:wait()
    assert.same({ nil, "Connection refused" }, { glisten.connect("unix:" .. path, { timeout = 1 }) })
    local none, err = glisten.connect("unix:" .. ("z"):rep(200))
    assert.is_nil(none)
    assert.matches("path too long", err)
  end)

  it("connect takes options: the limits of the new socket", function()
    local path = sock()
    local l = assert(glisten.listen("unix:" .. path))
    local c = assert(glisten.connect("unix:" .. path, { timeout = 5, max_line = 4 }))
    local s = assert(l:accept(5))
    s:send("longer than four\n")
    c:settimeout(5)
    assert.same({ nil, "too long" }, { c:receive("*l") })
    assert.has_error(function() glisten.connect("unix:" .. path, { port = 1 }) end,
      "unknown option 'port'")
    s:close(); c:close(); l:close()
  end)
end)
