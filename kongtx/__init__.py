"""kongtx: an API gateway node on Twisted that does what Kong 0.9 does, and more."""

__version__ = "0.9.9"
#: The product string Kong puts in ``Server`` and ``Via`` headers.
SERVER_NAME = f"kong/{__version__}"
