"""What a reader takes away: each recipe's .py and .ipynb download, run outside the site.

Each downloaded script runs alone in an empty folder, in a fresh interpreter;
each notebook runs top to bottom in a fresh Jupyter kernel. Both in smoke mode,
and both must print what the recipe's page shows (wall-clock times aside).
One test per recipe and language, so xdist can spread them.
"""

import gc
import json
import shutil
import sys
import warnings

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from conftest import LANGUAGES, RECIPE_NAMES, run_script, smoke_env
from test_site import find_download, read_html, recipe_page, script_outputs, without_timings

pytestmark = pytest.mark.site  # needs the smoke-mode site (or builds one)


KERNEL_NAME = "zero-grad-recipes-smoke"


def printed_lines(text):
    """Non-blank lines of printed output, wall-clock times masked."""
    return [line for line in without_timings(text).splitlines() if line.strip()]


def page_output(site, lang, name):
    return printed_lines("\n".join(script_outputs(read_html(recipe_page(site, lang, name)))))


def page_figures(site, lang, name):
    article = read_html(recipe_page(site, lang, name)).select_one("article")
    return [img["src"] for img in article.find_all("img") if f"sphx_glr_{name}_0" in img["src"]]


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_downloaded_script_runs_alone(smoke_site, tmp_path, lang, name):
    script = tmp_path / f"{name}.py"
    shutil.copy(find_download(smoke_site, lang, f"{name}.py"), script)
    run = run_script(script, tmp_path, lang).check()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert set(left) <= {script.name, "figures"}, f"the smoke run left {left} behind (a download?)"
    assert printed_lines(run.stdout) == page_output(smoke_site, lang, name), \
        "the downloaded script does not print what its page shows"
    assert len(run.figures) == len(page_figures(smoke_site, lang, name))
    if lang == "zh":
        assert "missing from font" not in run.stderr, run.stderr


@pytest.fixture(scope="session")
def kernel_specs(tmp_path_factory):
    """A kernel spec for this very interpreter, so no ``ipython kernel install`` is needed."""
    folder = tmp_path_factory.mktemp("kernels")
    spec = folder / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (zero-grad recipes tests)",
        "language": "python",
    }))
    return KernelSpecManager(kernel_dirs=[str(folder)], ensure_native_kernel=False)


def execute(notebook, workdir, kernel_specs):
    """Run ``notebook`` in place, top to bottom, in a fresh kernel working in ``workdir``."""
    manager = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(notebook, km=manager, timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    try:
        # The kernel sees what a reader's would, plus smoke mode; debugpy's
        # frozen-modules warning would only be noise on stderr.
        client.execute(env=smoke_env(PYDEVD_DISABLE_FILE_VALIDATION="1"))
    finally:
        # nbclient leaves its ZeroMQ sockets to the garbage collector, whose
        # ResourceWarning (an error under pytest.ini) would otherwise surface in
        # whichever test happens to run next.
        del client, manager
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def notebook_streams(notebook, stream):
    return "".join(output.text for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.outputs if output.output_type == "stream" and output.name == stream)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_downloaded_notebook_runs_top_to_bottom(smoke_site, kernel_specs, tmp_path, lang, name):
    notebook = nbformat.read(find_download(smoke_site, lang, f"{name}.ipynb"), as_version=4)
    execute(notebook, tmp_path, kernel_specs)
    nbformat.validate(notebook)

    assert not list(tmp_path.iterdir()), f"the smoke run left {sorted(tmp_path.iterdir())} behind"
    assert printed_lines(notebook_streams(notebook, "stdout")) == page_output(smoke_site, lang, name), \
        "the notebook does not print what its page shows"
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if "image/png" in output.get("data", {})]
    assert len(images) == len(page_figures(smoke_site, lang, name)), "the notebook shows other figures than the page"
    stderr = notebook_streams(notebook, "stderr")
    assert "missing from font" not in stderr, stderr
