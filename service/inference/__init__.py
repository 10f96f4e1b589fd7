"""Inference: the predictor (one request's flow), the micro-batcher, the runner on the inference
thread, image decoding, model loading and hot reload."""
