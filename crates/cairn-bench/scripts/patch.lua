-- wrk script for update load (cairn-backup-bench).
--   wrk ... -s patch.lua http://ADDR -- KEY LO HI TAG
-- Each request PATCHes /odata.svc/content(ID), ID uniform in [LO, HI], setting
-- Description to "TAG-THREAD-N". done() prints "wrk-lua patched=N failed=M".

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  wrk.headers["Content-Type"] = "application/json"
  lo = tonumber(args[2])
  hi = tonumber(args[3])
  tag = args[4]
  math.randomseed(os.time() * 1000 + tid)
  n = 0
  patched = 0
  failed = 0
end

function request()
  n = n + 1
  local body = '{"Description":"' .. tag .. '-' .. tid .. '-' .. n .. '"}'
  return wrk.format("PATCH", "/odata.svc/content(" .. math.random(lo, hi) .. ")?metadata=no", nil, body)
end

function response(status, headers, body)
  if status == 200 or status == 204 then
    patched = patched + 1
  else
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local c, f = 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("patched")
    f = f + t:get("failed")
  end
  io.write(string.format("wrk-lua patched=%d failed=%d\n", c, f))
end
