"""ChouBun suite (``choubun``): the Japanese long-context benchmark introduced with NAMM.

Four tasks (paper Table 4 names): ``wiki_qa`` (JA.WikiQA), ``edinet_qa`` (JA.EdinetQA),
``corp_sec_qa`` (JA.CorpSecQA) — extractive QA — and ``corp_sec_sum`` (JA.CorpSecSum) —
summarisation with 5 references. Prompts and max new tokens (64, 64, 64, 128) are the NAMM code's
``ChouBun/config/dataset2prompt.json`` / ``dataset2maxlen.json`` (SakanaAI/evo-memory; read from a
fork's copy, ``data/choubun/config``, as the upstream path is not in the reference index), copied
verbatim — including ``corp_sec_qa``'s missing newline before ``### 文書 ###``. The NAMM code builds
the chat prompt for every ChouBun task (none is in LongBench's no-chat list), so ``chat=True``.

Records use LongBench's format (hub ``SakanaAI/ChouBun``, config = task, split ``test``): fields
``input, context, answers, length, dataset, language, all_classes (null), _id``. Data comes from
``<data_dir>/<task>.jsonl`` in those field names, else from the hub when it answers or the dataset
is cached (``source`` = ``auto`` | ``hub`` | ``data-dir``). There is no offline generator: a task
with no data raises :class:`tasks.base.TaskUnavailable` when ``samples`` is called. Scores come from
:func:`tasks.scoring.score` (``"choubun/<task>"``: MeCab-token F1 / ROUGE-L).
"""

from __future__ import annotations

from tasks import register_suite
from tasks.longbench import FIELDS, HUB_FIELDS
from tasks.official_data import OfficialDataSuite

_QA = ("以下の文書を注意深く読み、続く質問に答えてください。"
       "回答は必ず文書内の連続した文字列（テキストスパン）から抽出してください。")

PROMPTS = {
    "wiki_qa": _QA + "\n### 文書 ###\n{context}\n### 質問 ###\n{input}\n### 回答 ###\n",
    "edinet_qa": _QA + "\n### 文書 ###\n{context}\n### 質問 ###\n{input}\n### 回答 ###\n",
    "corp_sec_qa": _QA + "### 文書 ###\n{context}\n### 質問 ###\n{input}\n### 回答 ###\n",
    "corp_sec_sum": ("以下の文書を要約してください。要約は短く簡潔にしてください。"
                     "また、文書の全体的な考え方、傾向、洞察を反映させてください。"
                     "\n### 文書 ###\n{context}\n### 要約 ###\n"),
}

MAX_NEW_TOKENS = {"wiki_qa": 64, "edinet_qa": 64, "corp_sec_qa": 64, "corp_sec_sum": 128}

TASK_IDS = {"wiki_qa": "JA.WikiQA", "edinet_qa": "JA.EdinetQA", "corp_sec_qa": "JA.CorpSecQA",
            "corp_sec_sum": "JA.CorpSecSum"}

HUB_REPO = "SakanaAI/ChouBun"


@register_suite("choubun")
class ChouBun(OfficialDataSuite):
    """ChouBun: official data from ``data_dir`` (``<task>.jsonl``) or the hub; nothing is generated.

    Options: ``data_dir``, ``source`` (``auto`` | ``hub`` | ``data-dir``).
    """

    tasks = tuple(TASK_IDS)
    task_ids = dict(TASK_IDS)
    generated = False

    benchmark = "choubun"
    prompts = PROMPTS
    max_new_tokens = MAX_NEW_TOKENS
    no_chat = frozenset()
    hub_repo = HUB_REPO
    fields = FIELDS
    hub_fields = HUB_FIELDS
    generated_tasks = ()
    format_hint = "official ChouBun format: the fields of the hub dataset SakanaAI/ChouBun"

    def __init__(self, data_dir=None, source="auto"):
        super().__init__(data_dir=data_dir, source=source)

    def length_unit(self, task: str, record: dict) -> str | None:
        return None  # the record's length field, unit not documented (paper Table 10 counts Llama 3 tokens)
