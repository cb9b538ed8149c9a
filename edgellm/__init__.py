"""edgellm: run open LLMs on a laptop CPU."""

__version__ = "0.1.0"
