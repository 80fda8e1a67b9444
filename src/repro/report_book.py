"""The report's pages beside the claims ledger (repro.ledger): a page per paper, the provenance block, and the HTML
site under `figures/<profile>/report/` (nbconvert's HTMLExporter, no execution) with an index.html linking it all.

Run as: python -m repro.report_book export --profile cpu
    (what `make report` runs after notebook 07, so the executed 07 itself is exported too; 07 cannot export its
    own executed copy while it runs)
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import sys
from pathlib import Path

import pandas as pd

from repro import ledger, paths, rerun_record, results

STEM = "07_report"
SECTIONS = (("04_rl", "Main table (stage 04)"), ("05_ablations", "Ablations (stage 05)"),
            ("06_generalization", "Generalization (stage 06)"))
PAPER_KEYS = {"umed": "umed_lvlm", "zhu": "zhu2025", "mmedpo": "mmedpo", "drllava": "dr_llava"}


# ----------------------------------------------------------------------------------------------- provenance
def provenance_table(records: dict[str, dict]) -> pd.DataFrame:
    """One row per stage found: commit, dirty flag, profile, seed(s), run time, device, hardware, finish time."""
    rows = []
    for stem in sorted(records):
        p = records[stem].get("provenance") or {}
        git, hw, prm = p.get("git") or {}, p.get("hardware") or {}, p.get("params") or {}
        sha = git.get("sha")
        dirty = git.get("dirty")
        n_dirty = len(git.get("dirty_paths") or [])
        secs = p.get("wall_time_s")
        rows.append({
            "stage": stem, "commit": sha[:12] if sha else ledger.DASH,
            "dirty": ledger.DASH if dirty is None else (f"yes ({n_dirty} paths)" if dirty and n_dirty else
                                                        ("yes" if dirty else "no")),
            "profile": records[stem].get("profile") or prm.get("profile") or ledger.DASH,
            "seed": p.get("seed", prm.get("seed")), "seeds": prm.get("seeds", ledger.DASH),
            "run time": ledger.DASH if secs is None else f"{int(secs) // 60}:{int(secs) % 60:02d}",
            "device": p.get("device") or ledger.DASH,
            "hardware": (f"{hw.get('cpu', '?')}" + (f" ({hw['cpu_capability']})" if hw.get("cpu_capability") else "")
                         + f", {hw.get('logical_cores', '?')} cores, torch threads "
                         f"{hw.get('torch_threads', '?')}, GPU {hw.get('gpu') or 'none'}") if hw else ledger.DASH,
            "python": p.get("python") or ledger.DASH, "finished": p.get("finished_at") or ledger.DASH,
        })
    return pd.DataFrame(rows)


def packages_table(records: dict[str, dict]) -> pd.DataFrame:
    """Package versions (rows) per stage (columns); the last column says whether the stages agree."""
    data = {stem: (records[stem].get("provenance") or {}).get("packages") or {} for stem in sorted(records)}
    df = pd.DataFrame(data).fillna(ledger.DASH)
    if len(df.columns):
        df["same in all stages"] = ["yes" if len(set(r)) == 1 else "NO" for r in df.itertuples(index=False)]
    df.index.name = "package"
    return df.reset_index()


# ----------------------------------------------------------------------------------------------- paper pages
def _belongs(name: str, stage: str, paper: str) -> bool:
    """figures file <stage>_<rest>.<ext> belongs to `paper` when a '_'-separated word of rest is the paper key."""
    if not name.startswith(stage + "_"):
        return False
    rest = name[len(stage) + 1:].rsplit(".", 1)[0]
    return paper in rest.split("_") and not rest.startswith("claims")


def _paper_tables(paper: str) -> list[tuple[str, pd.DataFrame]]:
    key = PAPER_KEYS.get(paper)
    try:
        tables = results.paper_numbers(key).get("tables", {}) if key else {}
    except KeyError:
        tables = {}
    return [(t.get("source", name), results.paper_table(key, name)) for name, t in tables.items()]


_PLAIN_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$")


def display_claims(led: pd.DataFrame) -> pd.DataFrame:
    """ledger.display_frame with the paper's number rounded like ours (+0.040, not 0.040000000000000036) when a
    stage gave it as a bare number (05's `paper_value`); a cited text ("+0.080 (Avg: ...) [Table 2]") is kept."""
    shown = ledger.display_frame(led)
    col = "paper's number"
    if col in shown:
        shown[col] = [f"{float(v):+.3f}" if isinstance(v, str) and _PLAIN_NUMBER.match(v.strip()) else v
                      for v in shown[col]]
    return shown


DEVIATIONS = {"drllava": "6(a)", "zhu": "6(b)", "mmedpo": "6(c)", "umed": "6(d)"}  # docs/methods.md sections


def reproducibility_summary(paper: str, led: pd.DataFrame) -> str:
    """The opening of a paper's page, in the shape reproduction studies use (scope; what reproduced; what did not,
    with the ledger's reason; what was hard; the deviations), generated from the ledger rows of `paper`: no
    hand-written number. Only rows of kind "claim" are counted; checks and controls are named, not counted."""
    mine = led[led["paper"] == paper]
    kind = mine["kind"].fillna("claim") if "kind" in mine else pd.Series("claim", index=mine.index)
    claims, others = mine[kind == "claim"], mine[kind != "claim"]
    out = ["## Reproducibility summary\n"]
    if not len(mine):
        return out[0] + "\nNo claims of this paper in the results.\n"
    stages = ", ".join(sorted({str(s) for s in mine["stage"]}))
    extra = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in others["kind"].value_counts().items())
    out.append(f"- **Scope.** {len(claims)} of the paper's claims tested by paired tests on test items "
               f"(stages {stages})" + (f", besides {extra} (not counted)" if extra else "") + ".")
    by = {v: claims[claims["verdict"] == v] for v in ledger.VERDICTS}

    def names(df: pd.DataFrame, why: bool = False) -> str:
        return "; ".join(f"*{c}*" + (f" ({w})" if why and isinstance(w, str) and w else "")
                         for c, w in zip(df["claim"], df["why"]))

    out.append(f"- **Reproduced ({len(by['reproduced'])} of {len(claims)}).** " + (names(by["reproduced"]) or "none")
               + ".")
    missed = [(v, by[v]) for v in ("opposite", "below_paper", "inconclusive", "not_trained") if len(by[v])]
    if missed:
        out.append("- **Not reproduced.** " + " ".join(
            f"{v.replace('_', ' ')} ({len(df)}): {names(df, why=v != 'inconclusive')}." for v, df in missed))
    if len(by["inconclusive"]):
        mde = pd.to_numeric(by["inconclusive"]["mde"], errors="coerce").dropna()
        span = f" (minimum detectable effects {mde.min():.3f} to {mde.max():.3f})" if len(mde) else ""
        out.append(f"- **What was hard.** {len(by['inconclusive'])} claim(s) inconclusive: this evaluation's test "
                   f"items could not tell the difference from 0 or from the paper's{span}."
                   + (f" {len(by['not_trained'])} claim(s) had an arm that did not learn." if len(by["not_trained"])
                      else ""))
    elif len(by["not_trained"]):
        out.append(f"- **What was hard.** {len(by['not_trained'])} claim(s) had an arm that did not learn.")
    held = rerun_record.held_by_paper(led).get(paper)
    if held:
        out.append(f"- **On the rerun** (another float path, every stage again): {held['held']} of "
                   f"{held['compared']} verdicts held" + ("; changed, so not results: " + "; ".join(
                       f"*{c}*" for c in held["changed"]) if held["changed"] else "") + ".")
    out.append(f"- **Deviations that could matter.** docs/methods.md §{DEVIATIONS.get(paper, '6')} lists every one; "
               "the largest are the synthetic data and the tiny model, so only directions compare.")
    return "\n".join(out) + "\n"


def paper_page(paper: str, led: pd.DataFrame, fig_dir: Path, notes: dict[str, str], prefix: str | None = "") -> str:
    """Markdown page of one paper: its claims, then per stage (04 main, 05 ablations, 06 generalization) the tables
    and figures that stage wrote for this paper, then the paper's own reported tables. `prefix` is put before
    figure paths (the page's location relative to figures/<profile>/); None names the figures instead of linking
    them (a notebook's output, whose location differs between JupyterLab and the HTML export)."""
    title = ledger.PAPER_TITLES.get(paper, paper)
    key = PAPER_KEYS.get(paper)
    cite = results.paper_numbers(key).get("citation", "") if key in results.paper_numbers() else ""
    out = [f"# {title}\n", f"{cite}\n" if cite else "", reproducibility_summary(paper, led)]
    mine = led[led["paper"] == paper]
    out.append(f"## Claims ({len(mine)})\n")
    none = "No claims of this paper in the results.\n"
    out.append(ledger.markdown(display_claims(mine)) if len(mine) else none)
    files = sorted(p.name for p in fig_dir.glob("*")) if fig_dir.exists() else []
    for stage, heading in SECTIONS:
        out.append(f"\n## {heading}\n")
        if stage in notes:
            out.append(notes[stage] + "\n")
            continue
        mds = [f for f in files if f.endswith(".md") and _belongs(f, stage, paper)]
        pngs = [f for f in files if f.endswith(".png") and _belongs(f, stage, paper)]
        if not mds and not pngs:
            out.append(f"Stage {stage} wrote no table or figure for {title}.\n")
        for f in mds:
            out.append(f"**{f}**\n\n" + (fig_dir / f).read_text() + "\n")
        for f in pngs:
            out.append(f"![{f}]({prefix}{f})\n" if prefix is not None else f"figure: `figures/.../{f}`\n")
    paper_tables = _paper_tables(paper)
    out.append("\n## The paper's reported numbers\n")
    if not paper_tables:
        missing = results.paper_numbers(key).get("missing", "") if key in results.paper_numbers() else ""
        out.append((missing or "Not transcribed.") + "\n")
    for source, df in paper_tables:
        out.append(f"**paper: {source}**\n\n" + results.to_markdown(df, ".2f") + "\n")
    return "\n".join(s for s in out if s)


# ----------------------------------------------------------------------------------------------- HTML site
_CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
        "th{background:#f3f3f3}img{max-width:100%}code{background:#f5f5f5}"
        ".row{display:flex;flex-wrap:wrap;gap:1.5em}.col{flex:1 1 28em;min-width:0;overflow-x:auto}")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def md_to_html(text: str, title: str, img_prefix: str = "../") -> str:
    """A Markdown page as standalone HTML; relative image paths get `img_prefix` (the site sits one level down).
    A paper page's stage sections (SECTIONS headings) are laid out side by side, wrapping when too wide."""
    import mistune

    text = re.sub(r"!\[([^\]]*)\]\((?!https?:|/)([^)]+)\)", lambda m: f"![{m[1]}]({img_prefix}{m[2]})", text)
    parts = re.split(r"(?m)^(?=## )", text)
    is_stage = [any(p.startswith(f"## {h}") for _, h in SECTIONS) for p in parts]
    if sum(is_stage) < 2:
        return _page(title, mistune.html(text))
    first, last = is_stage.index(True), len(is_stage) - 1 - is_stage[::-1].index(True)
    cols = "".join(f"<div class='col'>{mistune.html(p)}</div>" for p in parts[first:last + 1])
    body = (mistune.html("".join(parts[:first])) + f"<div class='row'>{cols}</div>"
            + mistune.html("".join(parts[last + 1:])))
    return _page(title, body)


# ----------------------------------------------------------------------------------------------- offline math
# The site must read offline: nbconvert's template loads MathJax (and require.js, mermaid) from a CDN, so without a
# network its formulas showed as raw LaTeX. Instead every formula of a markdown cell is drawn once here by
# matplotlib's mathtext into an inline SVG (<img> with the LaTeX as alt text), and every remote <script> is removed.
# mathtext knows a subset of LaTeX: _tex_compat rewrites the constructs the notebooks use into it; a formula it
# still cannot draw (\begin{cases}, \underbrace) is shown as its LaTeX source in <code>.
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$([^$\n]+?)\$", re.S)
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)  # code fences and spans keep their dollars
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.S | re.I)
_REMOTE = re.compile(r"https?://|\bsrc=[\"']?//", re.I)  # a script that names another host loads from it


def _tex_compat(tex: str) -> str:
    """LaTeX as the notebooks write it -> the subset matplotlib's mathtext parses (same meaning, plainer sizes)."""
    t = re.sub(r"\\(?:[Bb]ig{1,2}|[Bb]igg)[lr]?(?![a-zA-Z])", "", tex)         # \Big( -> (
    t = re.sub(r"\\(?:textstyle|displaystyle)(?![a-zA-Z])", "", t)
    t = re.sub(r"\\[td]frac(?![a-zA-Z])", r"\\frac", t)
    t = re.sub(r"\\operatorname\*?\{([^}]*)\}", r"\\mathrm{\1}", t)
    t = re.sub(r"\\text\{([^}]*)\}", lambda m: r"\mathrm{" + m[1].replace(" ", r"\ ") + "}", t)
    t = re.sub(r"\\(mathcal|mathbb|mathbf|mathrm)\s*([A-Za-z0-9])", r"\\\1{\2}", t)  # \mathbb 1 -> \mathbb{1}
    t = re.sub(r"\\frac\s*([A-Za-z0-9])\s*([A-Za-z0-9])", r"\\frac{\1}{\2}", t)  # \frac1n -> \frac{1}{n}
    t = re.sub(r"\\frac\s*([A-Za-z0-9])\s*\{", r"\\frac{\1}{", t)
    t = re.sub(r"\\(le|ge)(?![a-zA-Z])", r"\\\1q", t)
    t = re.sub(r"\\iff(?![a-zA-Z])", r"\\Leftrightarrow", t)
    return " ".join(t.split())


@functools.lru_cache(maxsize=4096)
def math_svg(tex: str) -> str | None:
    """The formula drawn by matplotlib's mathtext as an SVG document (text as paths: no font needed to read it);
    None when mathtext cannot parse it."""
    import io

    import matplotlib
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    buf = io.BytesIO()
    try:
        with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "repro"}):
            mathtext.math_to_image(f"${_tex_compat(tex)}$", buf, prop=FontProperties(size=12), dpi=96, format="svg")
    except Exception:  # mathtext raises pyparsing's and its own errors for LaTeX it does not know
        return None
    return buf.getvalue().decode()


def _math_html(tex: str, display: bool) -> str:
    svg = math_svg(tex.strip())
    if svg is None:
        inner = f"<code class='tex'>{html.escape(tex.strip())}</code>"
    else:
        src = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
        alt = html.escape(tex.strip(), quote=True)
        inner = f"<img class='math' src='{src}' alt='{alt}' style='vertical-align:middle'>"
    return f"<div style='text-align:center;margin:0.6em 0'>{inner}</div>" if display else inner


def offline_markdown(text: str) -> str:
    """A markdown cell with every $...$ / $$...$$ formula replaced by its drawn image (code spans untouched)."""
    parts = _CODE.split(text)
    for i in range(0, len(parts), 2):  # even parts are outside code
        parts[i] = _MATH.sub(lambda m: _math_html(m[1] if m[1] is not None else m[2], m[1] is not None), parts[i])
    return "".join(parts)


def offline_html(page: str) -> str:
    """An exported page without any script loaded from another host (MathJax, require.js, mermaid)."""
    return _SCRIPT.sub(lambda m: "" if _REMOTE.search(m[0]) else m[0], page)


def export_notebooks(nb_dir: Path, out_dir: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """HTML of every executed notebook NN_*.ipynb in nb_dir (no execution), readable offline (offline_markdown,
    offline_html); returns the stems written."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter, done = HTMLExporter(), []
    for nb in sorted(Path(nb_dir).glob("[0-9][0-9]_*.ipynb")) if Path(nb_dir).exists() else []:
        if nb.stem in skip:
            continue
        node = nbformat.read(nb, as_version=4)
        for cell in node.cells:
            if cell.cell_type == "markdown":
                cell.source = offline_markdown(cell.source)
        body, _ = exporter.from_notebook_node(node)
        (out_dir / f"{nb.stem}.html").write_text(offline_html(body))
        done.append(nb.stem)
    return done


def write_site(profile: str, skip_notebooks: tuple[str, ...] = ()) -> Path:
    """figures/<profile>/report/: HTML of the executed notebooks, of the report's Markdown pages
    (figures/<profile>/07_report_*.md), and index.html linking them. Returns the index path."""
    fig_dir = paths.figures_dir(profile)
    out = fig_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    nb_dir = paths.run_dir(profile) / "notebooks"
    stems = export_notebooks(nb_dir, out, skip_notebooks)
    pages = []
    for md in sorted(fig_dir.glob(f"{STEM}_*.md")):
        name = md.stem[len(STEM) + 1:]
        (out / f"{name}.html").write_text(md_to_html(md.read_text(), name.replace("_", " ")))
        pages.append(name)
    summary = {}
    rf = paths.results_file(profile, STEM)
    if rf.exists():
        summary = json.loads(rf.read_text()).get("metrics", {})
    body = [f"<h1>Reproduction report — profile <code>{html.escape(profile)}</code></h1>"]
    if summary.get("summary"):
        body.append(f"<p>{html.escape(summary['summary'])}</p>")
    for note in (summary.get("missing_stages") or {}).values():
        body.append(f"<p><b>{html.escape(note)}</b></p>")
    if (fig_dir / f"{STEM}_verdict_counts.md").exists():
        import mistune

        body.append("<h2>Claims by verdict</h2>" + mistune.html((fig_dir / f"{STEM}_verdict_counts.md").read_text()))
    if (fig_dir / f"{STEM}_forest.png").exists():
        body.append(f"<h2>Forest plot</h2><img src='../{STEM}_forest.png' alt='forest plot of all claims'>")
    body.append("<h2>Pages</h2><ul>" + "".join(f"<li><a href='{p}.html'>{html.escape(p.replace('_', ' '))}</a></li>"
                                               for p in pages) + "</ul>")
    body.append("<h2>Executed notebooks</h2>")
    if stems:
        body.append("<ul>" + "".join(f"<li><a href='{s}.html'>{s}</a></li>" for s in stems) + "</ul>")
    else:
        body.append(f"<p>No executed notebooks under runs/{html.escape(profile)}/notebooks/ "
                    f"(run: make reproduce PROFILE={html.escape(profile)}).</p>")
    index = out / "index.html"
    index.write_text(_page(f"Reproduction report ({profile})", "\n".join(body)))
    return index


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m repro.report_book")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="HTML of the executed notebooks and the report into figures/<profile>/report/")
    e.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    if args.profile not in paths.PROFILES:
        print(f"error: unknown profile {args.profile!r}; expected one of {', '.join(paths.PROFILES)}", file=sys.stderr)
        return 2
    print(f"report: {write_site(args.profile)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
