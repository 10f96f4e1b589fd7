"""What the gunicorn workers of one server share (a table in shared memory), and the core
sharing built on it."""
