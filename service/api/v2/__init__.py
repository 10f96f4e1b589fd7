"""The Open Inference Protocol v2 over REST (KServe v2, the protocol Triton speaks), with the
binary tensor data extension: health, server and model metadata, and inference through the same
predictor, batcher and limits as ``/predict`` (docs/api.md).

    routes.py    the /v2 routes: metadata and health; everything under /v2/models/ in one raw route
    infer.py     POST .../infer: admit, receive within the body budget, classify, answer
    request.py   the request's head and body -> the input to classify, the outputs, top_k
    tensors.py   the input tensors (images, pixels) -> image files or uint8 pixels
    response.py  the inference response (JSON + binary data) and the model metadata
    openapi.py   the OpenAPI entries of the raw routes
"""
