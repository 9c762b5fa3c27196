"""llmspell's command line: a thin typer app over the llmspell kernel's client.

Importing this package is cheap; the kernel, llama.cpp and the Hub client are imported only by
the commands that need them.
"""
