"""The Chinese pages use the terms of docs/zh/glossary.rst, and only those.

The glossary's table maps each English term to its Chinese term. Two kinds of
check follow from it:

* discouraged variants (other common translations of the same terms) appear
  nowhere in the Chinese recipes and pages;
* when the English twin of a Chinese file uses a term in its prose, the Chinese
  file contains the glossary's Chinese term for it.
"""

import ast
import re

import pytest

from conftest import RECIPES, REPO

DOCS = REPO / "docs"
GLOSSARY = {lang: DOCS / lang / "glossary.rst" for lang in ("en", "zh")}

# Every term the recipes rely on; the glossary must define each one.
REQUIRED_TERMS = [
    "accumulate", "activations", "backward pass", "batch normalization", "batch size", "bias",
    "computational graph", "device", "diverge", "effective batch size", "epoch",
    "forward pass", "full batch", "gradient", "gradient accumulation", "inference", "iteration",
    "kernel (CUDA)", "leaf tensor", "learning rate", "loss", "loss function", "micro-batch",
    "mini-batch", "momentum", "optimizer", "parameter", "recipe", "running statistics",
    "step (optimizer step)", "tensor", "test accuracy", "training loop", "weight",
    "weight decay", "zero out, zeroing",
    # the practice recipes (mixed precision, schedules, sequences, DDP, FSDP)
    "all-reduce", "autocast", "bucket", "collective communication", "cross-entropy", "data parallelism",
    "FSDP", "float16, bfloat16", "gradient clipping", "hook", "learning rate scheduler", "loss scaling",
    "mixed precision", "norm (of a gradient)", "padding", "process group", "rank", "reduce-scatter",
    "rounding error", "shard, sharding", "token", "unscaling", "warm-up", "window", "worker process",
    # the recipes on low precision, the optimizer step in backward, distributed pitfalls
    "activation checkpointing", "all-gather", "overflow, underflow", "post-accumulate-grad hook",
]

# Other translations of glossary terms, each with the term it competes with.
# Only patterns that cannot occur in a correct sentence of these recipes are
# listed: 累加 alone can describe plain addition, so only its use as the term
# (梯度累加, 累加梯度) is flagged; 批次 alone is an ordinary word for "batch".
DISCOURAGED = {
    r"清空|归零|置零": "zero out, zeroing",
    r"梯度累加|累加梯度": "gradient accumulation",
    r"冲量": "momentum",
    r"小批(?!量)|迷你批": "mini-batch",
    r"微批(?!量)": "micro-batch",
    r"有效批|等效批大小": "effective batch size",
    r"叶张量": "leaf tensor",
    r"学习速率": "learning rate",
    r"反向传递|后向传播": "backward pass",
    r"前向传递": "forward pass",
    r"权值": "weight",
    r"(?<!量)批归一化|批标准化|批量标准化": "batch normalization",
    r"(?<![小微量])批大小": "batch size",
    r"(?<!Jupyter )(?<!Jupyter)内核": "kernel (CUDA)",
    r"测试精度|准确度": "test accuracy",
    r"食谱|配方": "recipe",
    r"梯度累计|累计梯度": "gradient accumulation",
    r"梯度剪裁": "gradient clipping",
    r"逆缩放|去缩放|取消缩放": "unscaling",
    r"热身": "warm-up",
    r"令牌": "token",
    r"规约": "all-reduce",
    r"梯度检查点": "activation checkpointing",
    r"学习率调度程序|学习率规划器": "learning rate scheduler",
}

# English wording (in prose, outside ``code``) -> glossary term whose Chinese
# form the Chinese twin must contain. Terms whose translation legitimately
# varies with context (device, iteration, step) are left out.
EXPECTED = {
    r"gradients?": "gradient",
    r"zero(?:e?s|ed|ing)? out|zeroing|zeroe[sd]": "zero out, zeroing",
    r"accumulat(?:e|es|ed|ing|ion)": "accumulate",
    r"gradient accumulation": "gradient accumulation",
    r"backward pass(?:es)?": "backward pass",
    r"forward pass(?:es)?": "forward pass",
    r"optimi[sz]ers?": "optimizer",
    r"learning rates?": "learning rate",
    r"momentum": "momentum",
    r"loss(?:es)?": "loss",
    r"loss functions?": "loss function",
    r"mini-?batch(?:es)?": "mini-batch",
    r"micro-?batch(?:es)?": "micro-batch",
    r"batch sizes?": "batch size",
    r"effective batch sizes?": "effective batch size",
    r"leaf tensors?": "leaf tensor",
    r"computation(?:al)? graphs?": "computational graph",
    r"parameters?": "parameter",
    r"weight decay": "weight decay",
    r"batch[- ]?norm(?:alization|alisation)?": "batch normalization",
    r"training loops?": "training loop",
    r"epochs?": "epoch",
    r"test accuracy": "test accuracy",
    r"diverg(?:e|es|ed|ing|ence)": "diverge",
    r"recipes?": "recipe",
    r"tensors?": "tensor",
    r"tokens?": "token",
    r"padding|padded (?:positions?|targets?|sequences?)": "padding",  # not "zero-padded" digits
    r"warm-?ups?": "warm-up",
    r"learning[- ]rate schedulers?": "learning rate scheduler",
    r"mixed precision": "mixed precision",
    r"loss scal(?:ing|er)": "loss scaling",
    r"unscal(?:e|es|ed|ing)": "unscaling",
    r"gradient clipping|clipping": "gradient clipping",
    r"worker(?: process)?e?s?": "worker process",
    r"buckets?": "bucket",
    r"shard(?:s|ed|ing)?": "shard, sharding",
    r"collectives?": "collective communication",
    r"process groups?": "process group",
    r"rounding errors?": "rounding error",
    r"underflow(?:s|ed)?": "overflow, underflow",
    r"activation checkpointing|gradient checkpointing": "activation checkpointing",
    r"post-accumulate-grad hooks?": "post-accumulate-grad hook",
    r"data parallel(?:ism)?": "data parallelism",
    r"cross[- ]entropy": "cross-entropy",
}


def chinese_files():
    files = sorted(RECIPES.glob("zh/*.py")) + sorted(RECIPES.glob("zh/*.rst")) + sorted(DOCS.glob("zh/*.rst"))
    assert files, "no Chinese files found"
    return files


def english_twin(path):
    """recipes/zh/x.py -> recipes/en/x.py, docs/zh/x.rst -> docs/en/x.rst."""
    return path.parents[1] / "en" / path.name


def glossary_table(path):
    """The rows of the glossary's list-table as (English term, Chinese term, explanation)."""
    rows, row = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"   \* - (.*)", line):
            row = [m[1]]
            rows.append(row)
        elif row is not None and (m := re.fullmatch(r"     - (.*)", line)):
            row.append(m[1])
        elif row is not None and (m := re.fullmatch(r"       (\S.*)", line)):
            row[-1] += " " + m[1]
    assert rows and all(len(r) == 3 for r in rows), f"{path.name}: malformed list-table"
    return [tuple(r) for r in rows[1:]]  # rows[0] is the header


def glossary(lang="zh"):
    return {english: chinese for english, chinese, _ in glossary_table(GLOSSARY[lang])}


def core(chinese_term):
    """The part of a Chinese term to look for: 轮（epoch） -> 轮."""
    return re.sub(r"（.*?）|\(.*?\)", "", chinese_term).strip()


def english_prose(path):
    """The prose of an English file without code: ``...`` spans and roles removed."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        tree = ast.parse(text)
        docstrings = [ast.get_docstring(node) or "" for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))]
        comments = [line.strip()[1:] for line in text.splitlines() if line.strip().startswith("#")]
        text = "\n".join(docstrings + comments)
    return without_code(text)


def without_code(text):
    """reST text minus ``literals``, roles (:ref:`...`) and directive or label lines."""
    text = re.sub(r"``.+?``|:\w+:`.+?`", " ", text, flags=re.S)
    return re.sub(r"^\s*\.\. .*$", " ", text, flags=re.M)


SYNONYMS_SECTION = "\n其他说法\n"


def without_other_names(path, text):
    """The glossary's 「其他说法」 section lists the discouraged names readers search for, on purpose."""
    return text.split(SYNONYMS_SECTION, 1)[0] if path == GLOSSARY["zh"] else text


def discouraged_uses(text):
    """(line number, variant, glossary term, context) for every discouraged variant in ``text``."""
    return [(number, m[0], term, line[max(0, m.start() - 10):m.end() + 10].strip("# "))
            for number, line in enumerate(text.splitlines(), 1)
            for pattern, term in DISCOURAGED.items()
            for m in re.finditer(pattern, line)]


def missing_terms(english_text, chinese_text, terms):
    """Glossary terms used in the English prose whose Chinese form is absent from the Chinese text."""
    return sorted({
        f"{term} -> {core(terms[term])}"
        for pattern, term in EXPECTED.items()
        if re.search(rf"\b(?:{pattern})\b", english_text, re.I) and core(terms[term]) not in chinese_text
    })


def test_glossary_defines_every_term():
    terms = glossary()
    assert not [t for t in REQUIRED_TERMS if t not in terms], "missing from docs/zh/glossary.rst"
    assert set(EXPECTED.values()) | set(DISCOURAGED.values()) <= set(terms)


def test_both_glossaries_give_the_same_translations():
    assert glossary("en") == glossary("zh")


def test_glossary_explains_each_term_in_its_own_language():
    for lang, path in GLOSSARY.items():
        for english, _, explanation in glossary_table(path):
            has_chinese = bool(re.search(r"[\u4e00-\u9fff]", explanation))
            assert has_chinese == (lang == "zh"), f"{path.name} ({lang}): explanation of {english!r}"


def test_glossary_terms_are_not_discouraged_variants():
    for english, chinese in glossary().items():
        assert not discouraged_uses(chinese), f"{english}: {chinese}"


@pytest.mark.parametrize("path", chinese_files(), ids=lambda p: f"{p.parent.parent.name}/zh/{p.name}")
def test_no_discouraged_variants(path):
    uses = discouraged_uses(without_other_names(path, path.read_text(encoding="utf-8")))
    assert not uses, "\n".join(
        f"{path.name}:{n}: {variant!r} in {context!r} (glossary: {term} -> {core(glossary()[term])})"
        for n, variant, term, context in uses)


@pytest.mark.parametrize("path", [p for p in chinese_files() if english_twin(p).exists()],
                         ids=lambda p: f"{p.parent.parent.name}/zh/{p.name}")
def test_chinese_uses_the_glossary_terms_of_its_english_twin(path):
    missing = missing_terms(english_prose(english_twin(path)), path.read_text(encoding="utf-8"), glossary())
    assert not missing, f"{path.name}: the English twin uses these terms, the Chinese text lacks them: {missing}"


def test_the_checks_can_fail():
    """The patterns still catch what they are meant to, and let correct text pass."""
    assert [v for _, v, _, _ in discouraged_uses("先把梯度清空。\n动量（冲量）\n每个小批次\n叶张量\n梯度累加")] == \
        ["清空", "冲量", "小批", "叶张量", "梯度累加"]
    assert not discouraged_uses("把梯度加到 .grad 上，梯度会不断累加。每个小批量和微批量的叶子张量。")
    terms = glossary()
    english = without_code("The optimizer zeroes out the ``loss`` of each mini-batch before ``backward()``.")
    assert missing_terms(english, "优化器把每个小批量的梯度清零。", terms) == []
    assert missing_terms(english, "把每个小批次的梯度归零。", terms) == \
        ["mini-batch -> 小批量", "optimizer -> 优化器", "zero out, zeroing -> 清零"]


# What readers type into the search box instead of the glossary's terms.
SEARCHED_FOR = {"梯度归零": "zero out, zeroing", "梯度置零": "zero out, zeroing",
                "梯度累加": "gradient accumulation", "梯度累计": "gradient accumulation"}
OTHER_NAME = re.compile(r"^\* (.+?)：本站称「(.+?)」", re.M)


def other_names():
    """{other name: Chinese term} from the Chinese glossary's 「其他说法」 section."""
    text = GLOSSARY["zh"].read_text(encoding="utf-8")
    assert SYNONYMS_SECTION in text, "docs/zh/glossary.rst has no section 其他说法"
    return {name: term for names, term in OTHER_NAME.findall(text.split(SYNONYMS_SECTION, 1)[1])
            for name in names.split("、")}


def test_chinese_glossary_lists_the_names_readers_search_for():
    names, terms = other_names(), glossary()
    for name, english in SEARCHED_FOR.items():
        assert name in names, f"{name} is not among the glossary's 其他说法"
        assert core(terms[english]) in names[name] or names[name] in terms[english], (name, names[name])
    chinese_terms = {core(t) for t in terms.values()} | {re.sub(r".*（(.*)）", r"\1", t) for t in terms.values()}
    assert not [t for t in names.values() if t not in chinese_terms], "其他说法 must point to a glossary term"
    # the discouraged patterns know each other name, so that no page uses one
    assert all(discouraged_uses(name) for name in SEARCHED_FOR)
