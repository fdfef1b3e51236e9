"""The analysis notebooks run top to bottom on tiny settings, and the committed copies carry no outputs.

Each notebook's first code cell reads ``HDDGEO_NOTEBOOK_QUICK``; with it set to ``1`` the notebook
runs in seconds instead of minutes.  The kernel is started from an explicit kernelspec pointing at
this interpreter (``sys.executable -m ipykernel_launcher``), so the notebooks import the same hddgeo
as the tests, whatever ``python3`` kernels the machine or user has registered.
"""
import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 300  # seconds per cell

# what each notebook must produce when executed: at least this many inline PNG figures and HTML tables,
# and these strings somewhere in its text outputs
EXPECTED = {
    "hierarchical_weights.ipynb": {"png": 4, "html": 2, "text": ["root-level samples"]},
    "poincare_disk.ipynb": {"png": 5, "html": 2, "text": ["dm+hdd/law"]},
    "exact_vs_approximate.ipynb": {"png": 4, "html": 4, "text": ["dm+hdd/law", "dm+hdd/karcher"]},
}


def _kernel_manager(spec_root: Path):
    """A kernel manager whose only kernelspec runs ipykernel with this very interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    name = "hddgeo-notebook-test"
    spec_dir = spec_root / name
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "hddgeo tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_root)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=name, kernel_spec_manager=ksm)


def _outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def _text(out) -> str:
    if out.output_type == "stream":
        return out.text
    data = out.get("data", {})
    return data.get("text/plain", "") + data.get("text/html", "")


# every notebook on digits; on Fashion-MNIST (Debian's files) the two whose quick settings stay seconds-long there
CASES = [(name, "digits") for name in sorted(EXPECTED)] + [
    ("hierarchical_weights.ipynb", "fashionmnist"), ("poincare_disk.ipynb", "fashionmnist")]


@pytest.mark.slow
@pytest.mark.parametrize("name,dataset", CASES)
def test_notebook_runs_on_quick_settings(name, dataset, tmp_path, monkeypatch):
    if dataset == "fashionmnist":
        from hddgeo.data import fashionmnist_available

        if not fashionmnist_available():
            pytest.skip("Fashion-MNIST files absent (apt-get install dataset-fashion-mnist)")
    path = NOTEBOOK_DIR / name
    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "HDDGEO_NOTEBOOK_QUICK" in first_code.source, f"{name}: the first code cell must define the parameters"

    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.setenv("HDDGEO_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("HDDGEO_NOTEBOOK_DATASET", dataset)
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # ipykernel's debugger warns on frozen modules
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # run directories the notebooks create land under tmp_path

    client = nbclient.NotebookClient(nb, km=_kernel_manager(tmp_path / "kernels"), timeout=CELL_TIMEOUT,
                                     shutdown_kernel="immediate", resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    # raises CellExecutionError naming the failing cell; cleanup_kc: nbclient leaves a kernel it was handed
    # running unless told to stop it, even when a cell fails
    client.execute(cleanup_kc=True)
    seconds = time.perf_counter() - start

    outputs = list(_outputs(nb))
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    rich = [o for o in outputs if o.output_type in ("display_data", "execute_result")]
    png = sum("image/png" in o.data for o in rich)
    html = sum("<table" in o.data.get("text/html", "") for o in rich)
    want = EXPECTED[name]
    assert png >= want["png"], f"{name}: {png} inline PNG figures, expected at least {want['png']}"
    assert html >= want["html"], f"{name}: {html} HTML tables, expected at least {want['html']}"
    text = "".join(_text(o) for o in outputs)
    assert f"dataset: {dataset}" in text, f"{name}: the notebook did not run on {dataset}"
    for s in want["text"]:
        assert s in text, f"{name}: {s!r} not found in the outputs"
    assert "nan ± nan" not in text, f"{name}: an accuracy table has empty cells"
    print(f"{name}: executed in {seconds:.1f} s, {png} figures, {html} tables")


def test_notebooks_are_committed_without_outputs():
    paths = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    assert {p.name for p in paths} >= set(EXPECTED), f"missing notebooks in {NOTEBOOK_DIR}"
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            assert cell.outputs == [], f"{path.name} cell {i} has outputs; strip them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count; strip it"
        assert "widgets" not in nb.metadata, f"{path.name} carries widget state in its metadata"
