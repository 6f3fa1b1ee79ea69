"""Build a Stable Diffusion pipeline folder locally, with random weights and no download.

    python examples/make_sd.py [--size sd15-half|tiny] [--out examples/models/sd15-half]

`sd15-half` has the architecture of Stable Diffusion 1.5 at reduced width and depth (UNet and
VAE channels halved, one layer per block, a 6-layer 384-wide CLIP text encoder); `tiny` is the
few-kilobyte pipeline the tests build. Both are saved with save_pretrained, so the folder is a
diffusers pipeline like any downloaded one (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/). The tokenizer is a CLIP byte-level BPE tokenizer with a small vocabulary
written here (every byte, alone and as a word end, plus a few merges), so any prompt encodes.
Prints the tensor information to pass to `accelflow optimize`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings

# Architecture per size: UNet, VAE and text-encoder settings.
SIZES = {
    "sd15-half": {
        "unet": {"block_out_channels": (160, 320, 640, 640), "layers_per_block": 1,
                 "attention_head_dim": 8, "sample_size": 32},
        "vae": {"block_out_channels": (64, 128, 256, 256), "layers_per_block": 1},
        "text": {"hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 6,
                 "num_hidden_layers": 6},
        "tensor_info": "image:float(1*3*256*256)",
    },
    "tiny": {
        "unet": {"block_out_channels": (32, 64), "layers_per_block": 1, "attention_head_dim": 4,
                 "sample_size": 16,
                 "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                 "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")},
        "vae": {"block_out_channels": (32, 64), "layers_per_block": 1},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                 "num_hidden_layers": 2},
        "tensor_info": "image:float(1*3*32*32)",
    },
}
PROMPT_LENGTH = 77  # CLIP's context length, as in every Stable Diffusion pipeline


def make_pipeline(out_dir: str, size: str = "sd15-half", seed: int = 0) -> str:
    """Save a randomly initialised StableDiffusionPipeline of `size` under out_dir; its path."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    arch = SIZES[size]
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as vocab_dir:  # the tokenizer saves its own copy
        tokenizer = make_tokenizer(vocab_dir)
    text = arch["text"]
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=PROMPT_LENGTH, projection_dim=text["hidden_size"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **text))
    blocks = len(arch["unet"]["block_out_channels"])
    unet = UNet2DConditionModel(**{
        "in_channels": 4, "out_channels": 4, "cross_attention_dim": text["hidden_size"],
        "down_block_types": ("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1),
        **arch["unet"]})
    vae_blocks = len(arch["vae"]["block_out_channels"])
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * vae_blocks,
                        up_block_types=("UpDecoderBlock2D",) * vae_blocks, **arch["vae"])
    # SD 1.5's scheduler settings (its model_index.json names PNDMScheduler).
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                   unet=unet.eval(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out_dir)
    return out_dir


def make_tokenizer(vocab_dir: str):
    """A CLIPTokenizer from a vocab.json / merges.txt written here: every byte-level character
    alone and as a word end (`a</w>`), a few merges, and CLIP's special tokens."""
    from transformers import CLIPTokenizer

    chars = byte_characters()
    merges = ["t h", "th e</w>", "a n", "an d</w>", "o f</w>", "i n"]
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    vocab_file, merges_file = os.path.join(vocab_dir, "vocab.json"), os.path.join(vocab_dir, "merges.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    with open(merges_file, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(vocab_file, merges_file, model_max_length=PROMPT_LENGTH, pad_token="<|endoftext|>")


def byte_characters() -> list[str]:
    """GPT-2 / CLIP byte-level BPE's printable stand-in for each of the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="sd15-half")
    parser.add_argument("--out", help="pipeline folder (default examples/models/<size>)")
    args = parser.parse_args()
    out = args.out or os.path.join(os.path.dirname(__file__), "models", args.size)
    warnings.filterwarnings("ignore")
    print(make_pipeline(out, args.size), "  tensor information:", SIZES[args.size]["tensor_info"])


if __name__ == "__main__":
    main()
