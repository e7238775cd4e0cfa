-- wrk script: counts answers per worker (the `pid=N` the bench apps put in their body)
-- and prints each worker's share and max/min at the end. One count per answer; run
-- with `Connection: close` to count connections.
counts = {} -- global: done() reads it from each thread with thread:get
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  local pid = body:match("pid=(%d+)")
  if pid then
    counts[pid] = (counts[pid] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total, all = {}, 0
  for _, thread in ipairs(threads) do
    for pid, n in pairs(thread:get("counts")) do
      total[pid] = (total[pid] or 0) + n
      all = all + n
    end
  end
  local list = {}
  for pid, n in pairs(total) do table.insert(list, { pid = pid, n = n }) end
  table.sort(list, function(a, b) return a.n > b.n end)
  local max, min = 0, math.huge
  local shares = {}
  for _, e in ipairs(list) do
    max = math.max(max, e.n)
    min = math.min(min, e.n)
    table.insert(shares, string.format("%.1f%%", 100 * e.n / math.max(all, 1)))
  end
  io.write(string.format("SHARES workers=%d answers=%d max/min=%.2f shares=%s\n",
    #list, all, (min > 0 and min < math.huge) and max / min or 0, table.concat(shares, " ")))
end
