"""Step 4: three ReLU backward rules, and the DeconvNet as backprop with one rule changed.

At a ReLU y = max(x, 0) a backward pass gets a signal g at the output and sends back

    gradient   g · 1(x > 0)             the chain rule: the mask looks at the forward input x
    deconvnet  g · 1(g > 0)             Zeiler & Fergus: the mask looks at the signal g
    guided     g · 1(x > 0) · 1(g > 0)  Springenberg et al.: both masks

Everything else is shared (conv: the transposed convolution of step 2, col2im or
the shifted GEMMs' adjoint on this net, see conv.dx_form; max-pool: unpooling with the switches of
step 3), so a whole-network backward with rule="deconvnet" *is* the DeconvNet
reconstruction, which tinyconv.methods.deconvnet also writes out layer by layer.
The signal is printed layer by layer (net.backward(..., keep=True); `tinyconv
inspect` prints its norms too), with the units where the two masks disagree.
Only the gradient rule gives dS_c/dI. Writes relu_rules.png.
"""

import argparse
from pathlib import Path

import numpy as np

import tinyconv as tc
from tinyconv import deconvnet
from tinyconv.engine.functional import one_hot, relu_backward, relu_forward
from tinyconv.pictures import imaging

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("-o", "--out", type=Path, default=Path("."), help="folder for the PNG (default: here)")
out = parser.parse_args().out

x, g = np.array([-2.0, -1.0, 0.0, 1.0, 2.0]), np.array([-1.5, 0.5, 1.0, -0.5, 1.5])
_, cache = relu_forward(x)  # cache.mask = 1(x > 0)
rules = {rule: relu_backward(g, cache, rule) for rule in ("gradient", "deconvnet", "guided")}
print(f"{'x':>6} {'g':>6} | {'g·1(x>0)':>9} {'g·1(g>0)':>9} {'g·1(x>0)·1(g>0)':>16}")
for i in range(len(x)):
    a, b, c = (rules[r][i] + 0.0 for r in rules)  # + 0.0 turns -0.0 into 0.0
    print(f"{x[i]:6.1f} {g[i]:6.1f} | {a:9.1f} {b:9.1f} {c:16.1f}")
    assert a == (g[i] if x[i] > 0 else 0) and b == (g[i] if g[i] > 0 else 0)
    assert c == (g[i] if x[i] > 0 and g[i] > 0 else 0), "the rules must follow their formulas"
print("x = 0 passes nothing back under the strict '>' of the gradient and guided rules")

# the whole-network statement, on the bundled MNIST network and a real digit, in float64
repo = Path(__file__).resolve().parents[2]
net = tc.load(repo / "weights" / "mnist_cnn.npz").astype(np.float64)
digit = imaging.preprocess(repo / "examples" / "digits" / "digit_3.png", net, dtype=np.float64)
scores = net.forward(digit)
print(f"digit_3.png: top class {net.classes[scores.argmax()]!r}, S_c = {scores.max():.2f}")
with net.relu_rule("deconvnet"):  # the DeconvNet's signal r, kept at every layer's output
    net.backward(one_hot([scores.argmax()], scores), param_grads=False, keep=True)
print(f"{'layer':<14} {'|r| at its output':>17}  at a ReLU, units passed by 1(x>0) only / by 1(r>0) only")
for layer in net:
    r = net.gradients[layer.name]
    line = f"{layer.name:<14} {np.linalg.norm(r):17.3g}"
    if isinstance(layer, tc.ReLU):
        fwd, sig = layer.cache.mask, r > 0
        line += f"  {(fwd & ~sig).mean():6.1%} / {(sig & ~fwd).mean():5.1%} of {r.size} units"
    if isinstance(layer, tc.Conv2d):
        line += f"  (its last backward's dx: {layer.dx_form})"
    print(line)
assert all(layer.dx_form in ("col2im", "shifted") for layer in net if isinstance(layer, tc.Conv2d)), "F > C"
maps = deconvnet.compare(net, digit)  # top class; rule-switched backward vs the explicit walk
by_rule, explicit = maps["deconvnet_rule"], maps["deconvnet"]
diff = float(np.abs(by_rule - explicit).max() / np.abs(explicit).max())
print(f"network: backward(rule='deconvnet') vs explicit DeconvNet: relative difference {diff:.1e}")
assert diff < 1e-12, "backward with the DeconvNet rule must equal the DeconvNet reconstruction"


def cosine(a, b):
    return float(np.vdot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


for name in ("deconvnet", "guided"):
    print(f"cosine(gradient, {name}) = {cosine(maps['gradient'], maps[name]):+.3f}")
negative = float((explicit < 0).mean())
print(f"{negative:.0%} of the DeconvNet map is negative: the first conv's transpose mixes signs")
assert cosine(maps["gradient"], explicit) < 0.99, "on a real net the rules give different maps"
assert negative > 0, "no ReLU follows the last (first-conv) transpose"

signed = [imaging.signed_image(maps[k][0]) for k in ("gradient", "deconvnet", "guided")]
picture = imaging.montage([imaging.deprocess(digit[0], net), *signed],
                          ["digit", "dS_c/dI", "DeconvNet", "guided"], scale=6,
                          title="the input signal under three ReLU rules (red > 0, blue < 0)")  # fmt: skip
imaging.save_png(picture, out / "relu_rules.png")
print(f"wrote {out / 'relu_rules.png'}")
print("OK: three rules, one backward pass; rule='deconvnet' is the DeconvNet")
