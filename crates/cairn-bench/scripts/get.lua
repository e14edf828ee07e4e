-- wrk script for read benchmarks (cairn-api-bench).
--   wrk ... -s get.lua URL -- KEY              every request GETs URL's path and query
--   wrk ... -s get.lua URL -- KEY ids LO HI    GET /odata.svc/content(ID), ID uniform in [LO, HI]
-- Every request carries "Authorization: Bearer KEY".

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  mode = args[2] or "fixed"
  if mode == "ids" then
    lo = tonumber(args[3])
    hi = tonumber(args[4])
    math.randomseed(os.time() * 1000 + tid)
  end
  fixed = wrk.format()
end

function request()
  if mode == "ids" then
    return wrk.format("GET", "/odata.svc/content(" .. math.random(lo, hi) .. ")?metadata=no")
  end
  return fixed
end
