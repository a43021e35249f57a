"""The HTTP side of a worker: the route table every layer reads (routes), the front door and lean
scoring path (fast_path) with the scoring handlers (endpoints), the one refusal function and
the forms of an answer (answers), the security checks (security), the FastAPI app of the OIP and
KServe routes and the probes (http_app), the API document (api_document), the typed endpoints'
request types (typed_api) and what a service adds to BentoML's stack (stack). Above payments."""
