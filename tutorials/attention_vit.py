# %% [markdown]
# # Attention and the Vision Transformer: self-attention by hand, patch embedding, a small ViT.
#
# **Lecture topic:** attention mechanisms and Vision Transformers (ViT).
#
# **What you will learn:**
# - scaled dot-product self-attention, ``softmax(Q K^T / sqrt(d)) V``, written out in NumPy and checked
#   against ``keras.layers.MultiHeadAttention`` with the same weights;
# - how to read an attention map: row ``i`` says how much token ``i`` takes from every other token;
# - how a ViT turns an image into a sequence of tokens (patch embedding = flatten each patch, then one
#   shared linear layer), with a class token and position embeddings;
# - training a small ViT on ultrasound-like images and showing where its class token looks (CLS
#   attention and attention rollout overlaid on the image).
#
# **Data:** synthetic B-mode ultrasound images (``data_utils.synthetic.make_ultrasound_dataset``), normal
# tissue versus a cyst.
#
# **Run it:**  ``python tutorials/attention_vit.py [--quick]``  (about 2 minutes on a laptop CPU; ``--quick`` ~20 s).
#
# In a notebook (`jupytext --to notebook`, VS Code, Jupyter, Colab), set `QUICK = True` in the
# first cell or the environment variable `TUTORIAL_QUICK=1` for the short run.

# %%
# Setup: inside a checkout of the kit this cell only finds tutorials/ (from there or from the repository root);
# on a fresh machine or Colab it first clones the kit from KIT_URL (your course's copy) and installs it.
# (Every notebook carries this cell because a notebook must run on its own.)
QUICK = False  # True, or the environment variable TUTORIAL_QUICK=1, chooses the short run
import os, sys  # noqa: E401
kit = next((d for d in (sys.path[0], ".", "tutorials", "kit/tutorials") if os.path.isfile(os.path.join(d or ".", "common.py"))), None)
if kit is None and os.system(f"git clone -q {os.environ.get('KIT_URL', '')} kit && {sys.executable} -m pip install -q -r kit/requirements.txt"):
    raise RuntimeError("could not clone and install the kit from KIT_URL (set os.environ['KIT_URL'] to your course's git URL)")
sys.path.insert(0, os.path.abspath(kit or "kit/tutorials"))
import common  # noqa: E402

# %%
tut = common.start("attention_vit", "Self-attention by hand, patch embedding and a small ViT with attention maps", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

import models  # noqa: E402
from data_utils.synthetic import make_ultrasound_dataset  # noqa: E402
from models.attention import attention_scores_model  # noqa: E402
from models.vit import patch_embedding  # noqa: E402

IMAGE_SIZE = 32  # pixels (40 mm field of view)
PATCH_SIZE = 4  # 32 / 4 = 8 x 8 = 64 patch tokens
HIDDEN_DIM = 32  # token width
DEPTH = 2  # encoder blocks
NUM_HEADS = 4
NUM_TRAIN = tut.pick(800, 300)
NUM_TEST = tut.pick(300, 100)
EPOCHS = tut.pick(20, 8)
BATCH_SIZE = 32
LEARNING_RATE = 2e-3

# %% [markdown]
# ## 1. Self-attention by hand
# Every token ``x_i`` (a row of ``X``, shape ``(N, D)``) makes three vectors with learned matrices: a
# query ``q_i = x_i W_q`` ("what am I looking for?"), a key ``k_i = x_i W_k`` ("what do I contain?") and
# a value ``v_i = x_i W_v`` ("what do I pass on?"). Token ``i`` attends to token ``j`` with weight
#
#     a_ij = softmax_j(q_i . k_j / sqrt(d))
#
# and its output is ``sum_j a_ij v_j``. Dividing by ``sqrt(d)`` keeps the dot products from growing
# with the width ``d``, which would make the softmax saturate. **Multi-head** attention does this ``h``
# times with smaller matrices, concatenates the results and mixes them with ``W_o``.

# %%
rng = np.random.default_rng(tut.seed)
num_tokens, dim, heads = 6, 8, 2
head_dim = dim // heads
X = rng.normal(size=(num_tokens, dim)).astype("float32")
Wq, Wk, Wv = (rng.normal(scale=0.5, size=(dim, heads, head_dim)).astype("float32") for _ in range(3))
bq, bk, bv = (rng.normal(scale=0.1, size=(heads, head_dim)).astype("float32") for _ in range(3))
Wo = rng.normal(scale=0.5, size=(heads, head_dim, dim)).astype("float32")
bo = rng.normal(scale=0.1, size=(dim,)).astype("float32")


def softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)  # subtract the max: same result, no overflow
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


out_numpy = np.zeros((num_tokens, dim), "float32")
weights_numpy = []
for h in range(heads):
    Q, K, V = X @ Wq[:, h] + bq[h], X @ Wk[:, h] + bk[h], X @ Wv[:, h] + bv[h]  # (N, head_dim) each
    A = softmax(Q @ K.T / np.sqrt(head_dim))  # (N, N): row i = where token i looks
    weights_numpy.append(A)
    out_numpy += (A @ V) @ Wo[h]  # concatenating heads then W_o = summing each head's share
out_numpy += bo
weights_numpy = np.stack(weights_numpy)

mha = layers.MultiHeadAttention(num_heads=heads, key_dim=head_dim)
mha(X[None], X[None])  # build
mha.set_weights([Wq, bq, Wk, bk, Wv, bv, Wo, bo])
out_keras, weights_keras = mha(X[None], X[None], return_attention_scores=True)
attention_output_error = float(np.max(np.abs(out_numpy - keras.ops.convert_to_numpy(out_keras)[0])))
attention_weight_error = float(np.max(np.abs(weights_numpy - keras.ops.convert_to_numpy(weights_keras)[0])))
print(f"NumPy vs keras.layers.MultiHeadAttention: outputs differ by {attention_output_error:.1e}, "
      f"attention weights by {attention_weight_error:.1e}")

fig, axes = plt.subplots(1, heads, figsize=(4 * heads, 3.4))
for h, ax in enumerate(axes):
    im = ax.imshow(weights_numpy[h], cmap="viridis", vmin=0, vmax=1)
    for i in range(num_tokens):
        for j in range(num_tokens):
            ax.text(j, i, f"{weights_numpy[h, i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
    ax.set(xlabel="key token j (looked at)", ylabel="query token i (looking)", title=f"head {h + 1}")
fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight (rows sum to 1)")
tut.save_figure(fig, "attention_by_hand.png")

# %% [markdown]
# ## 2. Images as sequences: patch embedding
# A transformer reads a sequence of tokens. ViT cuts the image into ``PATCH_SIZE x PATCH_SIZE``
# patches, flattens each one to a vector of ``PATCH_SIZE^2 x channels`` numbers and maps it with one
# shared linear layer to a token of width ``HIDDEN_DIM``. The library writes this as a convolution
# with kernel = stride = patch size, which is the same computation; we check that. Then a learned
# **class token** is put in front of the sequence (the classifier will read only it), and a learned
# **position embedding** is added to every token, because attention by itself ignores order.

# %%
# With real data instead of the phantom: a CSV of (image, label) rows loads as
#     cases, class_names = data_utils.layouts.csv_classification_cases("labels.csv")
#     images, labels = (data_utils.layouts.load_classification_cases(cases)[k] for k in ("image", "label"))
# (split by patient with `data_utils.datasets.split_cases`), or a MedMNIST-style .npz, already split:
# `data_utils.formats.load_npz("breastmnist.npz")["train"]["image"]`.
images, labels, class_names = make_ultrasound_dataset(NUM_TRAIN + NUM_TEST, image_size=IMAGE_SIZE,
                                                      num_classes=2, seed=tut.seed)
x_train, y_train = images[:NUM_TRAIN], labels[:NUM_TRAIN]
x_test, y_test = images[NUM_TRAIN:], labels[NUM_TRAIN:]

image_in = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))
embedder = keras.Model(image_in, patch_embedding(image_in, PATCH_SIZE, HIDDEN_DIM))
tokens_library = keras.ops.convert_to_numpy(embedder(x_test[:2]))
grid = IMAGE_SIZE // PATCH_SIZE
# By hand: (B, grid, P, grid, P, 1) -> (B, grid, grid, P, P, 1) -> one flat vector per patch, row by row.
patches = x_test[:2].reshape(2, grid, PATCH_SIZE, grid, PATCH_SIZE, 1).transpose(0, 1, 3, 2, 4, 5)
patches = patches.reshape(2, grid * grid, PATCH_SIZE * PATCH_SIZE)
kernel, bias = (keras.ops.convert_to_numpy(w) for w in embedder.get_layer("patch_embedding_projection").weights)
tokens_by_hand = patches @ kernel.reshape(-1, HIDDEN_DIM) + bias
patch_embedding_error = float(np.max(np.abs(tokens_by_hand - tokens_library)))
print(f"{grid * grid} patches of {PATCH_SIZE}x{PATCH_SIZE} pixels -> tokens {tokens_library.shape[1:]}; "
      f"flatten + shared linear layer vs the library's convolution: {patch_embedding_error:.1e}")

fig = plt.figure(figsize=(12, 3.6))
ax = fig.add_subplot(1, 3, 1)
ax.imshow(x_test[0, ..., 0], cmap="gray")
for k in range(1, grid):
    ax.axhline(k * PATCH_SIZE - 0.5, color="y", lw=0.6)
    ax.axvline(k * PATCH_SIZE - 0.5, color="y", lw=0.6)
ax.set_title(f"{class_names[y_test[0]]}: {grid} x {grid} patches", fontsize=9)
ax.axis("off")
ax = fig.add_subplot(1, 3, 2)
ax.imshow(patches[0, :, :].T, cmap="gray", aspect="auto")
ax.set(xlabel="patch index (row by row)", ylabel="pixel in patch", title="Flattened patches (the sequence)")
ax = fig.add_subplot(1, 3, 3)
ax.imshow(tokens_library[0].T, cmap="coolwarm", aspect="auto")
ax.set(xlabel="patch index", ylabel="token feature", title=f"Tokens after the linear map ({HIDDEN_DIM} wide)")
tut.save_figure(fig, "patch_embedding.png")

# %% [markdown]
# ## 3. A small ViT on ultrasound images
# The zoo's ``vit``: patch embedding, class token, position embedding, ``DEPTH`` pre-norm encoder
# blocks (``x + attention(norm(x))``, then ``x + MLP(norm(x))``), and a classifier on the class token.
# Transformers have no built-in notion that nearby pixels belong together (CNNs do, through small
# kernels), so they need more data or more epochs to learn it; this small problem is within reach.

# %%
keras.utils.set_random_seed(tut.seed)
vit = models.get("vit", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), num_classes=len(class_names),
                 patch_size=PATCH_SIZE, hidden_dim=HIDDEN_DIM, depth=DEPTH, num_heads=NUM_HEADS,
                 mlp_dim=2 * HIDDEN_DIM)
vit.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=1e-4),
            loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = vit.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=2,
                  callbacks=[tut.tensorboard("vit")]).history
test_accuracy = float(vit.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])  # test set used once
print(f"ViT test accuracy {test_accuracy:.3f} (chance 0.5), {vit.count_params():,} parameters")

# %% [markdown]
# ## 4. Where does the class token look?
# ``models.attention.attention_scores_model`` turns the ViT into a model that returns every block's
# attention weights ``(B, heads, 1 + 64, 1 + 64)``. Two ways to make a map of them:
#
# - **CLS attention**: the last block's row for the class token (query 0) over the 64 patch keys,
#   averaged over heads: what the classifier's token gathers from, just before the head reads it.
# - **Attention rollout** (Abnar & Zuidema 2020): information also flows through the residual
#   connections and earlier blocks, so multiply the blocks' head-averaged maps, each with the identity
#   added for the skip (``0.5 A + 0.5 I``), and read the class token's row of the product.
#
# Both are rough guides to what the network used, not proofs; compare them with the cysts you see.

# %%
attention = attention_scores_model(vit)
shown = np.concatenate([np.flatnonzero(y_test == 1)[:3], np.flatnonzero(y_test == 0)[:1]])
scores = [keras.ops.convert_to_numpy(s) for s in attention(x_test[shown])]  # per block (B, H, 65, 65)
cls_map = scores[-1].mean(axis=1)[:, 0, 1:].reshape(-1, grid, grid)
rollout = np.tile(np.eye(grid * grid + 1), (len(shown), 1, 1))
for block_scores in scores:
    a = 0.5 * block_scores.mean(axis=1) + 0.5 * np.eye(grid * grid + 1)
    rollout = (a / a.sum(axis=-1, keepdims=True)) @ rollout
rollout_map = rollout[:, 0, 1:].reshape(-1, grid, grid)
probabilities = vit.predict(x_test[shown], verbose=0)

fig, axes = plt.subplots(3, len(shown), figsize=(2.6 * len(shown), 7.5))
extent = (-0.5, IMAGE_SIZE - 0.5, IMAGE_SIZE - 0.5, -0.5)
for col, i in enumerate(shown):
    axes[0, col].imshow(x_test[i, ..., 0], cmap="gray")
    axes[0, col].set_title(f"{class_names[y_test[i]]} (p={probabilities[col, y_test[i]]:.2f})", fontsize=8)
    for row, amap, title in ((1, cls_map, "CLS attention, last block"), (2, rollout_map, "attention rollout")):
        axes[row, col].imshow(x_test[i, ..., 0], cmap="gray")
        # One colour scale per row (0 to the row's largest weight), so the maps in a row compare.
        overlay = axes[row, col].imshow(amap[col], cmap="jet", alpha=0.45, extent=extent, interpolation="bilinear",
                                        vmin=0.0, vmax=float(amap.max()))
        axes[row, 0].set_ylabel(title, fontsize=8)
        if col == len(shown) - 1:
            fig.colorbar(overlay, ax=axes[row, :].tolist(), shrink=0.8, label="attention weight per patch")
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
tut.save_figure(fig, "vit_attention_maps.png")

# %% [markdown]
# ## What we learned
# - Self-attention is three matrix products and a softmax: each token takes a weighted average of the
#   others' values, with weights from query-key similarity. Keras' ``MultiHeadAttention`` is exactly that.
# - A ViT treats an image as a sequence of patch tokens; the patch embedding is a shared linear map,
#   the class token collects the evidence, position embeddings give back the layout.
# - A small ViT learns a simple ultrasound task; its attention maps show which patches fed its decision.
#
# ## Try next
# 1. Remove the ``/ sqrt(d)`` in the NumPy attention and multiply ``X`` by 10. What happens to the
#    attention weights (look at the rows)?
# 2. Train with ``pool="mean"`` (average of patch tokens instead of the class token). Accuracy? And what
#    do the rollout maps look like then?
# 3. Change ``PATCH_SIZE`` to 8 and to 2. How do the number of tokens, the cost and the accuracy change?
# 4. Train a CNN of the same parameter count (see ``tutorials/cnn_architectures.py``) on the same data
#    and compare accuracy after the same number of epochs. Which needs more data, and why?
# 5. Use all four classes (``num_classes=4``). Where does the class token look for a calcification?

# %%
tut.finish(
    {
        "attention_output_error": attention_output_error,
        "attention_weight_error": attention_weight_error,
        "patch_embedding_error": patch_embedding_error,
        "vit_test_accuracy": test_accuracy,
        "vit_first_epoch_loss": history["loss"][0],
        "vit_last_epoch_loss": history["loss"][-1],
    },
    # Measured --quick, seeds 0-2 x TF_ENABLE_ONEDNN_OPTS 1/0 (AMD EPYC AVX-512): errors 2e-7-6e-7,
    # 5e-8-1e-7 and 6e-8-9e-8 (float32 round-off); ViT test accuracy 0.88-0.90.
    expect={
        "attention_output_error": ("<=", 1e-4),
        "attention_weight_error": ("<=", 1e-5),
        "patch_embedding_error": ("<=", 1e-4),
        "vit_test_accuracy": (">=", 0.7),  # chance is 0.5
    },
)
