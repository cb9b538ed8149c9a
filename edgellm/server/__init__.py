"""`edgellm serve`: an OpenAI-compatible HTTP server that answers several users at once.

FastAPI + uvicorn in the front end process; every model runs in a runner process of the
``batch`` kind (edgellm.runtime.batch), so HTTP threads never touch llama.cpp and a llama.cpp
crash fails only that model's requests in flight (HTTP 503) before a fresh runner takes over.
May import ``edgellm.runtime`` (the runner client), ``edgellm.models`` and the foundation
modules; never the commands, the TUI or measurement."""
