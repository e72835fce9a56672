"""The steps of README's "Writing a recipe" that a test can enforce.

Every recipe has its own smoke test, ``tests/test_NAME.py``, and a place in
conf.py's ``RECIPE_ORDER`` (a recipe missing from it would silently go last in
the gallery). conf.py is read with ``ast``, never run. The checks take the
repository folder as an argument, so they are also shown failing on generated
copies.
"""

import ast
from pathlib import Path

import pytest

from conftest import REPO


def recipe_order(repo):
    """(RECIPE_ORDER as a list, its line in conf.py), read without running conf.py."""
    conf = Path(repo) / "conf.py"
    for node in ast.walk(ast.parse(conf.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "RECIPE_ORDER" for t in targets):
            return list(ast.literal_eval(node.value)), node.lineno
    raise AssertionError(f"{conf} has no RECIPE_ORDER = [...] list of the recipes' file names")


def layout_problems(repo):
    """What the README's steps left undone, one message per missing piece, naming the file."""
    repo = Path(repo)
    names = sorted(p.stem for p in (repo / "recipes" / "en").glob("*.py"))
    order, line = recipe_order(repo)
    problems = []
    for name in names:
        test = Path("tests") / f"test_{name}.py"
        if not (repo / test).is_file():
            problems.append(
                f"recipes/en/{name}.py has no smoke test: add {test}, which runs the recipe in both languages "
                f"with the recipe_run fixture (recipe_run(\"{name}\", lang) for lang in LANGUAGES) and asserts "
                f"what it demonstrates; tests/test_gradients_accumulate.py is a short example")
        if f"{name}.py" not in order:
            problems.append(
                f"recipes/en/{name}.py is not in RECIPE_ORDER (conf.py:{line}): add \"{name}.py\" where a "
                f"reader should meet it in the gallery (without it the page silently goes last)")
    for entry in order:
        if Path(entry).stem not in names:
            problems.append(f"RECIPE_ORDER (conf.py:{line}) lists \"{entry}\", but there is no recipes/en/{entry}: "
                            f"remove it, or correct the file name")
    if len(set(order)) != len(order):
        problems.append(f"RECIPE_ORDER (conf.py:{line}) lists a recipe twice: {order}")
    return problems


def test_every_recipe_has_a_smoke_test_and_a_place_in_the_order():
    problems = layout_problems(REPO)
    assert not problems, "\n".join(problems)


# -- The messages above, shown on a generated repository ----------------------

def small_repository(folder, names=("first", "second"), order=("first.py", "second.py"), tests=("first", "second")):
    for name in names:
        for lang in ("en", "zh"):
            (folder / "recipes" / lang).mkdir(parents=True, exist_ok=True)
            (folder / "recipes" / lang / f"{name}.py").write_text('"""A recipe."""\n', encoding="utf-8")
    (folder / "tests").mkdir(exist_ok=True)
    for name in tests:
        (folder / "tests" / f"test_{name}.py").write_text("", encoding="utf-8")
    (folder / "conf.py").write_text(f"import os\n\nRECIPE_ORDER = [\n    {', '.join(map(repr, order))},\n]\n",
                                    encoding="utf-8")
    return folder


def test_a_complete_repository_has_no_problem(tmp_path):
    assert layout_problems(small_repository(tmp_path)) == []


def test_a_missing_smoke_test_names_the_file_to_add(tmp_path):
    problems = layout_problems(small_repository(tmp_path, tests=("first",)))
    assert len(problems) == 1, problems
    assert problems[0].startswith("recipes/en/second.py has no smoke test: add tests/test_second.py"), problems
    assert 'recipe_run("second", lang)' in problems[0], problems


def test_a_recipe_missing_from_the_order_names_the_entry_to_add(tmp_path):
    problems = layout_problems(small_repository(tmp_path, order=("first.py",)))
    assert problems == ['recipes/en/second.py is not in RECIPE_ORDER (conf.py:3): add "second.py" where a reader '
                        'should meet it in the gallery (without it the page silently goes last)'], problems


def test_an_order_entry_without_a_recipe_is_named(tmp_path):
    problems = layout_problems(small_repository(tmp_path, order=("first.py", "second.py", "third.py")))
    assert len(problems) == 1 and 'lists "third.py", but there is no recipes/en/third.py' in problems[0], problems


def test_conf_without_an_order_says_so(tmp_path):
    repo = small_repository(tmp_path)
    (repo / "conf.py").write_text("ORDER = []\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"conf\.py has no RECIPE_ORDER = \[\.\.\.\] list"):
        layout_problems(repo)
