"""LoRA Studio's blind first-GPU check: one command, every check in its own process with its own
timeout, one line per check (OK / FAIL with the reason / SKIP with why) under a results folder.

On a machine with a network (once, before the GPU run), gather what the GPU image lacks:
    python benchmarks/gpu_check.py --prepare benchmarks/gpu_carry      # wheels + a trimmed bitsandbytes
On the GPU machine (no network; the project tree and benchmarks/gpu_carry carried to it):
    python benchmarks/gpu_check.py RESULTS --wheels benchmarks/gpu_carry [--budget 540] [--only a,b]
Anywhere:
    python benchmarks/gpu_check.py --dry-run             # what would run, with each timeout
    python benchmarks/gpu_check.py RESULTS --cpu         # the script's self-test: its CPU-meaningful checks

RESULTS/gpu_check.txt gets each line as its check ends (so a killed run keeps what it did),
RESULTS/gpu_check.md the table with the machine and versions, RESULTS/gpu_check.log the children's
output. Models are built from configs with random weights and a word-level tokenizer: nothing is
downloaded. The checks are in gpu_check_cases.py and gpu_check_perf.py; docs/benchmarks.md says
what is carried and what has run where.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

# packages the GPU image lacks (docs: KINDS.md's list) that lora_studio's engine imports
WHEELS = ["datasets", "dill", "multiprocess", "tomli-w", "tensorboardX"]
BNB = "bitsandbytes==0.50.2"
BNB_KEEP = ("libbitsandbytes_cuda130.so", "libbitsandbytes_cpu.so")  # the image's CUDA 13.0; the CPU fallback
RESULT = "@@RESULT "


# what matters most runs first: a run cut by its time budget loses the least
FIRST = ["auto_device_end_to_end", "ddp_fsdp_one_gpu", "fsdp_bnb_optimizer", "tryit_finished_run",
         "load_straight_to_gpu", "step_vs_peft_1b", "mfu_1b", "nf4_weight_memory", "planner_vs_peak",
         "qlora_train_resume", "syncs_per_step", "dist_syncs_per_step", "auto_device_under_torchrun",
         "fsdp_load_sharded", "oom_caught"]


def registry():
    import gpu_check_cases  # noqa: F401 - registers
    import gpu_check_perf  # noqa: F401 - registers
    from gpu_check_lib import CHECKS

    rank = {n: i for i, n in enumerate(FIRST)}
    return sorted(CHECKS, key=lambda c: rank.get(c.name, len(FIRST)))


# -- preparing the carry (on a machine with a network) ---------------------------------------------
def prepare(folder: Path, python: str = "3.12") -> int:
    """Wheels for the GPU image's Python, and bitsandbytes unpacked with only the CUDA 13.0 library."""
    wheels, site = folder / "wheels", folder / "site"
    shutil.rmtree(folder, ignore_errors=True)
    wheels.mkdir(parents=True)
    site.mkdir()
    common = ["--only-binary=:all:", "--no-deps", "--python-version", python, "--platform", "manylinux2014_x86_64",
              "--platform", "manylinux_2_24_x86_64", "--platform", "any"]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), *common, *WHEELS], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", tmp, *common, BNB], check=True)
        whl = next(Path(tmp).glob("bitsandbytes-*.whl"))
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                if name.endswith(".so") and Path(name).name not in BNB_KEEP:
                    continue
                z.extract(name, site)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{folder}: {size / 2**20:.1f} MiB ({len(list(wheels.glob('*.whl')))} wheels + trimmed bitsandbytes)")
    return 0


def install(carry: Path, results: Path) -> Path:
    """pip-install the carried wheels (no index) into results/site, with the trimmed bitsandbytes beside them."""
    site = results / "site"
    site.mkdir(parents=True, exist_ok=True)
    whls = sorted(str(w) for w in (carry / "wheels").glob("*.whl"))
    if whls:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                        str(site), *whls], check=True)
    if (carry / "site").is_dir():
        shutil.copytree(carry / "site", site, dirs_exist_ok=True)
    return site


# -- one check in a child process -----------------------------------------------------------------
def child(name: str, root: Path, cpu: bool) -> int:
    import warnings

    import gpu_check_lib as L

    warnings.filterwarnings("ignore")
    L.CTX.root, L.CTX.cuda, L.CTX.dev = root, not cpu, "cpu" if cpu else "cuda"
    fn = next(c.fn for c in registry() if c.name == name)
    try:
        status, detail = fn()
    except Exception as e:  # noqa: BLE001 - a check that crashes fails, with the reason
        import traceback

        traceback.print_exc()
        status, detail = "FAIL", f"{type(e).__name__}: {L.first_line(e, 240)}"
    print(RESULT + json.dumps({"status": status, "detail": detail}), flush=True)
    return 0


def run_child(name: str, root: Path, cpu: bool, timeout: float, env: dict, log) -> tuple[str, str]:
    cmd = [sys.executable, str(HERE / "gpu_check.py"), "--child", name, "--root", str(root)] + (["--cpu"] if cpu else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the check's whole process group (torchrun's ranks too)
            try:
                os.killpg(p.pid, sig)
                out, _ = p.communicate(timeout=10)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                out = ""
        log.write(f"===== {name} (timed out)\n{out}\n")
        return "FAIL", f"timed out after {timeout:.0f} s"
    log.write(f"===== {name} (exit {p.returncode})\n{out}\n")
    log.flush()
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT):
            r = json.loads(line[len(RESULT):])
            return r["status"], r["detail"]
    tail = [x for x in out.strip().splitlines() if x.strip()][-1:] or ["no output"]
    return "FAIL", f"the check's process ended with exit {p.returncode} before a result: {tail[0][:200]}"


def environment(env: dict) -> str:
    code = ("import torch,platform,importlib.metadata as m\n"
            "def ver(d):\n try: return m.version(d)\n except Exception: return '-'\n"
            "c=torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA GPU'\n"
            "print(f'{c}; python {platform.python_version()}; torch {torch.__version__} (CUDA {torch.version.cuda}); '"
            "+', '.join(f'{d} {ver(d)}' for d in ('transformers','accelerate','peft','datasets','bitsandbytes',"
            "'tensorboardX','tomli_w')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    return p.stdout.strip() or f"(versions unreadable: {p.stderr.strip()[-200:]})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", help="folder for gpu_check.txt / .md / .log (created)")
    ap.add_argument("--wheels", help="the folder --prepare made: installed (no network) before the checks")
    ap.add_argument("--only", help="comma-separated check names")
    ap.add_argument("--budget", type=float, default=540, help="seconds for all checks (default 540)")
    ap.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
    ap.add_argument("--cpu", action="store_true", help="self-test without a GPU: the checks that mean something there")
    ap.add_argument("--prepare", metavar="DIR", help="download the wheels and bitsandbytes to carry (needs a network)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child, Path(a.root), a.cpu)
    if a.prepare:
        return prepare(Path(a.prepare))
    checks = registry()
    want = set(a.only.split(",")) if a.only else None
    unknown = (want or set()) - {c.name for c in checks}
    if unknown:
        ap.error(f"unknown checks: {', '.join(sorted(unknown))}")
    checks = [c for c in checks if not want or c.name in want]
    if a.dry_run:
        for c in checks:
            print(f"would run {c.name} ({c.item}, timeout {c.timeout} s{', also with --cpu' if c.cpu else ''}): {c.what}")
        print(f"{len(checks)} checks; worst case {sum(c.timeout for c in checks)} s, cut at --budget {a.budget:.0f} s")
        return 0
    if not a.results:
        ap.error("give a results folder (or --dry-run)")
    results = Path(a.results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    root = results / "work"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        p for p in [str(HERE.parent), os.environ.get("PYTHONPATH", "")] if p))
    txt, log = results / "gpu_check.txt", open(results / "gpu_check.log", "a")
    txt.write_text("")
    t_all, rows = time.monotonic(), []

    def record(name, item, status, detail):
        line = f"{status:<4} {name} ({item}): {detail}"
        rows.append((name, item, status, detail))
        with open(txt, "a") as f:
            f.write(line + "\n")
        print(line, flush=True)

    if a.wheels:
        try:
            site = install(Path(a.wheels).resolve(), results)
            env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
            record("install", "setup", "OK", f"carried packages installed into {site}")
        except Exception as e:  # noqa: BLE001
            record("install", "setup", "FAIL", f"{type(e).__name__}: {str(e)[:200]}")
    header = environment(env)
    print(header, flush=True)
    for c in checks:
        left = a.budget - (time.monotonic() - t_all)
        if a.cpu and not c.cpu:
            record(c.name, c.item, "SKIP", "needs a GPU")
        elif left < 20:
            record(c.name, c.item, "SKIP", f"not started: the {a.budget:.0f} s budget was spent")
        else:
            t0 = time.monotonic()
            status, detail = run_child(c.name, root, a.cpu, min(c.timeout, left), env, log)
            record(c.name, c.item, status, f"{detail} ({time.monotonic() - t0:.0f} s)")
    log.close()
    table = ["| check | finding / item | result | detail |", "|---|---|---|---|"] + \
        [f"| {n} | {i} | {s} | {d.replace('|', '/')} |" for n, i, s, d in rows]
    (results / "gpu_check.md").write_text(
        f"# gpu_check results\n\n`python benchmarks/gpu_check.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" on {header}, {time.strftime('%Y-%m-%d %H:%M')}, {time.monotonic() - t_all:.0f} s in all.\n\n"
        + "\n".join(table) + "\n")
    fails = sum(1 for r in rows if r[2] == "FAIL")
    print(f"{len(rows)} lines, {fails} FAIL: {txt}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
