"""What a reader or a builder meets when something goes wrong, and that runs are reproducible.

* The flagship recipe, run for real (not in smoke mode) in a fresh interpreter,
  with no data and no network, with an incomplete image folder, or with an
  unreadable image: it must stop at once with a message that says what to do.
* ``make data`` with a cut-short archive: a clear error and nothing that looks
  like extracted data.
* A recipe that raises: the build fails and names it.
* A build killed halfway: running it again gives the same site.
* Determinism: both languages print the same, and so do two runs.
"""

import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import LANGUAGES, RECIPE_NAMES, RECIPES, REPO, run_script, smoke_env
from test_site import GALLERY, read_html, recipe_page, script_outputs, without_timings

pytestmark = pytest.mark.site  # needs the smoke-mode site (or builds one)

FLAGSHIP = "zeroing_out_gradients"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# A proxy on the discard port of this machine: every download is refused at once.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "no_proxy": "", "NO_PROXY": ""}


def real_env(**extra):
    """The environment of a real (not smoke-mode) run of a recipe."""
    env = smoke_env(**NO_NETWORK, **extra)
    del env["ZERO_GRAD_SMOKE"]
    return env


def run_flagship(tmp_path, **env):
    """Run a copy of the flagship recipe for real in an otherwise empty folder."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    script = workdir / f"{FLAGSHIP}.py"
    shutil.copy(RECIPES / "en" / f"{FLAGSHIP}.py", script)
    start = time.monotonic()
    run = run_script(script, workdir, "en", env=real_env(**env), timeout=300)
    return run, time.monotonic() - start


def last_error(run):
    """The last line of a traceback: the exception and its message."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def write_image(path, seed=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    colour = tuple((seed * 37 + k * 91) % 256 for k in range(3))
    Image.new("RGB", (32, 32), colour).save(path)


def image_folder(root, classes=CLASSES):
    """A tiny CIFAR-10 image folder: one 32x32 image per class and split."""
    for split in ("train", "test"):
        for index, name in enumerate(classes):
            write_image(root / split / name / f"{index}.png", index)
    return root


# -- The flagship recipe without its data -------------------------------------


def test_no_data_and_no_network_fails_fast_and_says_what_to_do(tmp_path):
    data = tmp_path / "empty-data"
    data.mkdir()
    run, seconds = run_flagship(tmp_path, CIFAR10_ROOT=str(data))
    assert run.returncode != 0, run.stdout
    error = last_error(run)
    assert error.startswith("RuntimeError"), run.stderr
    assert "internet" in error and "CIFAR10_ROOT" in error and "train/<class>" in error, error
    assert str(data) in error, f"the message should name where it looked: {error}"
    # Only the interpreter start and the imports, no waiting on the network.
    assert seconds < 120, f"took {seconds:.0f} s to give up"
    assert "Traceback" in run.stderr and run.stderr.count("Traceback") == 1, run.stderr
    # Nothing left that a second run could take for (part of) the data set.
    assert sorted(p.name for p in data.rglob("*")) == [], sorted(data.rglob("*"))
    assert not (tmp_path / "run" / "data").exists()


def test_missing_class_folder_is_named(tmp_path):
    root = image_folder(tmp_path / "cifar10")
    shutil.rmtree(root / "train" / "truck")
    run, _ = run_flagship(tmp_path, CIFAR10_ROOT=str(root))
    assert run.returncode != 0, run.stdout
    error = last_error(run)
    assert str(root / "train") in error, error
    expected, _, found = error.partition("found:")
    assert found, f"the message should list the class folders it found: {error}"
    assert all(name in expected for name in CLASSES), f"the message should list the ten classes: {error}"
    assert "truck" not in found and "ship" in found, error


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_image_is_named(tmp_path, damage):
    root = image_folder(tmp_path / "cifar10")
    bad = root / "train" / "cat" / "bad.jpg"
    if damage == "garbage":
        bad.write_bytes(b"this is not an image\n" * 20)
    elif damage == "truncated":
        from PIL import Image

        Image.new("RGB", (32, 32), (200, 10, 10)).save(bad, quality=95)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    else:
        bad.write_bytes(b"")
    run, _ = run_flagship(tmp_path, CIFAR10_ROOT=str(root))
    assert run.returncode != 0, run.stdout
    error = last_error(run)
    assert error.startswith("RuntimeError") and str(bad) in error, error


# -- make data with a damaged archive -----------------------------------------


def make_archive(path, root):
    with tarfile.open(path, "w:gz") as archive:
        for split in ("train", "test"):
            archive.add(root / split, arcname=split)
    return path


def make_data(tmp_path, archive):
    """``make data`` for ``archive``, extracting under tmp_path, never into _build/data."""
    data_dir = tmp_path / "extracted" / "cifar10"
    result = subprocess.run(
        ["make", "--no-print-directory", "data", f"CIFAR10={archive}", f"DATA_DIR={data_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    return result, data_dir


def looks_extracted(data_dir):
    """Anything a later build could take for extracted data."""
    return [p for p in data_dir.parent.rglob("*") if p.name == ".complete" or p == data_dir]


def test_make_data_extracts_a_good_archive(tmp_path):
    """The control for the two tests below: the same steps with an intact archive work."""
    archive = make_archive(tmp_path / "cifar10-images.tar.gz", image_folder(tmp_path / "images"))
    result, data_dir = make_data(tmp_path, archive)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (data_dir / ".complete").is_file()
    assert sorted(p.name for p in (data_dir / "train").iterdir()) == list(CLASSES)


def test_make_data_rejects_a_cut_short_archive(tmp_path):
    images = image_folder(tmp_path / "images")
    for index in range(200):  # enough bytes that half the archive stops mid-stream
        write_image(images / "train" / "cat" / f"extra{index}.png", index)
    whole = make_archive(tmp_path / "whole.tar.gz", images)
    archive = tmp_path / "cifar10-images.tar.gz"
    archive.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result, data_dir = make_data(tmp_path, archive)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "could not extract" in result.stderr and str(archive) in result.stderr, result.stderr
    assert not looks_extracted(data_dir), looks_extracted(data_dir)
    assert not data_dir.with_name("cifar10.partial").exists(), "a half-extracted folder was left behind"


def test_make_data_rejects_an_archive_that_fails_its_checksum(tmp_path):
    archive = make_archive(tmp_path / "cifar10-images.tar.gz", image_folder(tmp_path / "images"))
    Path(f"{archive}.sha256").write_text("0" * 64 + "  cifar10-images.tar.gz\n")
    result, data_dir = make_data(tmp_path, archive)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "does not match its checksum" in result.stderr, result.stderr
    assert not looks_extracted(data_dir), looks_extracted(data_dir)


# -- Builds that fail or are interrupted ----------------------------------------

RAISING_RECIPE = '''"""
.. _raises_on_purpose:

A recipe that raises
====================

Used by the test suite only.
"""

# %%
print("about to fail")
raise ValueError("this recipe fails on purpose")
'''


def project_copy(tmp_path):
    """The files a build needs, copied so that the test can add a recipe of its own."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("conf.py", "Makefile", "requirements.txt"):
        shutil.copy2(REPO / name, copy / name)
    for name in ("docs", "recipes"):
        shutil.copytree(REPO / name, copy / name)
    return copy


def make_site(project, builddir, *targets, timeout=900, **variables):
    """Run the project's Makefile with the repository's venv, never reinstalling it."""
    command = ["make", "--no-print-directory", "-o", "venv", f"VENV={REPO / '.venv'}",
               f"BUILDDIR={builddir}", "CIFAR10=", *targets, *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(command, cwd=project, env=smoke_env(), capture_output=True, text=True, timeout=timeout)


def test_a_recipe_that_raises_fails_the_build_and_is_named(tmp_path):
    project = project_copy(tmp_path)
    for lang in LANGUAGES:
        (project / "recipes" / lang / "raises_on_purpose.py").write_text(RAISING_RECIPE)
    result = make_site(project, tmp_path / "_build", "html-en", RECIPE="raises_on_purpose")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "raises_on_purpose.py" in output, output
    assert "this recipe fails on purpose" in output, output


EXTRA_RECIPE = '''"""
.. _renamed_later:

A recipe that is renamed later
==============================

Used by the test suite only.
"""

# %%
print("hello")
'''


def test_a_removed_recipe_leaves_no_page_behind(tmp_path):
    """Renaming or removing a recipe must not break the next build, or leave its page online.

    Sphinx-Gallery writes each recipe's generated source into $(BUILDDIR)/src,
    which outlives the recipe.
    """
    project = project_copy(tmp_path)
    extra = project / "recipes" / "en" / "renamed_later.py"
    extra.write_text(EXTRA_RECIPE)
    builddir = tmp_path / "_build"
    first = make_site(project, builddir, "html-en", RECIPE="renamed_later")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (builddir / "html" / "en" / "renamed_later.html").is_file()

    extra.unlink()
    second = make_site(project, builddir, "html-en", RECIPE="renamed_later")
    assert second.returncode == 0, second.stdout + second.stderr
    leftovers = sorted(str(p.relative_to(builddir)) for p in (builddir / "html").rglob("renamed_later*"))
    assert not leftovers, f"the removed recipe is still on the site: {leftovers}"


def printed_outputs(tree):
    """{page: [printed output blocks, timings masked]} for every page of a language tree."""
    return {str(page): [without_timings(block) for block in script_outputs(read_html(tree / page))]
            for page in sorted(p.relative_to(tree) for p in tree.rglob("*.html"))}


def site_files(tree):
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())


def build_english(builddir, **popen):
    """The smoke build of the English tree into ``builddir``, as the smoke site is built."""
    command = ["make", "--no-print-directory", "html-en", f"BUILDDIR={builddir}", "CIFAR10="]
    return subprocess.Popen(command, cwd=REPO, env=smoke_env(), start_new_session=True, text=True, **popen)


def assert_same_site(rebuilt, reference):
    assert site_files(rebuilt) == site_files(reference)
    assert printed_outputs(rebuilt) == printed_outputs(reference)


def complete_build(builddir):
    build = build_english(builddir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = build.communicate(timeout=900)
    assert build.returncode == 0, output
    return builddir / "html" / "en"


def test_a_build_killed_while_a_recipe_runs_completes_when_run_again(smoke_site, tmp_path):
    builddir = tmp_path / "_build"
    gallery = builddir / "src" / "en" / GALLERY

    def started():  # Sphinx-Gallery copies each recipe next to its outputs before running it
        return [name for name in RECIPE_NAMES if (gallery / f"{name}.py").exists()]

    build = build_english(builddir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while build.poll() is None and time.monotonic() < deadline and len(started()) < 2:
            time.sleep(0.01)
        assert build.poll() is None, "the build finished before it could be interrupted"
        os.killpg(build.pid, signal.SIGKILL)  # the second recipe has just started
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    assert len(started()) < len(RECIPE_NAMES), "the build was not interrupted halfway"

    assert_same_site(complete_build(builddir), smoke_site / "en")


def test_a_build_killed_just_after_a_recipe_ran_completes_when_run_again(smoke_site, tmp_path):
    """Sphinx-Gallery marks a recipe as run (NAME.py.md5) before it writes the recipe's
    page, notebook and zip. A build killed in between leaves the mark without the
    notebook and zip; reproduced here by deleting those two after a complete build.
    """
    builddir = tmp_path / "_build"
    complete_build(builddir)
    name = RECIPE_NAMES[0]
    gallery = builddir / "src" / "en" / GALLERY
    assert (gallery / f"{name}.py.md5").is_file()
    for suffix in (".ipynb", ".zip"):
        (gallery / f"{name}{suffix}").unlink()

    assert_same_site(complete_build(builddir), smoke_site / "en")


# -- Determinism ----------------------------------------------------------------


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_both_languages_print_the_same(smoke_site, name):
    english, chinese = (
        [without_timings(block) for block in script_outputs(read_html(recipe_page(smoke_site, lang, name)))]
        for lang in LANGUAGES
    )
    assert english, f"{name} shows no output"
    assert english == chinese


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_two_runs_print_the_same(smoke_site, recipe_run, name):
    """The smoke site's run of a recipe and a separate smoke run of it print the same."""
    page = [without_timings(block) for block in script_outputs(read_html(recipe_page(smoke_site, "en", name)))]
    separate_run = without_timings(recipe_run(name, "en").stdout)
    assert page, f"{name} shows no output"
    assert without_timings("\n".join(page)).split() == separate_run.split()
