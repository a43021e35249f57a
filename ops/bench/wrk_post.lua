-- POST the JSON body in the file named by BODY_FILE on every request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local handle = assert(io.open(os.getenv("BODY_FILE"), "r"))
wrk.body = handle:read("*a")
handle:close()
