"""Behavior-cloning training: `trainer.train(run_config)`, the built-in bimodal toy task (`toy`), and the
`train` CLI command (`cli`). Submodules are imported explicitly so that the CLI starts without torch."""
