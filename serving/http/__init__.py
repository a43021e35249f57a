"""The HTTP side of a worker: the front door and lean scoring path (fast_path), the security
checks (security), the FastAPI app of the OIP and KServe routes and the probes (http_app), and
the API document (api_document). The top room of serving/: service.py builds on it."""
