-- teams.check — what `herald check` reads in a script's text once it has loaded: every
-- teams.NAME (and teams.schedule.NAME, ...) the module does not have, which the script would only
-- meet when a handler runs. Runs in the host environment; scripts cannot require it.
--
-- check(source, filename, teams) → list of "file:line: message". `teams` is the module the script
-- loaded, so names the roster or any later change adds are known without a list here. Names a
-- script assigns (teams.helper = ...) are its own and not reported.

-- Tokens of Lua source: { kind = "name" | "string" | "op" | "number", value, line }. Comments
-- and whitespace are dropped; long strings and long comments of any level are understood.
local function tokens(src)
  local out, i, line, n = {}, 1, 1, #src
  local function long_bracket(at)   -- at points at "[": level and end of the opening, or nil
    local eqs = src:match("^%[(=*)%[", at)
    if eqs then return #eqs, at + #eqs + 2 end
  end
  local function skip_long(at, level)   -- returns the index after the closing bracket
    local close = "]" .. ("="):rep(level) .. "]"
    local _, e = src:find(close, at, true)
    e = e or n
    for _ in src:sub(at, e):gmatch("\n") do line = line + 1 end
    return e + 1
  end
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then
      line, i = line + 1, i + 1
    elseif c:match("%s") then
      i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local level, after = nil, nil
      if src:sub(i + 2, i + 2) == "[" then level, after = long_bracket(i + 2) end
      if level then
        i = skip_long(after, level)
      else
        local e = src:find("\n", i, true)
        i = e or n + 1
      end
    elseif c == "[" and long_bracket(i) then
      local level, after = long_bracket(i)
      local start = line
      local e = skip_long(after, level)
      out[#out + 1] = { kind = "string", value = src:sub(after, e - level - 3), line = start }
      i = e
    elseif c == '"' or c == "'" then
      local j, buf = i + 1, {}
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then
          buf[#buf + 1] = src:sub(j, j + 1)
          if src:sub(j + 1, j + 1) == "\n" then line = line + 1 end
          j = j + 2
        elseif d == c or d == "\n" then
          break
        else
          buf[#buf + 1] = d
          j = j + 1
        end
      end
      out[#out + 1] = { kind = "string", value = table.concat(buf), line = line }
      i = j + 1
    elseif c:match("[%a_]") then
      local w = src:match("^[%w_]+", i)
      out[#out + 1] = { kind = "name", value = w, line = line }
      i = i + #w
    elseif c:match("%d") or (c == "." and src:sub(i + 1, i + 1):match("%d")) then
      local w = src:match("^0[xX][%x%.]*[pP]?[+-]?%x*", i) or src:match("^[%d%.]+[eE]?[+-]?%d*", i)
      out[#out + 1] = { kind = "number", value = w, line = line }
      i = i + #w
    else
      local op = src:match("^%.%.%.", i) or src:match("^[=~<>]=", i) or src:match("^%.%.", i)
        or src:match("^::", i) or src:match("^//", i) or src:match("^<<", i) or src:match("^>>", i) or c
      out[#out + 1] = { kind = "op", value = op, line = line }
      i = i + #op
    end
  end
  return out
end

local function is(t, kind, value) return t and t.kind == kind and (value == nil or t.value == value) end

-- The names bound to require "teams": local t = require "teams" / require("teams") / require 'teams'.
local function aliases(toks)
  local out = {}
  for k = 1, #toks do
    if is(toks[k], "name") and is(toks[k + 1], "op", "=") and is(toks[k + 2], "name", "require") then
      local s = is(toks[k + 3], "op", "(") and toks[k + 4] or toks[k + 3]
      if is(s, "string", "teams") then out[toks[k].value] = true end
    end
  end
  return out
end

-- The message the module's own __index raises for t[name], without its position.
local function unknown(t, name)
  local ok, err = pcall(function() return t[name] end)
  if ok then return nil end
  return (tostring(err):match("(unknown field .*)$")) or tostring(err)
end

return function(src, filename, teams)
  local toks = tokens(src)
  local names = aliases(toks)
  local own, found = {}, {}
  -- a path alias.a.b read at k: its parts, and whether it is assigned (alias.a = ...)
  local function path_at(k)
    local parts, j = {}, k + 1
    while is(toks[j], "op", ".") and is(toks[j + 1], "name") do
      parts[#parts + 1] = toks[j + 1].value
      j = j + 2
    end
    return parts, is(toks[j], "op", "=")
  end
  for k = 1, #toks do
    if is(toks[k], "name") and names[toks[k].value] and not is(toks[k - 1], "op", ".")
        and not is(toks[k - 1], "op", ":") then
      local parts, assigned = path_at(k)
      if assigned and #parts >= 1 then own[table.concat(parts, ".")] = true end
    end
  end
  for k = 1, #toks do
    if is(toks[k], "name") and names[toks[k].value] and not is(toks[k - 1], "op", ".")
        and not is(toks[k - 1], "op", ":") then
      local parts, assigned = path_at(k)
      local t, prefix = teams, {}
      for p = 1, #parts do
        if assigned and p == #parts then break end
        prefix[#prefix + 1] = parts[p]
        if own[table.concat(prefix, ".")] then break end
        if type(t) ~= "table" then break end
        local v = rawget(t, parts[p])
        if v == nil then
          local msg = unknown(t, parts[p]) or ("unknown field '%s' in %s"):format(parts[p],
            table.concat({ "teams", table.unpack(prefix, 1, #prefix - 1) }, "."))
          found[#found + 1] = ("%s:%d: %s"):format(filename, toks[k].line, msg)
          break
        end
        t = v
      end
    end
  end
  return found
end
