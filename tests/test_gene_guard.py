"""Guard, on the real engine with the shipped `ie` adapter: a known gene is not returned as a
Chemical or a Disease (whichever types are asked), a known chemical and disease still are, and a
response holds only the types requested. Then `bioinstruct eval entity-types` (docs/RESULTS.md)
run as written, on a few dev items."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.service_helpers import ExtraGateway

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[1]

# (text, genes, chemicals, diseases): sentences written for this check, none from a corpus.
SENTENCES = [
    ("Overexpression of VEGF and loss of p53 were associated with tumor angiogenesis in gastric adenocarcinoma.",
     ["VEGF", "p53"], [], ["gastric adenocarcinoma"]),
    ("Cells were treated with cisplatin and the EGFR inhibitor gefitinib, and IL-8 secretion was measured.",
     ["IL-8"], ["cisplatin", "gefitinib"], []),
    ("Mutations in BRCA1 raise the risk of breast cancer, and carriers were given tamoxifen.",
     ["BRCA1"], ["tamoxifen"], ["breast cancer"]),
]


@pytest.fixture(scope="module")
def shipped_gateway(engine, core, tmp_path_factory):
    from bioinstruct.model import inspect_base_model
    from bioinstruct.publishing import PublishTarget
    from bioinstruct.registry import Registry
    from bioinstruct.shipped import publish_shipped

    registry = tmp_path_factory.mktemp("guard-registry")
    publish_shipped(Registry(registry), PublishTarget.of(inspect_base_model(engine.model_dir), engine.settings),
                    root=ROOT / "adapters", say=lambda *_: None)
    with ExtraGateway(engine, core, registry) as gw:
        yield gw
        loaded = set(gw.app.state.gateway.adapters.loaded)
    for ref in loaded:  # leave the shared engine's LoRA slots to the other tests
        httpx.post(f"{engine.base_url}/v1/unload_lora_adapter", json={"lora_name": ref}, timeout=60)


def _extract(gw, text, types=None) -> dict[str, set[str]]:
    body = {"text": text, **({"entity_types": types} if types else {})}
    r = httpx.post(f"{gw.base_url}/extract", json=body, timeout=300)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["adapter"]["alias"] == "ie"
    asked = types or ["Chemical", "Disease"]
    by_type: dict[str, set[str]] = {}
    for e in data["entities"]:
        assert e["type"] in asked, (types, e)  # only the types requested
        assert text[e["start"]:e["end"]] == e["text"]
        by_type.setdefault(e["type"], set()).add(e["text"])
    return by_type


@pytest.mark.parametrize(("text", "genes", "chemicals", "diseases"), SENTENCES)
def test_a_gene_is_not_a_chemical_or_a_disease(shipped_gateway, text, genes, chemicals, diseases):
    for types in (["Chemical"], ["Disease"], None, ["Chemical", "Disease", "Gene"]):
        found = _extract(shipped_gateway, text, types)
        for gene in genes:
            assert gene not in found.get("Chemical", set()) | found.get("Disease", set()), (types, found)
    chem = _extract(shipped_gateway, text, ["Chemical"])
    assert set(chemicals) <= chem.get("Chemical", set()), chem
    both = _extract(shipped_gateway, text, None)
    assert set(chemicals) <= both.get("Chemical", set()) and set(diseases) <= both.get("Disease", set()), both
    genes_found = _extract(shipped_gateway, text, ["Gene"]).get("Gene", set())
    assert genes_found & set(genes), genes_found  # the gene is found when genes are asked for


def test_entity_types_report_runs_as_documented(shipped_gateway, tmp_path):
    out = tmp_path / "types"
    proc = subprocess.run(
        [sys.executable, "-m", "bioinstruct.cli", "eval", "entity-types", "--split", "dev", "--limit", "3",
         "--base-url", shipped_gateway.base_url, "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "entity_types.json").read_text())
    assert result["errors"] == 0
    scored = {(r["corpus"], tuple(r["requested"]), r["type"]) for r in result["rows"]}
    assert ("bc5cdr", ("Chemical",), "Chemical") in scored and ("bc5cdr", ("Chemical",), "Disease") not in scored
    assert ("bc2gm", ("Gene",), "Gene") in scored and ("bc2gm", ("Chemical",), "genes as other") in scored
    assert (out / "entity_types.png").stat().st_size > 0 and "| bc2gm | Gene | Gene |" in proc.stdout
