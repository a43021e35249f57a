"""The wire formats of scoring: the lean JSON codecs of /predict (codec), the Open Inference
Protocol's shared core (oip) and its JSON/binary (oip_json) and gRPC (grpc_server) bindings, and
KServe's V1 protocol (kserve_v1). Above scoring."""
