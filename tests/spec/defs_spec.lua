-- The editor definitions (lua/defs/teams/*.lua, LuaLS ---@meta files) and the README name the same
-- public functions: every teams.*, ev:*, bot:* and testing.* call the README shows has a
-- definition, and every definition is documented. Also: the files parse as Lua.
local DEFS = { "lua/defs/teams/init.lua", "lua/defs/teams/testing.lua" }

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Calls the README shows: name( , name{ , name { or name "..." ; a dotted path after teams.
local function readme_names()
  local names = {}
  local text = read("README.md")
  for _, pat in ipairs {
    "%f[%w_.:\"'](teams%.[%a_][%w_.]*)%s?[%(%{\"]",
    "%f[%w_.:\"'](ev:[%a_][%w_]*)%s?[%(%{\"]",
    "%f[%w_.:\"'](bot:[%a_][%w_]*)%s?[%(%{\"]",
    "%f[%w_.:\"'](testing%.[%a_][%w_]*)%s?[%(%{\"]",
  } do
    for name in text:gmatch(pat) do names[name] = true end
  end
  return names
end

-- Definitions: `function NAME(` and, for a callable table, `NAME = {}` right after its ---@overload.
-- Classes are spelt as the README spells their objects.
local RENAME = { ["Event:"] = "ev:", ["Bot:"] = "bot:" }
local function defined_names()
  local names = {}
  for _, path in ipairs(DEFS) do
    local prev = ""
    for line in (read(path) .. "\n"):gmatch("(.-)\n") do
      local name = line:match("^function ([%w_.:]+)%(") or
        (prev:match("^%-%-%-@overload") and line:match("^([%w_.]+) = {}"))
      if name then
        for from, to in pairs(RENAME) do
          if name:sub(1, #from) == from then name = to .. name:sub(#from + 1) end
        end
        if name:match("^teams%.") or name:match("^ev:") or name:match("^bot:") or name:match("^testing%.") then
          names[name] = true
        end
      end
      prev = line
    end
  end
  return names
end

local function missing(from, into)
  local out = {}
  for name in pairs(from) do if not into[name] then out[#out + 1] = name end end
  table.sort(out)
  return out
end

describe("editor definitions", function()
  it("parse as Lua", function()
    for _, path in ipairs(DEFS) do assert(loadfile(path)) end
  end)

  it("define every function the README documents", function()
    assert.same({}, missing(readme_names(), defined_names()))
  end)

  it("define nothing the README does not document", function()
    assert.same({}, missing(defined_names(), readme_names()))
  end)

  it("find enough names to mean something", function()
    local n = 0
    for _ in pairs(readme_names()) do n = n + 1 end
    assert.is_true(n > 80)
  end)
end)
