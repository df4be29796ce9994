-- Shared by every spec: loads the built module, starts glisten-lua
-- processes, and makes sure no spec leaks a connection.
local build = os.getenv("GLISTEN_BUILD") or "build"
package.cpath = build .. "/?.so;" .. package.cpath

local glisten = require "glisten"

local H = { glisten = glisten, build = build, bin = build .. "/glisten-lua" }
_G.H = H

-- A scratch folder: spec/run's, which it removes after the group; made
-- here (and left) only when busted runs without spec/run.
local tmpdir = os.getenv("GLISTEN_TMPDIR")
if not tmpdir or tmpdir == "" then
  tmpdir = os.tmpname()
  os.remove(tmpdir)
end
assert(os.execute("mkdir -p " .. tmpdir))
H.tmpdir = tmpdir

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
H.readfile = readfile

local function writefile(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end
H.writefile = writefile

local nfile = 0
-- A new file in the spec's temporary folder holding `source`.
function H.script(source)
  nfile = nfile + 1
  return writefile(("%s/script%d.lua"):format(tmpdir, nfile), source)
end

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.quote = sh_quote

-- Runs glisten-lua with args to completion (at most `limit` seconds).
-- Returns exit code, stdout, stderr.
function H.run(args, limit)
  nfile = nfile + 1
  local out = ("%s/out%d"):format(tmpdir, nfile)
  local cmd = ("timeout -s KILL %d %s %s >%s.o 2>%s.e; echo $? >%s.rc"):format(
    limit or 10, sh_quote(H.bin), args, out, out, out)
  os.execute(cmd)
  return tonumber(readfile(out .. ".rc")), readfile(out .. ".o"), readfile(out .. ".e")
end

H.started = {} -- processes H.start made; H.no_leaks ends the ones left

-- This runner's process id (for the watchdog of each server it starts).
local runner_pid = tonumber((readfile("/proc/self/stat") or ""):match("^(%d+)"))
assert(runner_pid, "cannot read /proc/self/stat")

-- Starts glisten-lua with args in the background and waits (at most 5 s)
-- for its "listening on" line (opts.no_listen: only for its pid; opts.
-- may_exit: an exit is no error). Returns a process handle:
--   p.pid, p.port (p.path for "listening on unix:PATH"), p:stderr(),
--   p:signal(name), p:wait(limit) -> exit code
function H.start(args, opts)
  opts = opts or {}
  nfile = nfile + 1
  local base = ("%s/proc%d"):format(tmpdir, nfile)
  local prefix = opts.prefix or ""
  -- A watchdog ends the server should this test runner die without
  -- stopping it (a crash, a ctest timeout), so no server outlives its test.
  local cmd = ("(%s exec %s %s 2>%s.e >%s.o & c=$!; echo $c >%s.pid; "
    .. "(while kill -0 %d && kill -0 $c; do sleep 1; done 2>/dev/null; "
    .. "kill -0 %d 2>/dev/null || kill -9 $c 2>/dev/null) & "
    .. "wait $c; echo $? >%s.rc) >/dev/null 2>&1 &")
    :format(prefix, sh_quote(H.bin), args, base, base, base, runner_pid, runner_pid, base)
  os.execute("sh -c " .. sh_quote(cmd))
  local p = { base = base }
  H.started[#H.started + 1] = p
  function p:stderr() return readfile(base .. ".e") or "" end
  function p:stdout() return readfile(base .. ".o") or "" end
  function p:signal(sig) os.execute(("kill -%s %d 2>/dev/null"):format(sig, self.pid)) end
  -- SIGTERM, then the exit code.
  function p:stop(limit)
    self:signal("TERM")
    return self:wait(limit or 10)
  end
  function p:wait(limit)
    local deadline = glisten.now() + (limit or 10)
    while glisten.now() < deadline do
      local rc = readfile(base .. ".rc")
      if rc and rc:match("%d") then return tonumber(rc) end
      glisten.sleep(0.02)
    end
    self:signal("KILL")
    error("glisten-lua did not exit within " .. (limit or 10) .. " s; stderr:\n" .. self:stderr())
  end
  local deadline = glisten.now() + 5
  while glisten.now() < deadline do
    local pid = readfile(base .. ".pid")
    if pid and pid:match("%d+\n") then p.pid = tonumber(pid) end
    if p.pid and opts.no_listen then return p end
    local port = p:stderr():match("listening on [^\n]*:(%d+)\n")
    local path = p:stderr():match("listening on unix:([^\n]*)\n")
    if p.pid and (port or path) then
      p.port, p.path = tonumber(port), path
      return p
    end
    local rc = readfile(base .. ".rc")
    if rc and rc:match("%d") and not opts.may_exit then
      error("glisten-lua exited with " .. rc .. ":\n" .. p:stderr())
    end
    if rc and rc:match("%d") then return p end
    glisten.sleep(0.02)
  end
  if p.pid then p:signal("KILL") end
  error("glisten-lua did not start within 5 s; stderr:\n" .. p:stderr())
end

-- Runs a peer's shell command (openssl, curl, socat, nc, haproxy's
-- clients, ...) to completion, without the sanitizers' preload (the peer
-- is not instrumented, and LeakSanitizer would abort it at exit), at most
-- `limit` seconds (60), with `input` on its stdin. Returns its output,
-- stdout and stderr together ("" for none), and whether it succeeded. It
-- blocks this runner's loop: the server it talks to must be another
-- process (H.start).
local npeer = 0
function H.peer(cmd, input, limit)
  npeer = npeer + 1
  local base = ("%s/peer%d"):format(tmpdir, npeer)
  local inp = writefile(base .. ".in", input or "")
  local ok = os.execute(("env -u LD_PRELOAD timeout %d %s <%s >%s.out 2>&1"):format(
    limit or 60, cmd, sh_quote(inp), base))
  return readfile(base .. ".out") or "", ok
end

-- Lua source of a table of strings and numbers (keys sorted), for putting
-- values into a script written for another process.
function H.lua_table(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = ("%s = %q,"):format(k, t[k]) end
  return "{ " .. table.concat(out, " ") .. " }"
end

-- How many lines of the file at path match the pattern (0 for no file).
function H.count_lines(path, pattern)
  local n = 0
  for line in (readfile(path) or ""):gmatch("[^\n]+") do
    if line:match(pattern) then n = n + 1 end
  end
  return n
end

-- A client connection to 127.0.0.1:port (or host) with a timeout of limit
-- seconds (5 unless given) on every call, so no spec can hang.
function H.connect(port, host, limit)
  local s = assert(glisten.connect(host or "127.0.0.1", port, 5))
  s:settimeout(limit or 5)
  return s
end

-- A client connection to the Unix socket at path, as H.connect.
function H.connect_unix(path, limit)
  local s = assert(glisten.connect("unix:" .. path, 5))
  s:settimeout(limit or 5)
  return s
end

-- Runs the loop until pred() is true or `limit` seconds pass; returns
-- whether pred() became true.
function H.wait_for(pred, limit)
  local deadline = glisten.now() + (limit or 5)
  while not pred() do
    if glisten.now() > deadline then return false end
    glisten.sleep(0.01)
  end
  return true
end

-- Every spec must leave no connection open in this process: each spec file
-- runs after_each(H.no_leaks).
function H.no_leaks()
  -- a spec that failed before stopping its process leaves it to us
  for _, p in ipairs(H.started) do
    local rc = readfile(p.base .. ".rc")
    if p.pid and not (rc and rc:match("%d")) then p:signal("KILL") end
  end
  H.started = {}
  local ok = H.wait_for(function()
    collectgarbage() -- client sockets a failed spec dropped
    return glisten.stats().connections == 0
  end, 3)
  assert(ok, "the spec leaked " .. glisten.stats().connections .. " connection(s)")
end

-- Serves handlers (a table as for glisten.serve, port 0) for the length of
-- fn(server), then closes the server and waits for its connections to end.
function H.serving(opts, fn)
  opts.port = opts.port or 0
  local srv = assert(glisten.serve(opts))
  local ok, err = pcall(fn, srv)
  srv:close()
  H.wait_for(function() return srv.connections == 0 end, 5)
  if not ok then error(err, 0) end
end


-- Asserts that sock's next receive reports the peer closed.
function H.assert_closed(sock, pattern)
  local data, err = sock:receive(pattern)
  assert(data == nil and err == "closed",
    ("expected nil, \"closed\"; got %s, %s"):format(tostring(data), tostring(err)))
end

-- The numbered byte stream (spec/stream.lua): H.stream(first, last),
-- H.flood(sock [, piece [, timeout [, from]]]), H.read_stream(sock, from,
-- n); and H.STREAM, a line of source that gives a script run in another
-- process the same functions as a local S.
local cwd = io.popen("pwd"):read("l") -- the specs run from the top folder
local stream_path = cwd .. "/spec/stream.lua"
local S = dofile(stream_path)
H.stream, H.flood, H.read_stream = S.stream, S.flood, S.read_stream
H.STREAM = ("local S = dofile(%q)\n"):format(stream_path)

-- For a pool whose second worker cannot bind: a port held (by the returned
-- listener) on 127.0.0.2 and free on 127.0.0.1, and a script whose worker 1
-- serves echo on 127.0.0.1 and whose other workers on 127.0.0.2. Returns
-- the listener, the port and the script's path.
function H.split_pool()
  local blocker, port
  for _ = 1, 20 do
    blocker = assert(glisten.listen(0, "127.0.0.2"))
    local probe = glisten.listen(blocker.port, "127.0.0.1")
    if probe then probe:close(); port = blocker.port; break end
    blocker:close()
  end
  assert(port, "no port free on 127.0.0.1 and 127.0.0.2 at once")
  return blocker, port, H.script([[
    local glisten = require "glisten"
    return {
      host = glisten.worker_id() == 1 and "127.0.0.1" or "127.0.0.2",
      handler = function(m, s) s.socket:send(m) end,
    }
  ]])
end

-- n bytes from /dev/urandom.
function H.random_bytes(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local s = f:read(n)
  f:close()
  return s
end

return H
