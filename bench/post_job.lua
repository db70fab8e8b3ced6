-- wrk script: authenticated job submissions (the key comes from the KEY environment variable).
wrk.method = "POST"
wrk.body = '{"kind": "bench", "input": {"n": 1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("KEY")
