-- wrk script of the "contract" scenario (bench/run.sh): POST of the ~1 KiB
-- JSON post in the file named by the first script argument (default:
-- bench/contract/post.json, relative to the current directory).
--
--   wrk -s bench/contract/post.lua http://127.0.0.1:PORT/api/v1/posts -- bench/contract/post.json
--
-- run.sh appends its own done() hook (req/s, p50, p99, errors) to a copy.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

init = function(args)
  local path = args[1] or "bench/contract/post.json"
  local f = assert(io.open(path, "rb"))
  -- Without the final newline: exactly the JSON document.
  wrk.body = f:read("*a"):gsub("%s+$", "")
  f:close()
end
