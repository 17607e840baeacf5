"""Entry point of the PyInstaller bundle: the GUI, or the CLI when given a command."""

import sys

from lora_studio.cli import main

if __name__ == "__main__":
    sys.exit(main())
