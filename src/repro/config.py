"""Params files: load `params/<profile>/<stem>.yaml` and validate it against the notebook's parameters cell.

The notebook's cell tagged `parameters` *declares* every key and its type (its default value's type). A params
file may only set declared keys, with values of the declared type; keys naming data (`*_path`, `*_dir`) must
exist, a relative one under the repository root (paths.param_path, the rule loading uses too). Every problem is a
one-line `ConfigError` naming the file, the key and the value, raised before anything runs, so no earlier result or
figure is touched.

Notebook side (right after the parameters cell):
    cfg = repro.config.from_namespace(globals(), "01_data")
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import yaml

from repro import paths


class ConfigError(ValueError):
    """A bad params file or value; the message is one line naming file, key and value."""


# Declared type (the default's type) -> accepted Python types. An int is a valid float; a bool is never an int.
_ACCEPT = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}
PATH_SUFFIXES = ("_path", "_dir")
# Keys every stage accepts without declaring them. allow_hub: the gpu profile may name hub ids in *_path keys and
# go online (repro.hub); smoke and cpu never do.
COMMON_KEYS: dict[str, tuple[str, object]] = {"allow_hub": ("bool", False)}


@cache
def _declared_cached(nb_path: str, mtime: float) -> dict[str, tuple[str, object]]:
    import papermill

    out = {}
    inspected = papermill.inspect_notebook(nb_path)
    # papermill silently drops parameter lines it cannot parse (e.g. a ':' in a comment): catch that here.
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    assigned = [t.id for n in ast.parse(cell.source if cell else "").body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)]
    lost = [n for n in assigned if n not in inspected]
    if lost:
        raise ConfigError(f"{nb_path}: papermill cannot parse parameter line(s) for {', '.join(lost)} "
                          "(avoid '=' and ':' in parameter comments)")
    for name, info in inspected.items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            default = None
        tname = type(default).__name__ if default is not None else "None"
        out[name] = (tname, default)
    return out


# Stages whose knobs live in config dataclasses rather than in the notebook's parameters cell: "module:function"
# returning {key: (type name, default)}. The dataclass is then the one place each default is written; the
# notebook's parameters cell keeps only what a learner toggles (profile, ...).
SCHEMAS = {"04_rl": "repro.papers:declared", "05_ablations": "repro.papers.ablations:declared",
           "06_generalization": "repro.generalization:declared"}


def declared_parameters(stem: str) -> dict[str, tuple[str, object]]:
    """{name: (type name, default)} from the notebook's parameters cell (type "None" accepts anything), plus the
    stage's config dataclasses (SCHEMAS)."""
    nb = paths.notebook(stem)
    if not nb.exists():
        raise ConfigError(f"{nb}: notebook for stage '{stem}' does not exist")
    out = dict(_declared_cached(str(nb), nb.stat().st_mtime))
    if stem in SCHEMAS:
        import importlib

        module, fn = SCHEMAS[stem].split(":")
        schema = getattr(importlib.import_module(module), fn)()
        # A schema knob the parameters cell lists as None is shown to the reader (to change in JupyterLab), not
        # redefined: it keeps the schema's type and default (from_namespace reads None as "not set").
        clash = [k for k in out if k in schema and out[k][1] is not None and out[k][1] != schema[k][1]]
        if clash:
            raise ConfigError(f"notebooks/{stem}.py: parameters cell redefines {clash} with another default than "
                              f"{SCHEMAS[stem]} (one default per knob)")
        out = {**schema, **{k: v for k, v in out.items() if not (k in schema and v[1] is None)}}
    return out


def _type_ok(value, tname: str) -> bool:
    if tname not in _ACCEPT:
        return True
    if isinstance(value, bool) and tname in ("int", "float"):
        return False
    return isinstance(value, _ACCEPT[tname])


def validate(params: dict, stem: str, source: str, check_paths: bool = True) -> dict:
    """Check `params` (from `source`, a file name for messages) against notebook `stem`; return it unchanged."""
    from repro import hub

    declared = {**COMMON_KEYS, **declared_parameters(stem)}
    allow_hub = params.get("allow_hub") is True
    if allow_hub and params.get("profile", "gpu") != "gpu":
        raise ConfigError(f"{source}: key 'allow_hub' is true but profile is {params.get('profile')!r}; only the gpu "
                          "profile may use the hub (smoke and cpu run offline)")
    for key, value in params.items():
        if key not in declared:
            known = ", ".join(sorted(declared))
            raise ConfigError(f"{source}: unknown key '{key}' (value {value!r}); {stem} declares: {known}")
        tname = declared[key][0]
        if not _type_ok(value, tname):
            raise ConfigError(
                f"{source}: key '{key}' has value {value!r} of type {type(value).__name__}, expected {tname}"
            )
        if check_paths and key.endswith(PATH_SUFFIXES) and isinstance(value, str) and value:
            p = paths.param_path(value)
            if not p.exists() and not (allow_hub and hub.looks_like_hub_id(value)):
                notes = [] if Path(value).expanduser().is_absolute() else [
                    f"looked for {p}: a relative path is read from the repository root"]
                if hub.looks_like_hub_id(value):
                    notes.append("a hub id needs allow_hub: true, gpu profile only")
                hint = f" ({'; '.join(notes)})" if notes else ""
                raise ConfigError(f"{source}: key '{key}' names a path that does not exist: {value!r}{hint}")
    return params


def load_params(profile: str, stem: str, check_paths: bool = True) -> dict:
    """Read and validate params/<profile>/<stem>.yaml."""
    f = paths.params_file(profile, stem)
    rel = f.relative_to(paths.ROOT) if f.is_relative_to(paths.ROOT) else f
    if not f.exists():
        raise ConfigError(f"{rel}: params file does not exist (profile '{profile}', stage '{stem}')")
    try:
        params = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{rel}: not valid YAML ({first})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{rel}: expected a mapping of flat keys, got {type(params).__name__}")
    for key, value in params.items():
        if isinstance(value, dict):
            raise ConfigError(f"{rel}: key '{key}' is nested (value {value!r}); params files are flat")
    if params.get("profile", profile) != profile:
        raise ConfigError(f"{rel}: key 'profile' has value {params['profile']!r} but the file is in params/{profile}/")
    params.setdefault("profile", profile)
    return validate(params, stem, str(rel), check_paths=check_paths)


def from_namespace(ns: dict, stem: str) -> SimpleNamespace:
    """Validated config from the notebook's globals (after papermill injected its parameters); also sets the hub
    policy of the profile (repro.hub.apply: offline unless gpu with allow_hub) before anything loads a model."""
    from repro import hub

    declared = {**COMMON_KEYS, **declared_parameters(stem)}
    # None in the notebook's globals means "not set" for a stage whose knobs live in config dataclasses (SCHEMAS):
    # the parameters cell lists the knobs its exercises name as None, and the reader sets one to a value.
    values = {k: ns[k] for k in declared if k in ns and not (stem in SCHEMAS and ns[k] is None)}
    validate(values, stem, f"notebooks/{stem}.ipynb parameters")
    if values.get("profile") not in paths.PROFILES:
        raise ConfigError(f"notebooks/{stem}.ipynb: key 'profile' has value {values.get('profile')!r}, "
                          f"expected one of {paths.PROFILES}")
    # Knobs still unset take the profile's params file, as a headless run does (papermill injects that file's keys,
    # so there this adds nothing): a notebook opened in JupyterLab then trains the arms a headless run trains, under
    # the same cache keys, and stages 05/06 read them back. Then each knob's one default.
    if stem in SCHEMAS and paths.params_file(values["profile"], stem).exists():
        from_file = load_params(values["profile"], stem, check_paths=False)
        values.update({k: v for k, v in from_file.items() if k not in values})
    values.update({k: d for k, (_, d) in declared.items() if k not in values})
    hub.apply(values["profile"], values.get("allow_hub", False))
    return SimpleNamespace(**values, stem=stem)


def start(ns: dict, stem: str) -> tuple[SimpleNamespace, float]:
    """The opening of every training notebook: validated config, shared figure style, quiet `datasets` progress
    bars (headless logs stay readable), torch threads (`num_threads`, 0 keeps the default) and seed.
    Returns (cfg, start time) for results.save(..., started=)."""
    import time

    import datasets
    import torch

    from repro import plots

    started = time.time()
    cfg = from_namespace(ns, stem)
    plots.setup_style()
    datasets.disable_progress_bars()
    if getattr(cfg, "num_threads", 0):
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    return cfg, started
