"""The CLI's sub-commands, one module per concept (models, kernels, code, chat)."""
