"""The one error of the exports: a format that cannot be made, or that fails its checks."""


class ExportError(RuntimeError):
    """An export that could not be made or that does not compute what the model computes.

    A ``RuntimeError``, so the command line ends with its one-line message and exit status 2.
    Nothing is written when it is raised: every format is built and checked aside first."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (the exporters' are pages of graph dumps)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
