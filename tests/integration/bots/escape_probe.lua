-- escape_probe.lua — runs one sandbox-escape probe per invoke (test_sandbox_escape.py). The probe
-- is Lua text loaded like any script code; the runner reports whether it reached a capability the
-- sandbox removes, and tries to use it (a marker file, a secret) so the test can see an escape.
local teams = require "teams"
_G.teams = teams   -- probes name it
local load, pcall, type, rawget, pairs, tostring, select = load, pcall, type, rawget, pairs, tostring, select
local getmetatable, next, pack = getmetatable, next, table.pack
local MARKER = assert(os.getenv("BOT_MARKER"))
local SECRETS = { "CLIENT_SECRET", "MicrosoftAppPassword", "HERALD_NOTIFY_SECRET", "HERALD_ADMIN_TOKEN",
                  "PATH", "HOME" }

local CAPS = { "execute", "exit", "remove", "rename", "tmpname", "setlocale", "popen", "open", "lines",
               "tmpfile", "getregistry", "getupvalue", "setupvalue", "sethook", "getlocal", "loadlib",
               "upvalueid", "upvaluejoin", "set_dispatcher", "set_dispatch", "set_hooks", "set_notify",
               "set_handlers" }

-- A description of what v exposes that a script must never hold (nil when nothing), after trying
-- to use it: the marker file proves a command ran, a returned secret proves the environment leaked.
local TABLE_LIB = table   -- table.remove is not os.remove
local function dangerous(v, depth)
  if type(v) ~= "table" or v == TABLE_LIB then return nil end
  for _, k in pairs(CAPS) do
    local f = rawget(v, k)
    if f ~= nil then
      if k == "execute" or k == "popen" then pcall(f, "touch " .. MARKER) end
      if k == "open" then pcall(f, MARKER, "w") end
      return "exposes " .. k
    end
  end
  local getenv = rawget(v, "getenv")
  if type(getenv) == "function" then
    for _, name in pairs(SECRETS) do
      local ok, val = pcall(getenv, name)
      if ok and val ~= nil then return "getenv(" .. name .. ") = " .. tostring(val) end
    end
  end
  if (depth or 0) < 2 then
    for k, x in next, v do
      local d = type(x) == "table" and dangerous(x, (depth or 0) + 1)
      if d then return tostring(k) .. "." .. d end
    end
  end
  return nil
end

teams.on_invoke(function(ev)
  local code = ev.value and ev.value.code
  local chunk, err = load(code, "=probe", "t")
  if not chunk then return { loaded = false, error = tostring(err) } end
  local r = pack(pcall(chunk, ev, teams))
  local out = { ok = r[1], n = r.n - 1 }
  if not r[1] then
    out.error = tostring(r[2])
  else
    for i = 2, r.n do
      local d = dangerous(r[i])
      if d then out.escaped = d end
    end
    local v = r[2]
    if type(v) == "string" or type(v) == "number" or type(v) == "boolean" then out.value = v end
    if v == nil then out.value = "nil" end
    if type(v) == "table" and rawget(v, "value") ~= nil then out.value = tostring(rawget(v, "value")) end
  end
  return out
end)

teams.on_message(function(ev)
  ev:reply("echo: " .. ev.text)
end)
