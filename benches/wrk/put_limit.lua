-- wrk: order.put_limit as a web back end sends it, one request in flight per connection.
-- 100 funded users (fund them first: benches/http-web-figures.sh), prices uniform in 7950-8050,
-- sides alternating, amounts 0.010-0.099 BTC: about half of the orders trade. Each thread seeds
-- its own generator, so threads do not send the same sequence.
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(seed * 7919 + os.time())
  n = 0
end

function request()
  n = n + 1
  local user = math.random(1, 100)
  local side = (n % 2) + 1
  local price = string.format("%d.%02d", math.random(7950, 8049), math.random(0, 99))
  local amount = string.format("0.0%d", math.random(10, 99))
  local body = string.format(
    '{"id": %d, "method": "order.put_limit", "params": [%d, "BTCBCH", %d, "%s", "%s", "0.002", "0.001", "web"]}',
    n, user, side, amount, price)
  return wrk.format("POST", "/", {["Content-Type"] = "application/json"}, body)
end

errors = 0
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"error":null', 1, true) then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local refused = 0
  for _, thread in ipairs(threads) do
    refused = refused + thread:get("errors")
  end
  io.write(string.format("orders refused (non-200 or a JSON-RPC error): %d of %d\n", refused, summary.requests))
end
