"""What the CLI tests share: run `lora-studio ARGS` in-process and read its one error line."""

from lora_studio.cli import main


def cli(argv, capsys):
    """(exit code, stdout, stderr) of `lora-studio *argv`."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error(err: str) -> str:
    """The single `error:` line a bad input must give (and no traceback)."""
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
