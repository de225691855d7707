"""taming / latent-diffusion checkpoints built from the peer's own modules, loaded by ``load_checkpoint``.

Each variant is assembled from taming-transformers' classes (``pip install --no-deps
taming-transformers-rom1504``): ``Encoder``/``Decoder`` from ``taming.modules.diffusionmodules.model`` and
``VectorQuantizer2`` / ``GumbelQuantize`` from ``taming.modules.vqvae.quantize``, under the attribute names of
taming's ``VQModel`` / ``GumbelVQ`` (whose module imports pytorch_lightning, so the Lightning classes are not
used). Random weights at tiny sizes; the checkpoint is saved as Lightning saves it (``{"state_dict": ...,
"epoch": ...}`` with ``loss.*`` tensors), loaded back with auto-detection, and compared with the peer's own
encode -> indices -> decode.

latent-diffusion's ``ldm`` package is not on PyPI. Its first-stage ``VQModel`` (``ldm/models/autoencoder.py``) is
taming's layout: it imports taming's ``VectorQuantizer2`` and builds ``ldm.modules.diffusionmodules.model``'s
Encoder/Decoder, taming's ``model.py`` plus ``attn_type``, where ``attn_type="none"`` (``vq-f4-noattn``) makes
every attention block ``nn.Identity``. So the LDM variants are built from taming's classes with LDM's config
values, and the no-attention reference replaces ``mid.attn_1`` by ``nn.Identity`` (the only attention that
config has, since its ``attn_resolutions`` is empty).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

model_py = pytest.importorskip("taming.modules.diffusionmodules.model")
quantize_py = pytest.importorskip("taming.modules.vqvae.quantize")

from tokenizer.models.formats import inspect_checkpoint, load_checkpoint
from tokenizer.quantizers import GumbelConfig, VQConfig


class PeerVQModel(nn.Module):
    """taming's ``VQModel`` / ``GumbelVQ`` without Lightning: the same submodules under the same names."""

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int, gumbel: bool = False, mid_attention=True):
        super().__init__()
        self.encoder = model_py.Encoder(**ddconfig)
        self.decoder = model_py.Decoder(**ddconfig)
        if not mid_attention:  # latent-diffusion's attn_type="none"
            self.encoder.mid.attn_1 = nn.Identity()
            self.decoder.mid.attn_1 = nn.Identity()
        z_channels = ddconfig["z_channels"]
        if gumbel:  # GumbelVQ: GumbelQuantize(z_channels, embed_dim, n_embed, kl_weight=1e-8)
            self.quantize = quantize_py.GumbelQuantize(z_channels, embed_dim, n_embed=n_embed, kl_weight=1e-8)
        else:  # VQModel: VectorQuantizer2(n_embed, embed_dim, beta=0.25), legacy loss by default
            self.quantize = quantize_py.VectorQuantizer2(n_embed, embed_dim, beta=0.25, sane_index_shape=True)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.gumbel = gumbel

    def encode_to_prequant(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def indices(self, h: torch.Tensor) -> torch.Tensor:
        """The peer's indices ``[B, h, w]``: VectorQuantizer2's forward; for Gumbel the argmax of its logits
        (GumbelQuantize.forward adds Gumbel noise even in eval mode)."""
        if self.gumbel:
            return self.quantize.proj(h).argmax(dim=1)
        return self.quantize(h)[2][2]

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        b, h, w = indices.shape
        codes = self.quantize.get_codebook_entry(indices.reshape(-1), (b, h, w, self.quant_conv.out_channels))
        return self.decoder(self.post_quant_conv(codes))


def _ddconfig(ch_mult, attn_resolutions, z_channels, num_res_blocks=1):
    return {
        "double_z": False,
        "z_channels": z_channels,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": list(ch_mult),
        "num_res_blocks": num_res_blocks,
        "attn_resolutions": list(attn_resolutions),
        "dropout": 0.0,
    }


# name -> (ddconfig, n_embed, embed_dim, gumbel, mid attention, image sizes (H, W))
VARIANTS = {
    "taming-f16": (_ddconfig((1, 1, 2, 2, 4), [16], 16), 64, 8, False, True, [(32, 32), (32, 48)]),
    "taming-gumbel-f8": (_ddconfig((1, 1, 2, 4), [32], 16), 128, 16, True, True, [(32, 32), (24, 40)]),
    "ldm-vq-f4": (_ddconfig((1, 2, 4), [], 3, 2), 8192, 3, False, True, [(32, 32), (20, 28)]),
    "ldm-vq-f4-noattn": (_ddconfig((1, 2, 4), [], 3, 2), 8192, 3, False, False, [(32, 32), (20, 28)]),
    "ldm-vq-f8-n256": (_ddconfig((1, 2, 2, 4), [32], 4, 2), 256, 4, False, True, [(32, 32), (24, 40)]),
}


def _randomize(model: nn.Module, seed: int) -> None:
    """Random weights with unit-scale activations (GroupNorm affine and biases non-trivial too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("embedding.weight", "embed.weight")):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(
                    (1.0 if "norm" in name and name.endswith("weight") else 0.0)
                    + 0.1 * torch.randn(p.shape, generator=g)
                )
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)


def _lightning_checkpoint(model: PeerVQModel, path, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    state = dict(model.state_dict())
    state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3, generator=g)
    state["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4, generator=g)
    state["loss.logvar"] = torch.zeros(())
    torch.save({"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.4.2", "state_dict": state}, path)


def _build(name: str, directory) -> tuple[PeerVQModel, object]:
    """The peer model of a variant with seeded random weights, and its Lightning checkpoint in ``directory``."""
    ddconfig, n_embed, embed_dim, gumbel, mid_attention, _ = VARIANTS[name]
    seed = sorted(VARIANTS).index(name)
    torch.manual_seed(seed)
    peer = PeerVQModel(ddconfig, n_embed, embed_dim, gumbel, mid_attention).eval()
    _randomize(peer, seed)
    path = directory / "last.ckpt"
    _lightning_checkpoint(peer, path, seed)
    return peer, path


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    peer, path = _build(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, peer, path, VARIANTS[request.param][-1]


def _check_indices(peer: PeerVQModel, h: torch.Tensor, ours: torch.Tensor, indices: torch.Tensor) -> None:
    """Our indices against the peer's (``peer.indices(h)``) on its latents ``h``: identical wherever the best
    code beats the runner-up by more than the difference between the latents (ours: ``ours``) can move the
    scores; where it does not (near-ties, likely with 8192 codes of dim 3), our code scores within that bound
    of the best on the peer's latents.
    Bounds: for squared distances ``|d(a + u) - d(a)| <= 2 |a| |u| + |u|^2``, for logits ``|W u|``."""
    rows, delta = (t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]).double() for t in (h, ours - h))
    if peer.gumbel:
        weight = peer.quantize.proj.weight.flatten(1).double()
        scores = rows @ weight.T + peer.quantize.proj.bias.double()
        bound = delta.norm(dim=1) * weight.norm(dim=1).max()
    else:
        scores = -torch.cdist(rows, peer.quantize.embedding.weight.double()).square()
        u = delta.norm(dim=1)
        bound = 2 * (-scores).max(dim=1).values.sqrt() * u + u.square()
    bound = 4 * bound + 1e-9
    top = scores.topk(2, dim=1)
    clear = top.values[:, 0] - top.values[:, 1] > bound
    assert clear.float().mean() > 0.9
    ours_flat, peers = indices.reshape(-1), peer.indices(h).reshape(-1)
    torch.testing.assert_close(ours_flat[clear], peers[clear], rtol=0, atol=0)
    chosen = scores.gather(1, ours_flat[:, None])[:, 0]
    assert (top.values[:, 0] - chosen <= bound).all()


def test_reproduces_the_peer(variant):
    name, peer, path, sizes = variant
    model = load_checkpoint(path)
    assert not model.training
    quantizer = GumbelConfig if peer.gumbel else VQConfig
    assert isinstance(model.config.quantizer, quantizer)
    assert model.config.mid_attention == (name != "ldm-vq-f4-noattn")
    for i, (height, width) in enumerate(sizes):
        x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(10 + i)) * 2 - 1
        with torch.no_grad():
            h = peer.encode_to_prequant(x)
            latents = model.encode_to_latents(x)
            indices = model.encode(x)
            decoded = model.decode(indices)
            reference = peer.decode_indices(indices)
        f = model.downsample_factor
        assert indices.shape == (2, height // f, width // f)
        torch.testing.assert_close(latents, h, rtol=1e-4, atol=1e-5 * float(h.abs().max()))
        _check_indices(peer, h, latents, indices)
        scale = reference.abs().max()
        assert scale > 0.1  # a signal worth comparing
        torch.testing.assert_close(decoded, reference, rtol=1e-4, atol=1e-5 * float(scale))


def test_inspect_names_the_variant(variant):
    name, _, path, _ = variant
    description = inspect_checkpoint(path).description
    expected = {
        "taming-f16": "taming-transformers / latent-diffusion VQModel (f16, 64 codes of dim 8)",
        "taming-gumbel-f8": "taming-transformers GumbelVQ (f8, 128 codes of dim 16)",
        "ldm-vq-f4": "latent-diffusion's vq-f4)",
        "ldm-vq-f4-noattn": "no middle attention; the shapes of latent-diffusion's vq-f4-noattn)",
        "ldm-vq-f8-n256": "latent-diffusion's vq-f8-n256)",
    }
    assert description.endswith(expected[name])


def test_legacy_vq_loss_matches_the_peer(tmp_path):
    """Training mode: taming's VectorQuantizer2(legacy=True) loss and its gradients to latents and codebook."""
    peer, path = _build("ldm-vq-f8-n256", tmp_path)
    ours = load_checkpoint(path).quantize.train()
    h = peer.encode_to_prequant(torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    h = h.detach()
    weights = torch.randn(h.shape, generator=torch.Generator().manual_seed(1))
    results = []
    for run in ("peer", "ours"):
        z = h.clone().requires_grad_(True)
        if run == "peer":
            (quantized, loss, _), codebook = peer.quantize.train()(z), peer.quantize.embedding.weight
        else:
            out, codebook = ours(z), ours.codebook
            quantized, loss = out.quantized, out.loss
        ((quantized * weights).sum() + loss).backward()
        results.append((quantized.detach(), loss.detach(), z.grad, codebook.grad))
    for ref, got in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_gumbel_training_matches_the_peer(tmp_path):
    """Training mode with the same random state: the peer's hard Gumbel-softmax noise, indices, output, KL loss
    and gradients."""
    peer, path = _build("taming-gumbel-f8", tmp_path)
    ours = load_checkpoint(path).quantize.train()
    h = peer.encode_to_prequant(torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(2)) * 2 - 1).detach()
    weights = torch.randn(h.shape, generator=torch.Generator().manual_seed(3))
    results = []
    for run in ("peer", "ours"):
        z = h.clone().requires_grad_(True)
        torch.manual_seed(7)
        if run == "peer":
            quantizer, codebook = peer.quantize.train(), peer.quantize.embed.weight
            quantized, loss, (_, _, indices) = quantizer(z)
        else:
            out = ours(z)
            quantized, loss, indices, codebook = out.quantized, out.loss, out.indices, ours.embed.weight
        codebook.grad = None
        ((quantized * weights).sum() + 1e6 * loss).backward()
        results.append((indices, quantized.detach(), loss.detach(), z.grad, codebook.grad))
    (ref_idx, *ref), (idx, *got) = results
    torch.testing.assert_close(idx, ref_idx, rtol=0, atol=0)
    for r, o in zip(ref, got, strict=True):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-6)
