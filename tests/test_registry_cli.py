"""`bioinstruct adapters ...` on a real registry folder: a weighted alias, compare-and-swap from the
command line, promote, rollback, and the export of aliases as InferenceModelRewrite objects
(validated against the upstream llm-d CRD)."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from bioinstruct import cli
from bioinstruct.model import inspect_base_model
from bioinstruct.registry import Registry
from tests.test_chart_inference import validate


def _run(*args: str):
    cli._register_subcommands()
    return CliRunner().invoke(cli.app, ["adapters", *args], env={"COLUMNS": "200"})


def test_split_alias_promote_rollback_and_export(tmp_path, make_lora, base_model_dir):
    url = str(tmp_path / "registry")
    reg = Registry(url)
    fingerprint = inspect_base_model(base_model_dir).fingerprint
    for seed in (81, 82):
        reg.publish(make_lora(seed=seed, rank=4), name="team-ie", category="IE", base_fingerprint=fingerprint)
    out = _run("alias", "ie", "team-ie@1", "--registry", url)
    assert out.exit_code == 0 and "ie -> team-ie@1 (generation 1)" in out.output, out.output
    out = _run("alias", "ie", "team-ie@1=90", "team-ie@2=10", "--registry", url, "--expect-generation", "1")
    assert out.exit_code == 0 and "team-ie@1=90,team-ie@2=10 (generation 2)" in out.output, out.output
    stale = _run("alias", "ie", "team-ie@2", "--registry", url, "--expect-generation", "1")
    assert stale.exit_code == 2 and "generation 2, not 1" in stale.output  # CAS: a clear refusal
    bad = _run("alias", "ie", "team-ie@1=90", "team-ie@2=x", "--registry", url)
    assert bad.exit_code == 2 and "<name>@<version>=<weight>" in bad.output
    exported = _run("export", "--registry", url, "--pool", "bioinstruct", "--namespace", "ml")
    assert exported.exit_code == 0, exported.output
    (obj,) = list(yaml.safe_load_all(exported.output))
    assert validate(obj) == [], validate(obj)
    targets = {t["modelRewrite"]: t["weight"] for rule in obj["spec"]["rules"] for t in rule["targets"]}
    assert targets == {"team-ie@1": 90, "team-ie@2": 10}
    assert _run("promote", "ie", "--registry", url).output.strip() == "alias ie -> team-ie@2 (generation 3)"
    assert _run("rollback", "ie", "--registry", url).output.strip() == \
        "alias ie -> team-ie@1=90,team-ie@2=10 (generation 4)"
    assert Registry(url).alias("ie").history == ["team-ie@1"]


def test_deploy_docs_canary_commands_run_as_written(tmp_path, make_lora, base_model_dir):
    """The canary block of docs/DEPLOY.md, line by line, against a registry holding the versions it names."""
    import re
    import shlex
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "DEPLOY.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", doc, re.S) if "adapters alias ie" in b)
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    url = str(tmp_path / "registry")
    reg = Registry(url)
    fingerprint = inspect_base_model(base_model_dir).fingerprint
    for seed in (83, 84):
        reg.publish(make_lora(seed=seed, rank=4), name="bioinstruct-ie", category="IE", base_fingerprint=fingerprint)
    reg.set_alias("ie", "bioinstruct-ie@1")
    outputs = []
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["bioinstruct", "adapters"], line
        result = _run(*words[2:], "--registry", url)
        assert result.exit_code == 0, (line, result.output)
        outputs.append(result.output.strip())
    assert outputs == ["alias ie -> bioinstruct-ie@1=90,bioinstruct-ie@2=10 (generation 2)",
                       "alias ie -> bioinstruct-ie@2 (generation 3)",
                       "alias ie -> bioinstruct-ie@1=90,bioinstruct-ie@2=10 (generation 4)"]
