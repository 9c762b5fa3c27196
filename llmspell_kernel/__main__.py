"""``python -m llmspell_kernel -f {connection_file}``: run the llmspell kernel."""

from llmspell_kernel.kernelapp import main

if __name__ == "__main__":
    main()
