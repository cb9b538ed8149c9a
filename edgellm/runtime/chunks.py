"""How llama.cpp's perplexity and imatrix tools cut a token stream into context windows, shared by
`edgellm eval` (edgellm.measure.evaluate) and importance matrices (quantize.imatrix)."""

from __future__ import annotations

from edgellm.errors import EdgeLLMError

MIN_CTX = 16  # llama.cpp's imatrix skips batches under 16 rows; a smaller context scores nothing useful


def chunk_tokens(
    tokens: list[int], n_ctx: int, max_chunks: int | None, bos: int | None, *, what: str = "the text",
    option: str = "--text", ctx_option: str | None = "--ctx",
) -> list[list[int]]:  # fmt: skip
    """Consecutive n_ctx-token chunks (the tail that does not fill one is dropped), each starting
    with BOS when the model adds one; at most ``max_chunks``. ``what``, ``option`` and
    ``ctx_option`` (None: the command has none) name the text, the option that gives it and the
    one that sets n_ctx in the error for a text shorter than two chunks."""
    if n_ctx < MIN_CTX:
        raise EdgeLLMError(f"--ctx {n_ctx} is too small: use at least {MIN_CTX} (llama.cpp uses 512)")
    if len(tokens) < 2 * n_ctx:
        smaller = f" or a smaller {ctx_option}" if ctx_option else ""
        raise EdgeLLMError(f"{what} has {len(tokens)} tokens but a context of {n_ctx} needs at least {2 * n_ctx}: "
                           f"give a longer {option}{smaller}")  # fmt: skip
    n = len(tokens) // n_ctx
    if max_chunks is not None and max_chunks > 0:
        n = min(n, max_chunks)
    chunks = [tokens[i * n_ctx : (i + 1) * n_ctx] for i in range(n)]
    if bos is not None:
        for chunk in chunks:
            chunk[0] = bos
    return chunks
