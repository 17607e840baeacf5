"""The first seconds of a real launch, in a fresh interpreter (torch not yet imported).

Clicking Start while the model probe is still importing torch in its thread used to break the
torch import in both threads (torch's first import is not thread-safe). Here the app starts on
the demo, Start is clicked the moment it is enabled, and the first training step must arrive.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    from PySide6.QtCore import QTimer
    from lora_studio.ui.app import create_app, create_window

    app = create_app([sys.argv[0]])
    w = create_window()
    w.show()
    assert "torch" not in sys.modules, "torch imported before the window showed"
    seen = {"clicked": False, "failed": None}
    c = w.controller
    c.finished.connect(lambda ev: (seen.update(failed=getattr(ev, "message", None)), app.quit()))

    def tick():
        if not seen["clicked"] and w.header.start.isEnabled():
            w.header.start.click()
            seen["clicked"] = True
        elif seen["clicked"] and c.last_step >= 1 and c.state == "running":
            c.stop()

    t = QTimer(); t.timeout.connect(tick); t.start(20)
    QTimer.singleShot(120_000, app.quit)
    app.exec()
    print("STEP", c.last_step, "FAILED", seen["failed"])
    sys.exit(0 if c.last_step >= 1 and not seen["failed"] else 1)
    """
)


def test_start_clicked_during_first_torch_import(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", HOME=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    p = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert "STEP" in p.stdout
