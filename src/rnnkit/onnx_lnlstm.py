"""The layer-normalised LSTM's recurrent half in ONNX, for ``rnnkit.onnx_export``: a Scan over the time axis
whose body is one step. ONNX has no LSTM with layer norms, and a Scan keeps T dynamic (tracing torch's loop would
fix it). The weights ride along as state variables that the body hands back unchanged, so the body reads nothing
from the enclosing graph.

A module of its own, imported only when exporting: onnxscript's converter reads the script's type annotations
and names from the module's globals, and onnxscript is an optional extra.
"""

from onnxscript import FLOAT, graph, script
from onnxscript import opset18 as op

F = FLOAT[...]  # a float tensor of any shape


@script()
def ln_scan(gx: F, h0: F, c0: F, w: F, gamma_h: F, shift: F, gamma_c: F, beta_c: F, eps_h: float,
            eps_c: float) -> tuple[F, F, F]:
    """``gx (B, T, 4H)`` the normalised input half, ``h0, c0 (B, H)``, ``w = W_hh^T (H, 4H)``, LN_hh's gain,
    ``shift`` (every constant of the pre-activations), LN_c's gain and offset -> ``y (B, T, H), h, c``."""

    @graph()
    def step(h: F, c: F, w: F, gh: F, sh: F, gc: F, bc: F, x: F):
        z = op.Add(x, op.LayerNormalization(op.MatMul(h, w), gh, sh, axis=-1, epsilon=eps_h))
        i, f, g, o = op.Split(z, num_outputs=4, axis=-1)
        c2 = op.Add(op.Mul(op.Sigmoid(f), c), op.Mul(op.Sigmoid(i), op.Tanh(g)))
        h2 = op.Mul(op.Sigmoid(o), op.Tanh(op.LayerNormalization(c2, gc, bc, axis=-1, epsilon=eps_c)))
        return h2, c2, w, gh, sh, gc, bc, h2

    h, c, _w, _gh, _sh, _gc, _bc, y = op.Scan(h0, c0, w, gamma_h, shift, gamma_c, beta_c, gx, body=step,
                                              num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1])
    return y, h, c
