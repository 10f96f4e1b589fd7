"""The inference service: ``create_app()`` (``service.app``) builds the Litestar app that gunicorn
runs with uvicorn workers. Reads the registry through ``artifacts``; never imports ``training``."""
