"""RULER's variable tracking (``vt``), after RULER ``scripts/data/synthetic/variable_tracking.py``.

``num_chains`` chains of ``num_hops + 1`` distinct 5-letter upper-case variables:
``VAR A = 12345`` then ``VAR B = VAR A `` ... (RULER's trailing space kept), inserted in order as
lines among ``n`` noise lines (:data:`~tasks.ruler.haystack.NOISE`). The question gives the first
chain's value; the answers are that chain's variables.

A one-shot example comes first, as in RULER: the same task with 3-letter variables and value
12345, its noise sized so that the example (template and answer prefix included, no special tokens)
has at most 500 tokens, followed by its answer; for each sample its answer variables and value are
re-drawn (RULER ``randomize_icl``). The example is followed by a blank line and the sample's text.
"""

from __future__ import annotations

import string

from tasks.ruler import haystack as hs
from tasks.ruler import templates
from tasks.ruler.generator import Draft, Generator, rng_for

ICL_TOKENS = 500  # RULER: the example is generated with max_seq_length=500, tokens_to_generate=0


def chains(rng, num_chains: int, num_hops: int, icl: bool = False) -> tuple[list[list[str]], list[list[str]]]:
    """``(variables, chains)`` (RULER ``generate_chains``): per chain its ``num_hops + 1`` variables
    and its ``VAR ...`` lines; ``icl``: 3-letter names and value 12345 (the one-shot example)."""
    k = 3 if icl else 5
    num_hops = min(10, num_hops) if icl else num_hops
    names = ["".join(rng.choices(string.ascii_uppercase, k=k)) for _ in range((num_hops + 1) * num_chains)]
    while len(set(names)) < num_chains * (num_hops + 1):
        names.append("".join(rng.choices(string.ascii_uppercase, k=k)))
    variables, lines = [], []
    for i in range(0, len(names), num_hops + 1):
        these = names[i:i + num_hops + 1]
        variables.append(these)
        value = "12345" if icl else str(rng.randrange(10000, 99999))  # np.random.randint(10000, 99999)
        lines.append([f"VAR {these[0]} = {value}"] + [f"VAR {these[j + 1]} = VAR {these[j]} " for j in range(num_hops)])
    return variables, lines


def noise_context(rng, n: int, chain_lines: list[list[str]]) -> str:
    """``n`` noise lines with each chain's lines inserted in order at random positions (RULER's noise
    haystack); ``". \\n"`` becomes ``".\\n"`` as in RULER."""
    lines = [hs.NOISE] * n
    for chain in chain_lines:
        at = sorted(rng.sample(range(len(lines)), len(chain)))
        for j, (pos, line) in enumerate(zip(at, chain)):
            lines.insert(pos + j, line)
    return "\n".join(lines).replace(". \n", ".\n")


class VariableTrackingGenerator(Generator):
    """``vt`` at one target length; ``tokenizer`` sizes the one-shot example (once, at construction)."""

    unit = "sentences"

    def __init__(self, config: dict, length: int, tokenizer, seed_key: str):
        if config.get("type_haystack", "noise") != "noise":
            raise ValueError("RULER vt here supports the noise haystack only (synthetic.yaml's vt uses it)")
        self.num_chains, self.num_hops = config["num_chains"], config["num_hops"]
        self.template = templates.full_template("variable_tracking")
        self.n_min = self.num_chains * (self.num_hops + 1)
        self.incremental = 5 if length < 4096 else 10
        self.labels = {"haystack": "noise"}
        self.icl = self._one_shot(tokenizer, seed_key)

    def _text(self, rng, n: int, icl: bool) -> tuple[str, list[str]]:
        variables, lines = chains(rng, self.num_chains, self.num_hops, icl=icl)
        value = lines[0][0].split("=")[-1].strip()
        num_hops = min(10, self.num_hops) if icl else self.num_hops
        context = noise_context(rng, n, lines)
        return self.template.format(context=context, query=value, num_v=num_hops + 1), variables[0]

    def _one_shot(self, tokenizer, seed_key: str) -> str:
        """The example's text with its answer and a newline (RULER: ``input + " " + outputs + "\\n"``)."""
        def count(n: int) -> int:
            text = self._text(rng_for(seed_key, "icl"), n, True)[0]
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        n_min = min(10, self.num_hops) + 1
        n = hs.fit_size(count, ICL_TOKENS, n_min, 5) or n_min
        text, answer = self._text(rng_for(seed_key, "icl"), n, True)
        return text + " " + " ".join(answer) + "\n"

    def _randomized_icl(self, rng) -> str:
        """RULER ``randomize_icl``: new names for the example's answer variables, a new value."""
        icl = self.icl
        for name in icl.strip().split()[-(min(10, self.num_hops) + 1):]:
            icl = icl.replace(name, "".join(rng.choices(string.ascii_uppercase, k=len(name))))
        return icl.replace("12345", str(rng.randrange(10000, 99999)))

    def draft(self, n: int, key: str, index: int) -> Draft:
        rng = rng_for(key)
        icl = self._randomized_icl(rng_for(key, "icl"))
        text, answer = self._text(rng, n, False)
        return Draft(icl + "\n" + text, list(answer))
