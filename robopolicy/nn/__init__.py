"""Neural-network building blocks: normalizer, visuomotor encoder, denoising backbones."""
