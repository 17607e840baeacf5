"""The desktop workbench: PySide6 + pyqtgraph, a thin view over `lora_studio.engine`.

Nothing here computes: widgets edit a RunConfig (through `session.Session`), workers moved to
QThreads run engine functions, and signals bring the results back to the GUI thread.
Importing this package does not import torch; the first model inspection does, in a worker.
"""
