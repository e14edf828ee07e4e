-- wrk script for create benchmarks (cairn-api-bench, cairn-backup-bench).
--   wrk ... -s create.lua http://ADDR -- KEY /odata.svc/Root/FOLDER TAG BODYTEXT
-- Each request POSTs {"__ContentType":"Article","Name":"c-TAG-THREAD-N","Body":BODYTEXT}
-- to the folder, with a Name unique per request (TAG, wrk thread number, counter).
-- done() prints "wrk-lua created=N failed=M": answers 201 and any other answers.

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
  folder = args[2]
  tag = args[3]
  text = args[4] or "benchmark article"
  n = 0
  created = 0
  failed = 0
end

function request()
  n = n + 1
  local name = "c-" .. tag .. "-" .. tid .. "-" .. n
  local body = '{"__ContentType":"Article","Name":"' .. name .. '","Body":"' .. text .. ' ' .. name .. '"}'
  return wrk.format("POST", folder, nil, body)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  else
    failed = failed + 1
    if failed <= 3 then
      io.stderr:write("create answered " .. status .. ": " .. string.sub(body, 1, 300) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local c, f = 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    f = f + t:get("failed")
  end
  io.write(string.format("wrk-lua created=%d failed=%d\n", c, f))
end
