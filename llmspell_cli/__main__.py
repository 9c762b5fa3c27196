"""``python -m llmspell_cli``: the same as the ``llmspell`` command."""

from .app import main

main()
