-- wrk script: GET one fixed URL path with the administrator's key.
--   wrk ... -s query.lua http://ADDR -- KEY PATH
function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  path = args[2]
end

function request()
  return wrk.format("GET", path)
end
