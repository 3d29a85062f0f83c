-- wrk script: POST /orders with varying customers and amounts.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"customerId":"c-%d","amount":"%d.%02d","currency":"USD"}', n % 1000, 1 + n % 500, n % 100)
  return wrk.format(nil, "/orders", nil, body)
end
