-- wrk: market.list, the HTTP round trip's ceiling in the same run (answered by the matcher, no
-- journal write).
wrk.method = "POST"
wrk.body = '{"id": 1, "method": "market.list", "params": []}'
wrk.headers["Content-Type"] = "application/json"
