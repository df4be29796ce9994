-- glisten.shared: one dictionary for every worker, with ngx.shared.DICT's
-- signatures. (Atomicity across workers is in workers_spec.)
local glisten = H.glisten
local shared = glisten.shared

describe("glisten.shared", function()
  after_each(H.no_leaks)
  before_each(function()
    for _, k in ipairs(shared:keys(0)) do shared:delete(k) end
  end)

  it("stores strings, integers, floats and booleans, keeping their types", function()
    assert.same({ true, nil, false }, { shared:set("s", "text\0bin") })
    shared:set("i", 42)
    shared:set("f", 1.5)
    shared:set("b", false)
    assert.equal("text\0bin", shared:get("s"))
    assert.equal(42, shared:get("i"))
    assert.equal("integer", math.type(shared:get("i")))
    assert.equal(1.5, shared:get("f"))
    assert.is_false(shared:get("b"))
    assert.is_nil(shared:get("missing"))
    shared:set("empty", "")
    assert.equal("", shared:get("empty"))
    shared:set("s", nil) -- nil deletes
    assert.is_nil(shared:get("s"))
    assert.is_true(shared:delete("i"))
    assert.is_true(shared:delete("never there"))
    assert.is_nil(shared:get("i"))
  end)

  it("add fails with \"exists\" when the key is there", function()
    assert.is_true((shared:add("k", 1)))
    assert.same({ false, "exists" }, { shared:add("k", 2) })
    assert.equal(1, shared:get("k"))
  end)

  it("incr adds, creates from init, and refuses what is not a number", function()
    assert.same({ nil, "not found" }, { shared:incr("n", 1) })
    assert.equal(11, shared:incr("n", 1, 10))
    assert.equal(8, shared:incr("n", -3))
    assert.equal("integer", math.type(shared:incr("n", 0)))
    assert.equal(8.5, shared:incr("n", 0.5))
    assert.equal("float", math.type(shared:get("n")))
    shared:set("h", 1)
    assert.equal(6, shared:incr("h", "5")) -- a numeric string converts
    assert.equal("integer", math.type(shared:get("h")))
    assert.equal(1, shared:incr("z", 1, "0"))
    shared:set("t", "text")
    assert.same({ nil, "not a number" }, { shared:incr("t", 1) })
    assert.has_error(function() shared:incr("n", "x") end)
  end)

  -- A TTL is checked in the two directions that cannot race with a busy
  -- machine: a key read right after it is set (far sooner than its TTL)
  -- is there, and a key whose TTL has passed is gone, waited for with a
  -- deadline that only bounds a hang.
  local TTL = 2     -- seconds: many times the gap between two lines
  local LONG = 3600 -- never passes during a test
  local HANG = 60   -- bounds a wait that should end after TTL

  -- Runs fn (which sets keys with TTL and reads them back) until one run
  -- takes less than TTL, so that what it read cannot have expired
  -- meanwhile; returns what that run returned. A machine too busy to run
  -- a few lines within TTL seconds five times running fails here.
  local function fresh(fn)
    for _ = 1, 5 do
      for _, k in ipairs(shared:keys(0)) do shared:delete(k) end
      local t0 = glisten.now()
      local r = { fn() }
      if glisten.now() - t0 < TTL then return table.unpack(r) end
    end
    error("five runs of a few lines each took longer than " .. TTL .. " s")
  end

  it("forgets keys after their ttl", function()
    local short, short2 = fresh(function()
      shared:set("short2", "v", TTL)
      shared:add("short", "v", TTL)
      shared:set("long", "v", LONG)
      shared:set("forever", "v")
      return shared:get("short"), shared:get("short2")
    end)
    assert.equal("v", short)
    assert.equal("v", short2)
    -- "short" was set last, so once it is gone "short2" is too
    assert.is_true(H.wait_for(function() return shared:get("short") == nil end, HANG),
      "a key outlived its ttl")
    assert.is_nil(shared:get("short2"))
    assert.equal("v", shared:get("long"))
    local keys = shared:keys(0)
    table.sort(keys)
    assert.same({ "forever", "long" }, keys)
    assert.is_true((shared:add("short", "again"))) -- an expired key is free
  end)

  it("incr gives a key it creates init_ttl; an existing key keeps its own", function()
    -- "kept" exists with a long ttl: incr's init_ttl, shorter than
    -- "window"'s, must not replace it (were it taken, "kept" would expire
    -- before "window")
    local kept, w1, w2 = fresh(function()
      shared:set("kept", 5, LONG)
      return shared:incr("kept", 1, 0, TTL / 2),
        shared:incr("window", 1, 0, TTL),
        shared:incr("window", 1, 0, LONG) -- exists: its ttl stays TTL
    end)
    assert.same({ 6, 1, 2 }, { kept, w1, w2 })
    assert.is_true(H.wait_for(function() return shared:get("window") == nil end, HANG),
      "the key incr created outlived its init_ttl")
    assert.equal(6, shared:get("kept"))
    assert.equal(1, shared:incr("window", 1, 0)) -- created again, no ttl
    assert.has_error(function() shared:incr("x", 1, 0, 0 / 0) end)
    assert.has_error(function() shared:incr("x", 1, 0, -1) end)
    assert.has_error(function() shared:incr("x", 1, 0, "soon") end)
    shared:delete("window"); shared:delete("kept")
  end)

  it("lists keys, at most max (1024 by default, 0 for all)", function()
    assert.same({}, shared:keys(0))
    for i = 1, 1100 do shared:set("key" .. i, i) end
    assert.equal(1024, #shared:keys())
    assert.equal(10, #shared:keys(10))
    assert.equal(1100, #shared:keys(0))
  end)

  it("raises on misuse", function()
    assert.has_error(function() shared:set("t", {}) end)
    assert.has_error(function() shared:set("f", print) end)
    assert.has_error(function() shared:set("", 1) end)
    assert.has_error(function() shared.get("x") end)
    assert.has_error(function() shared:set("x", 1, -1) end)
  end)

  it("when full, set evicts the least recently used keys; add and incr fail", function()
    local mib = ("m"):rep(1024 * 1024)
    local forcible_seen = false
    for i = 1, 80 do
      local ok, err, forcible = shared:set("big" .. i, mib)
      assert.is_true(ok, err)
      if i == 2 then shared:get("big1") end -- big1 is now more recent than big2
      if forcible then forcible_seen = true end
      if i > 2 then shared:get("big1") end
    end
    assert.is_true(forcible_seen) -- 80 MiB do not fit in 64 MiB
    assert.equal(mib, shared:get("big1")) -- kept: recently used
    assert.is_nil(shared:get("big2")) -- evicted: least recently used
    assert.equal(mib, shared:get("big80")) -- the newest
    -- add never evicts a live key
    assert.same({ nil, "no memory" }, { shared:add("one more", mib) })
    -- a value larger than the whole dictionary never fits, and the old value stays
    shared:set("keep", "old")
    assert.same({ nil, "no memory" }, { shared:set("keep", ("x"):rep(65 * 1024 * 1024)) })
    assert.equal("old", shared:get("keep"))
  end)
end)
