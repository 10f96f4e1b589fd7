"""HTTP: the routes (``/predict``, health and info, admin), request parsing and the request-id
and metrics middleware. No torch here: requests go to ``service.inference``."""
