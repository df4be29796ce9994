-- Applies (or, with -R, takes out) one mutant: a unified diff whose hunks
-- are matched by their text, not their line numbers or even their file.
--
--   lua5.4 tests/mutants/apply.lua [-R] [--check] MUTANT.patch ROOT
--
-- Each hunk's old text (its context and "-" lines) must occur exactly once:
-- in the file the diff names if it is there, else in exactly one .c or .h
-- file under ROOT/core or ROOT/lua. So a mutant survives a change that
-- moves its lines to another place or another file, and goes stale only
-- when the lines it breaks are themselves rewritten. With --check nothing
-- is written. Exits 0 when every hunk applies; else prints which did not.
local reverse, check = false, false
local args = {}
for _, a in ipairs(arg) do
  if a == "-R" then reverse = true
  elseif a == "--check" then check = true
  else args[#args + 1] = a end
end
local path, root = args[1], args[2]
if not (root and path) then
  io.stderr:write("usage: lua5.4 apply.lua [-R] [--check] MUTANT.patch ROOT\n")
  os.exit(2)
end

local function read(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The hunks: { file = "lua/x.c", old = "...", new = "..." }.
local hunks, file, cur = {}, nil, nil
local diff = assert(read(path), "cannot read " .. path)
if diff:sub(-1) ~= "\n" then diff = diff .. "\n" end
for line in diff:gmatch("(.-)\n") do
  local name = line:match("^%+%+%+ b/(.*)$")
  if name then
    file = name
  elseif line:match("^@@") then
    cur = { file = file, old = {}, new = {} }
    hunks[#hunks + 1] = cur
  elseif cur and not line:match("^%-%-%- ") and not line:match("^diff ") then
    local tag, text = line:sub(1, 1), line:sub(2)
    if tag == " " or line == "" then
      cur.old[#cur.old + 1] = text
      cur.new[#cur.new + 1] = text
    elseif tag == "-" then
      cur.old[#cur.old + 1] = text
    elseif tag == "+" then
      cur.new[#cur.new + 1] = text
    elseif tag == "\\" then -- "\ No newline at end of file"
    else
      cur = nil
    end
  end
end
if #hunks == 0 then
  print(path .. ": no hunks")
  os.exit(1)
end

-- Every .c and .h file under core/ and lua/, for a hunk whose file moved.
local function sources()
  local list = {}
  local p = io.popen(("find %q/core %q/lua -name '*.[ch]' 2>/dev/null | sort"):format(root, root))
  for f in p:lines() do list[#list + 1] = f:sub(#root + 2) end
  p:close()
  return list
end

local function count(s, sub)
  local n, i = 0, 1
  while true do
    local a, b = s:find(sub, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

local texts, failed = {}, 0
local function text_of(f)
  if texts[f] == nil then texts[f] = read(root .. "/" .. f) or false end
  return texts[f]
end

for i, h in ipairs(hunks) do
  local from = table.concat(reverse and h.new or h.old, "\n") .. "\n"
  local to = table.concat(reverse and h.old or h.new, "\n") .. "\n"
  local where
  local s = h.file and text_of(h.file)
  if s and count(s, from) == 1 then
    where = h.file
  else
    local found = {}
    for _, f in ipairs(sources()) do
      local t = text_of(f)
      if t and count(t, from) == 1 then found[#found + 1] = f end
    end
    if #found == 1 then where = found[1] end
  end
  if where then
    local t = text_of(where)
    local a, b = t:find(from, 1, true)
    texts[where] = t:sub(1, a - 1) .. to .. t:sub(b + 1)
    h.applied = where
  else
    failed = failed + 1
    print(("%s: hunk %d (%s) matches no single place"):format(path, i, h.file or "?"))
  end
end
if failed > 0 then os.exit(1) end
if not check then
  for _, h in ipairs(hunks) do
    local f = assert(io.open(root .. "/" .. h.applied, "wb"))
    f:write(texts[h.applied])
    f:close()
  end
end
os.exit(0)
