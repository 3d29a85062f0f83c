-- wrk script: POST /orders with varying customers and amounts (bench/run.sh,
-- section 1). obbench pace sends the same bodies in the same order.
--
-- done() prints one line "BENCH_JSON {...}" with the figures the report
-- needs, so nothing has to scrape wrk's human-readable output.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  local body = string.format('{"customerId":"c-%d","amount":"%d.%02d","currency":"USD"}', n % 1000, 1 + n % 500, n % 100)
  n = n + 1
  return wrk.format(nil, "/orders", nil, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"seconds":%.3f,"rps":%.1f,' ..
    '"errors":%d,"errors_detail":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_ms":{"mean":%.3f,"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f}}\n',
    summary.requests, secs, summary.requests / secs,
    e.connect + e.read + e.write + e.status + e.timeout, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean / 1000, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
