"""Write the README's per-paper result lines from the committed results (results/<profile>/*.json, via the claims
ledger of stage 07), so the README never carries a hand-copied count.

Run as: python tools/readme_results.py [--profile cpu] [--check]
The lines go between the markers <!-- results:start --> and <!-- results:end --> of README.md; --check exits 1
when they differ from what the results give (after a new committed run: rerun this script)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
QUESTIONS = {
    "umed": "does PPO with the localisation and attention rewards beat plain PPO and SFT?",
    "zhu": "does GRPO beat SFT on the same data, and what do the length rewards and the start change?",
    "mmedpo": "does weighted DPO with noised-image pairs beat plain DPO on VQA and reports?",
    "drllava": "does multi-turn PPO with rule rewards raise conversation accuracy and robustness?",
}


def lines(counts, profile: str, held: dict | None = None) -> str:
    """One Markdown bullet per paper from ledger.counts (rows: papers; columns: verdicts, total) and, where a rerun
    is recorded, rerun_record.held_by_paper."""
    from repro import ledger

    out = []
    for paper, question in QUESTIONS.items():
        title = ledger.PAPER_TITLES.get(paper, paper)
        if paper not in counts.index:
            out.append(f"- **{title}**: {question} No claims in results/{profile}/ yet.")
            continue
        row = counts.loc[paper]
        rest = ", ".join(f"{int(row[v])} {v.replace('_', ' ')}" for v in ledger.VERDICTS
                         if v != "reproduced" and v in row and row[v])
        line = (f"- **{title}**: {question} {int(row.get('reproduced', 0))} of {int(row['total'])} claims "
                f"reproduced" + (f" ({rest})." if rest else "."))
        if held and paper in held:
            h = held[paper]
            kinds = ", ".join(f"{n} {k}" for k, n in h.get("kinds", {}).items())
            notes = [f"{h['reproduced_held']} of the {h['reproduced']} reproduced" if h["reproduced"] else "",
                     f"the {h['compared'] - h['held']} changes: {kinds}" if kinds else ""]
            notes = "; ".join(n for n in notes if n)
            line += (f" A rerun on another float path kept {h['held']} of the {h['compared']} verdicts it compared"
                     + (f" ({notes})." if notes else "."))
        out.append(line)
    return "\n".join(out)


def block(profile: str = "cpu") -> str:
    from repro import ledger, paths, rerun_record

    records, _ = ledger.load_results(paths.RESULTS / profile, profile)
    led, _ = rerun_record.annotate(ledger.build(records), rerun_record.load(paths.RESULTS / profile)[0], records)
    return lines(ledger.counts(led), profile, rerun_record.held_by_paper(led))


def main(argv: list[str]) -> int:
    profile = argv[argv.index("--profile") + 1] if "--profile" in argv else "cpu"
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{block(profile)}\n{END}{tail}"
    if "--check" in argv:
        if new != text:
            print("README.md's result lines differ from results/ — run: python tools/readme_results.py",
                  file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
