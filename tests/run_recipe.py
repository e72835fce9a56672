"""Run one recipe the way the tests run it: ``make run-en NAME=x`` / ``make run-zh NAME=x``.

The recipe runs in a fresh interpreter through conftest.py's RUNNER, as the
smoke tests run it: under the Agg backend, with the site's pinned Chinese font
(docs/_ext/chinese_font.py), and a glyph missing from the fonts as an error.
Its output is shown as it comes; the figures it leaves open are saved as PNG
files in its working folder, _build/run/<lang>/<name>/, where anything else it
writes lands too.

    python tests/run_recipe.py NAME LANG [--full]

Without --full the recipe runs in smoke mode (ZERO_GRAD_SMOKE=1: seconds, no
data). With --full it runs as the build runs it, on the data in CIFAR10_ROOT.
"""

import argparse
import os
import subprocess
import sys

from conftest import LANGUAGES, RECIPE_NAMES, RECIPES, REPO, RUNNER, smoke_env


def main(args):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the recipe's file name without .py")
    parser.add_argument("lang", choices=LANGUAGES)
    parser.add_argument("--full", action="store_true", help="not in smoke mode")
    options = parser.parse_args(args)
    if options.name not in RECIPE_NAMES:
        print(f"no recipe recipes/en/{options.name}.py; one of: {', '.join(RECIPE_NAMES)}", file=sys.stderr)
        return 2
    script = RECIPES / options.lang / f"{options.name}.py"
    workdir = REPO / "_build" / "run" / options.lang / options.name
    figure_dir = workdir / "figures"
    workdir.mkdir(parents=True, exist_ok=True)
    for old in figure_dir.glob("*.png"):
        old.unlink()
    if options.full:
        env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
        env.pop("ZERO_GRAD_SMOKE", None)
    else:
        env = smoke_env()
    mode = "in full" if options.full else "in smoke mode"
    print(f"Running {script.relative_to(REPO)} {mode} in {workdir.relative_to(REPO)}/", flush=True)
    result = subprocess.run([sys.executable, "-c", RUNNER, str(script), str(figure_dir), options.lang,
                             str(REPO / "docs" / "_ext")], cwd=workdir, env=env)
    figures = sorted(figure_dir.glob("*.png"))
    if figures:
        print(f"{len(figures)} figure(s) in {figure_dir.relative_to(REPO)}/")
    if result.returncode:
        print(f"{script.relative_to(REPO)} failed (exit code {result.returncode})", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
