"""Model shapes, the composition rule, and bipartite attention's two phases."""

import torch

from gansformer_inpaint.models import BipartiteAttention, Discriminator, GANsformerBlock, Generator, compose
from gansformer_inpaint.models.generator import encoder_channels

torch.set_num_threads(1)


def tiny_generator(size=32):
    return Generator(img_size=size, base_channels=8, latent_num=4, latent_dim=32, num_heads=4, num_blocks=2)


def test_generator_shapes_and_known_pixels_exact():
    torch.manual_seed(0)
    gen = tiny_generator()
    masked = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = (torch.rand(2, 1, 32, 32) > 0.6).float()
    raw, composed = gen(masked, mask)
    assert raw.shape == composed.shape == (2, 3, 32, 32)
    keep = mask.expand_as(masked) == 0
    assert torch.equal(composed[keep], masked[keep])
    assert composed.min() >= -1 and composed.max() <= 1


def test_encoder_reaches_one_eighth_with_latent_dim_channels():
    assert encoder_channels(64, 512) == [64, 128, 256, 512]
    gen = tiny_generator(64)
    x = torch.zeros(1, 4, 64, 64)
    feats = gen.stem(x)
    for stage in gen.down:
        feats = stage(feats)
    assert feats.shape == (1, 32, 8, 8)


def test_generator_uses_the_mask_channel():
    torch.manual_seed(0)
    gen = tiny_generator()
    masked = torch.rand(1, 3, 32, 32) * 2 - 1
    m1 = torch.zeros(1, 1, 32, 32)
    m1[..., 8:16, 8:16] = 1
    m2 = torch.zeros(1, 1, 32, 32)
    m2[..., 16:24, 16:24] = 1
    assert not torch.allclose(gen(masked, m1)[0], gen(masked, m2)[0])


def test_discriminator_logits_shape_at_any_size():
    # No image size among its arguments: the first is the width (an unused img_size once took its place).
    disc = Discriminator(8, max_channels=32, latent_num=4, num_heads=4)
    assert disc.stem.conv.weight.shape[0] == 8
    for size in (32, 48):
        assert disc(torch.rand(3, 3, size, size), torch.zeros(3, 1, size, size)).shape == (3,)


def test_bipartite_attention_both_phases():
    torch.manual_seed(0)
    attn = BipartiteAttention(dim=16, num_heads=4)
    for module in (attn.aggregate, attn.broadcast):
        torch.nn.init.normal_(module.proj.weight)  # leave the zero-init identity start
    torch.nn.init.normal_(attn.latent_ff.fc2.weight)
    pixels = torch.randn(2, 16, 4, 4)
    latents = torch.randn(2, 3, 16)
    new_pixels, new_latents = attn(pixels, latents)
    assert new_pixels.shape == pixels.shape and new_latents.shape == latents.shape
    # Aggregation: latents depend on the pixels.
    _, other_latents = attn(pixels + torch.randn_like(pixels), latents)
    assert not torch.allclose(new_latents, other_latents)
    # Broadcast: every pixel depends on the (updated) latents, i.e. on far-away pixels through them.
    pixels2 = pixels.clone()
    pixels2[..., 0, 0] += 5.0
    changed, _ = attn(pixels2, latents)
    assert not torch.allclose(changed[..., 3, 3], new_pixels[..., 3, 3])


def test_blocks_start_as_identity():
    block = GANsformerBlock(dim=16, num_heads=4)
    pixels, latents = torch.randn(1, 16, 4, 4), torch.randn(1, 3, 16)
    out, _ = block(pixels, latents)
    assert torch.allclose(out, pixels)


def test_compose_rule():
    masked = torch.full((1, 3, 2, 2), 0.5)
    gen = torch.full((1, 3, 2, 2), -0.25)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    out = compose(masked, gen, mask)
    assert out[0, 0].tolist() == [[-0.25, 0.5], [0.5, -0.25]]
