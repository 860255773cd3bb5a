"""Writes notebooks/quickstart.ipynb from the cells below (edit here, then run from the repo root:
``python notebooks/make_quickstart.py``), so the notebook's source stays reviewable as code."""
import nbformat as nbf
nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md("""# ssl_jax quickstart

Pretrain an image encoder without labels (SimCLR on the built-in MNIST-5k set), evaluate it
(kNN and linear probe beside a random encoder), look at its embeddings and export it for
downstream use in JAX or PyTorch.

**Colab:** open `https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/quickstart.ipynb`
(your fork's OWNER/REPO), pick *Runtime → Change runtime type* (CPU, GPU or TPU) and run the
cells. The first cell clones the repository (set `REPO_URL`) and installs it *without* replacing
Colab's own JAX (so its GPU/TPU build stays), plus matplotlib for the plots. On a laptop, run
`pip install -r requirements.txt -e .` once and start Jupyter in the repository root.

CI executes this notebook on CPU with `SSL_JAX_NOTEBOOK_SMOKE=1` (a tiny model, a few steps), so
it never rots."""),
code("""import os, sys
REPO_URL = 'https://github.com/OWNER/ssl_jax'   # your fork / the project's repository
if 'google.colab' in sys.modules and not os.path.exists('/content/ssl_jax_installed'):
    if not os.path.exists('configs'):
        !git clone -q {REPO_URL} /content/ssl_jax
        %cd /content/ssl_jax
    # Colab's JAX (CUDA or TPU build) stays: every pinned requirement except jax / jaxlib.
    reqs = ' '.join(l.strip() for l in open('requirements.txt')
                    if l.strip() and not l.startswith(('#', 'jax==', 'jaxlib==')))
    %pip install -q {reqs}
    %pip install -q --no-deps -e .
    open('/content/ssl_jax_installed', 'w').close()

import jax
SMOKE = os.environ.get('SSL_JAX_NOTEBOOK_SMOKE') == '1'   # CI: tiny model, few steps
print('JAX', jax.__version__, 'devices:', jax.devices())"""),
md("""## Configure

Configs are `ml_collections.ConfigDict`s; `configs/simclr.py:builtin` is the README quickstart
(ResNet-18, width 16, CIFAR stem, 24x24 crops, 300 steps: ~5 minutes on a 2-core CPU, well under
one on a Colab GPU). Every field can be changed here, as `--config.x.y=...` does on the command line."""),
code("""import tempfile
from configs import simclr

config = simclr.get_config('builtin')
config.train.progress_bar = not SMOKE   # the tqdm bar in Colab / Jupyter; off in CI
config.eval.plot = 'tsne'
if SMOKE:
    config.train.steps = 12
    config.train.log_every = 4
    config.data.image_size = 16
    config.data.batch_size = 64
    config.model.width = 4
    config.model.stage_sizes = (1, 1, 1, 1)
    config.method.proj_hidden_dim, config.method.proj_dim = 32, 16
    config.optim.warmup_steps = 2
    config.eval.linear_epochs = 2
# Any local folder or bucket URL (gs://BUCKET/run: `pip install gcsfs`, see the README).
workdir = os.environ.get('SSL_JAX_WORKDIR') or tempfile.mkdtemp(prefix='ssl_jax_notebook_')
print(config.method.name, config.model.backbone, config.train.steps, 'steps ->', workdir)"""),
md("## Pretrain (then kNN of the trained and of a random encoder)"),
code("""from ssl_jax.train import loop

summary = loop.train_and_evaluate(config, workdir)
print(f"final loss {summary['final_loss']:.3f}, {summary['images_per_sec']:.0f} images/s")
print(f"kNN top-1: pretrained {summary['knn_top1']:.3f}  random init {summary['knn_top1_random_init']:.3f}")"""),
md("## Loss curve"),
code("""import matplotlib.pyplot as plt
from ssl_jax import paths

history = [h for h in paths.read_json(paths.as_path(workdir) / 'history.json') if 'loss' in h]
plt.figure(figsize=(5, 3))
plt.plot([h['step'] for h in history], [h['loss'] for h in history])
plt.xlabel('step'); plt.ylabel('NT-Xent loss'); plt.tight_layout(); plt.show()"""),
md("## Evaluate: kNN at several k, linear probe, t-SNE of the embeddings"),
code("""from IPython.display import Image, display
from ssl_jax.eval import run as eval_run

result = eval_run.evaluate(config, workdir)
print({k: v for k, v in result.items() if isinstance(v, (int, float))})
if result.get('plot'):
    display(Image(data=paths.as_path(result['plot']).read_bytes(), width=400))"""),
md("""## Export the encoder and use it without ssl_jax's training code

`load_encoder` returns a plain flax module and its variables; `DIR/export/timm/` holds timm-layout
safetensors when the backbone has a timm twin (ViTs, width-64 ResNets)."""),
code("""import numpy as np
import ssl_jax.export
from ssl_jax.export import run as export_run
from ssl_jax.data import pipeline, sources

exported = export_run.export(config, workdir)
module, variables = ssl_jax.export.load_encoder(exported['encoder'])
test = sources.get_source(config.data, config.data.eval_split)
images = np.stack([pipeline.center_view(test[i]['image'], config.data.image_size) for i in range(8)])
x = ssl_jax.export.encoder.preprocess(exported['encoder'], images)
features = module.apply(variables, x, train=False)
print('features', features.shape, 'labels', [int(test[i]['label']) for i in range(8)])"""),
]
nb['cells'] = cells
nb['metadata'] = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
                  'language_info': {'name': 'python'}, 'accelerator': 'GPU'}
nbf.write(nb, 'notebooks/quickstart.ipynb')
