"""The graph callback that gathers an importance matrix while llama.cpp evaluates text.

What is gathered is llama-imatrix's (tools/imatrix/imatrix.cpp, `collect_imatrix`): for every
matrix multiplication whose weight is a model tensor (`blk.*`, and `output.weight` if asked), the
sum over token rows of each input column's squared activation, and the number of rows; per
expert for MUL_MAT_ID (the routing ids are its third source). Dense products of fewer than 16
rows are skipped, as there (generation-sized batches would weigh single tokens).

The callback runs inside `llama_decode` on ggml's thread with the GIL taken for each call, so
the scheduler's question ("do you want this node?", asked of every node) is answered from the op
number alone, and the work on a wanted node is a few numpy reductions over host memory. Sums are
float32 per batch (what llama-imatrix accumulates in) and float64 across batches; an error (a
non-finite activation, an impossible expert id) is kept and re-raised by `check` after the
decode, since an exception cannot cross the C callback."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantize.errors import ImatrixError
from quantize.imatrix import ggml_tensor as G


@dataclass
class Entry:
    """One weight's statistics: ``sums`` (n_mat, n_cols) and ``counts`` (n_mat,) rows seen."""

    sums: np.ndarray
    counts: np.ndarray


def weight_name(name: str) -> str:
    """llama-imatrix's filter_tensor_name: a scheduler copy `CUDA0#blk.0.attn_k.weight#0` is
    counted under the weight's own name."""
    if "#" not in name:
        return name
    return name.split("#", 2)[1]


class Collector:
    """``Collector().callback`` goes into `llama_context_params.cb_eval`; ``entries`` fills up."""

    def __init__(self, *, process_output: bool = False) -> None:
        import llama_cpp

        G.check_layout()
        self.process_output = process_output
        self.entries: dict[str, Entry] = {}
        self.error: BaseException | None = None
        # kept on self: the C side holds only a raw pointer to it
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)

    def check(self) -> None:
        """Raise what went wrong inside the callback since the last check."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _wanted(self, name: str) -> bool:
        return name.startswith("blk.") or (self.process_output and name == "output.weight")

    def _on_node(self, node: int, ask: bool, _user_data: int) -> bool:
        try:
            op = G.op_at(node)
            if op != G.GGML_OP_MUL_MAT and op != G.GGML_OP_MUL_MAT_ID:
                return False
            t = G.tensor_at(node)
            weight = G.tensor_at(G.address_of(t.src[0]))
            if ask:
                if op == G.GGML_OP_MUL_MAT_ID:
                    return True
                acts = G.tensor_at(G.address_of(t.src[1]))
                name = weight_name(G.name_of(weight))
                return acts.ne[1] >= 16 and acts.type == G.GGML_TYPE_F32 and self._wanted(name)
            if self.error is None:
                name = weight_name(G.name_of(weight))
                if op == G.GGML_OP_MUL_MAT_ID:
                    self._add_experts(name, t, weight)
                else:
                    self._add_dense(name, t, weight)
            return True
        except BaseException as err:  # noqa: BLE001 (cannot propagate through C; re-raised by check())
            self.error = err
            return False

    def _entry(self, name: str, n_mat: int, n_cols: int) -> Entry:
        entry = self.entries.get(name)
        if entry is None:
            entry = self.entries[name] = Entry(np.zeros((n_mat, n_cols)), np.zeros(n_mat, dtype=np.int64))
        elif entry.sums.shape != (n_mat, n_cols):
            raise ImatrixError(f"{name}: activations of shape {(n_mat, n_cols)} after {entry.sums.shape}")
        return entry

    def _add_dense(self, name: str, t: G.GGMLTensor, weight: G.GGMLTensor) -> None:
        x = G.as_array(G.address_of(t.src[1]), np.float32)  # [i3, i2, rows, cols]
        w2, w3 = int(weight.ne[2]), int(weight.ne[3])
        entry = self._entry(name, w2 * w3, x.shape[3])
        squares = np.einsum("abij,abij->abj", x, x)  # float32 per (i3, i2): sum over rows
        if not np.isfinite(squares).all():
            raise ImatrixError(f"non-finite activations reach {name}: the model's weights or the text overflow")
        if w2 * w3 == 1:
            entry.sums[0] += squares.sum(axis=(0, 1), dtype=np.float64)
        else:  # 3-D weights: activations broadcast over the weight's matrices as ggml does
            for i3 in range(x.shape[0]):
                for i2 in range(x.shape[1]):
                    entry.sums[(i3 % w3) * w2 + (i2 % w2)] += squares[i3, i2]
        entry.counts += x.shape[0] * x.shape[1] * x.shape[2] // (w2 * w3)

    def _add_experts(self, name: str, t: G.GGMLTensor, weight: G.GGMLTensor) -> None:
        # src1 [cols, n_used or 1, tokens]; ids [n_used, tokens] (int32, maybe not contiguous)
        x = G.as_array(G.address_of(t.src[1]), np.float32)[0]  # [tokens, n_used or 1, cols]
        ids = G.as_array(G.address_of(t.src[2]), np.int32)[0, 0]  # [tokens, n_used]
        n_experts = int(weight.ne[2])
        if x.shape[0] != ids.shape[0]:
            raise ImatrixError(f"{name}: {ids.shape[0]} routing rows for {x.shape[0]} tokens")
        if ids.size and (ids.min() < 0 or ids.max() >= n_experts):
            raise ImatrixError(f"{name}: expert id outside 0..{n_experts - 1}")
        entry = self._entry(name, n_experts, x.shape[2])
        rows = np.arange(ids.shape[0])
        for slot in range(ids.shape[1]):
            chosen = ids[:, slot]
            act = x[:, slot % x.shape[1], :]
            onehot = np.zeros((len(chosen), n_experts), dtype=np.float32)
            onehot[rows, chosen] = 1.0
            squares = onehot.T @ (act * act)  # (experts, cols)
            if not np.isfinite(squares).all():
                raise ImatrixError(f"non-finite activations reach {name}: the model's weights or the text overflow")
            entry.sums += squares
            entry.counts += np.bincount(chosen, minlength=n_experts)
