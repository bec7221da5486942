"""Driving the Explorer in a headless browser (tests and ``benchmarks/explorer_timing.py``).

Uses Playwright for Python with the system Chromium (Debian's ``chromium`` package; no
``playwright install``). WebGL runs on SwiftShader (software), so the WebGL map and the 3D
molecule views really render without a GPU.

Map clicks are emitted through Plotly's event API on the graph div
(``gd.emit('plotly_click', ...)``), which is what a real click on a WebGL point produces; the
rest (callbacks, figure updates, WebGL rendering) runs in the browser as for a user.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--enable-unsafe-swiftshader"]
TIMEOUT_MS = 120_000
#: installed before the page's scripts: wraps ``Plotly.react``/``Plotly.newPlot`` as soon as
#: plotly.js defines ``window.Plotly`` and records in ``window.__mapPaint`` the time (ms since
#: navigation start) when the map's first plot promise resolved, i.e. the map is drawn
PAINT_HOOK = """
(() => {
  let plotly;
  const wrap = (P) => {
    for (const name of ['react', 'newPlot']) {
      const orig = P[name];
      if (typeof orig !== 'function' || orig.__wrapped) continue;
      const wrapped = function (gd, ...rest) {
        const out = orig.call(this, gd, ...rest);
        const isMap = gd && gd.closest && gd.closest('#map');
        if (isMap && out && out.then) out.then(() => { if (window.__mapPaint === undefined) window.__mapPaint = performance.now(); });
        return out;
      };
      wrapped.__wrapped = true;
      P[name] = wrapped;
    }
  };
  Object.defineProperty(window, 'Plotly', {
    configurable: true,
    get() { return plotly; },
    set(value) { plotly = value; if (value) wrap(value); },
  });
})();
"""


def chromium_path() -> str | None:
    """The system Chromium executable, or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_requirements() -> str | None:
    """Why browser runs are impossible here (None when Chromium and Playwright are present)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if chromium_path() is None:
        return "no system chromium (apt-get install chromium)"
    return None


@contextmanager
def serve(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve a Dash app (or any WSGI application, e.g. an ``ExplorerDispatcher``) in a
    background thread on a free port; yields its URL."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(host, 0, getattr(app, "server", app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="explorer-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextmanager
def browser_page(width: int = 1600, height: int = 1000) -> Iterator[tuple[Any, list[str]]]:
    """A headless Chromium page and the list collecting its console errors and page errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            page.add_init_script(PAINT_HOOK)
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            yield page, errors
        finally:
            browser.close()


# ------------------------------------------------------------------------------ page actions
GRAPH = "document.querySelector('#{id} .js-plotly-plot')"
#: JS predicate on a rendered trace: atom markers (a molecule's ``atoms`` trace, or a crystal's
#: per-element traces)
HAS_ATOMS = "(t => t.type === 'scatter3d' && t.mode === 'markers' && t._length > 0)"


def graph_state(page: Any, graph_id: str) -> dict[str, Any]:
    """Trace names and point counts of a rendered graph, and whether it has a WebGL canvas."""
    return page.evaluate(f"""() => {{
        const gd = {GRAPH.format(id=graph_id)};
        if (!gd || !gd._fullData) return null;
        return {{names: gd._fullData.map(t => t.name), lengths: gd._fullData.map(t => t._length || 0),
                 canvas: gd.querySelectorAll('canvas').length, title: (gd.layout.title || {{}}).text || ''}};
    }}""")


def wait_for_map(page: Any) -> float:
    """Until the map is drawn (its first Plotly plot finished, WebGL canvas present); returns
    that moment in seconds since the navigation started."""
    page.wait_for_function(f"""() => {{ const gd = {GRAPH.format(id='map')};
        return window.__mapPaint !== undefined && gd && gd._fullData && gd.querySelector('canvas') !== null; }}""")
    return page.evaluate("() => window.__mapPaint") / 1000.0


def click_map_point(page: Any, curve: int, point: int) -> None:
    """Emit a Plotly click on point ``point`` of map trace ``curve``."""
    page.evaluate(f"""() => {GRAPH.format(id='map')}.emit('plotly_click',
        {{points: [{{curveNumber: {int(curve)}, pointNumber: {int(point)}, pointIndex: {int(point)}}}]}})""")


def wait_for_structure(page: Any, previous_title: str | None = None) -> dict[str, Any]:
    """Until the structure panel shows a structure (3D scene with atoms: a molecule, or a
    crystal's unit cell) with a title other than ``previous_title``, and its reconstruction
    with the comparison line (no reconstruction running); returns the original's graph state."""
    wait_for_original(page, previous_title)
    page.wait_for_function(f"""() => {{
        const rec = {GRAPH.format(id='structure-recon')};
        return rec && rec._fullData && document.querySelector('#structure-score') !== null
               && document.querySelector('#structure-status').innerText === '';
    }}""")
    return graph_state(page, "structure-original")


def wait_for_original(page: Any, previous_title: str | None = None, crystal: bool = False) -> None:
    """Until the clicked structure itself is drawn (the original's 3D scene with atoms and a title
    other than ``previous_title``; for a crystal also its unit cell, 12 edges, and the lattice
    table), whether or not its reconstruction has arrived."""
    page.wait_for_function(f"""([prev, crystal]) => {{
        const gd = {GRAPH.format(id='structure-original')};
        if (!gd || !gd._fullData || !gd._fullLayout.scene || !gd._fullLayout.scene._scene) return false;
        const title = (gd.layout.title || {{}}).text || '';
        if (!gd._fullData.some({HAS_ATOMS}) || title === prev) return false;
        if (!crystal) return true;
        const cell = gd._fullData.find(t => t.name === 'cell');
        return cell && cell._length === 36 && document.querySelector('#structure-original-cell table') !== null;
    }}""", arg=[previous_title or "", crystal])


def wait_for_unit_cell(page: Any, previous_title: str | None = None) -> dict[str, Any]:
    """Until the structure panel shows a crystal: the original's unit cell (trace ``cell`` with
    its 12 edges) and atoms drawn, a title other than ``previous_title``, the StructureMatcher
    verdict and the lattice table beside it; returns the original's graph state plus ``edges``
    (edges of its cell trace) and ``elements`` (its per-element legend entries)."""
    wait_for_original(page, previous_title, crystal=True)
    page.wait_for_function("""() => {
        const score = document.querySelector('#structure-score');
        return score !== null && score.innerText.includes('StructureMatcher')
               && document.querySelector('#structure-status').innerText === '';
    }""")
    state = graph_state(page, "structure-original")
    state.update(page.evaluate(f"""() => {{ const gd = {GRAPH.format(id='structure-original')};
        const cell = gd._fullData.find(t => t.name === 'cell');
        return {{edges: Math.round(cell._length / 3),
                 elements: gd._fullData.filter(t => t.showlegend && {HAS_ATOMS}(t)).map(t => t.name)}}; }}"""))
    return state


def click_button(page: Any, button_id: str) -> None:
    page.click(f"#{button_id}")


def open_tab(page: Any, label: str) -> None:
    """Select a tab of the right-hand panel by its label (Structure, Interpolation, ...)."""
    page.locator("#tabs").get_by_text(label, exact=True).click()


def click_and_wait(page: Any, curve: int, point: int) -> None:
    """Click a map point (other than the currently clicked one) and wait until the page took it."""
    before = page.inner_text("#current-info")
    click_map_point(page, curve, point)
    page.wait_for_function("(prev) => document.querySelector('#current-info').innerText !== prev", arg=before)


def pick_points(page: Any, a: tuple[int, int], b: tuple[int, int]) -> None:
    """Click map point ``a`` (curve, point) and 'Set as A', then ``b`` and 'Set as B'."""
    for (curve, point), button in ((a, "set-a"), (b, "set-b")):
        click_and_wait(page, curve, point)
        click_button(page, button)
    page.wait_for_function("() => !document.querySelector('#picks-info').innerText.includes('—')")


def run_interpolation(page: Any, steps: int) -> int:
    """Open the Interpolation tab, interpolate A → B with ``steps`` frames and wait for the frames
    (and the path on the map); returns the number of frame chips shown."""
    open_tab(page, "Interpolation")
    page.fill("#interp-steps", str(steps))
    page.press("#interp-steps", "Enter")
    page.evaluate("() => { const el = document.querySelector('#interp-frames'); if (el) el.innerHTML = ''; }")
    click_button(page, "interp-run")
    page.wait_for_function(f"() => document.querySelectorAll('#interp-frames .frame-chip').length === {int(steps)}")
    page.wait_for_function(f"""() => {{ const gd = {GRAPH.format(id='map')};
        const t = gd._fullData.find(t => t.name === 'interpolation'); return t && t._length === {int(steps)}; }}""")
    page.wait_for_function(f"""() => {{ const gd = {GRAPH.format(id='interp-structure')};
        return gd && gd._fullData && gd._fullData.some({HAS_ATOMS}); }}""")
    return page.evaluate("() => document.querySelectorAll('#interp-frames .frame-chip').length")


def upload(page: Any, name: str, data: bytes) -> None:
    """Open the Upload tab and give a file to the upload input."""
    open_tab(page, "Upload")
    page.set_input_files("#upload input[type=file]", files=[{"name": name, "mimeType": "text/plain", "buffer": data}])


def overlay_length(page: Any, name: str) -> int:
    """Points in the map overlay trace called ``name``."""
    return page.evaluate(f"""() => {{ const gd = {GRAPH.format(id='map')};
        const t = gd._fullData.find(t => t.name === {json.dumps(name)}); return t ? (t._length || 0) : -1; }}""")


def screenshot(page: Any, name: str) -> None:
    """Save ``docs/screenshots/<name>.png`` when ``ATOMARCH_SCREENSHOTS=1``."""
    if os.environ.get("ATOMARCH_SCREENSHOTS") != "1":
        return
    out = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)  # let WebGL finish drawing
    page.screenshot(path=str(out / f"{name}.png"))


def measure(page: Any, url: str, points: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (0, 2)),
            steps: int = 10) -> dict[str, float]:
    """Time (s) to first paint of the map (from navigation start, see :data:`PAINT_HOOK`),
    click → the clicked structure drawn, click → structure shown (both 3D views drawn, the
    reconstruction's comparison line), and a ``steps``-frame interpolation
    (button → frames, path on the map and first frame shown), in a fresh page load of ``url``.

    Args:
        points: three distinct (trace, point) map points: the clicked one, then A and B.
    """
    page.goto(url)
    first_paint = wait_for_map(page)
    t0 = time.perf_counter()
    click_map_point(page, *points[0])
    wait_for_original(page)
    original = time.perf_counter() - t0
    wait_for_structure(page)
    click = time.perf_counter() - t0
    pick_points(page, points[1], points[2])
    t0 = time.perf_counter()
    run_interpolation(page, steps)
    interp = time.perf_counter() - t0
    return {"map_first_paint_s": round(first_paint, 3), "click_to_original_s": round(original, 3),
            "click_to_structure_s": round(click, 3),
            f"interpolation_{steps}_frames_s": round(interp, 3)}


def measure_crystal(page: Any, url: str, point: tuple[int, int] = (0, 0)) -> dict[str, float]:
    """For a crystal model: time (s) to first paint of the map (as :func:`measure`), click →
    unit cell shown (:func:`wait_for_original`: the cell box, its atoms and the lattice table)
    and click → reconstruction shown (:func:`wait_for_unit_cell`: also the reconstruction and
    its StructureMatcher verdict), in a fresh page load of ``url``."""
    page.goto(url)
    first_paint = wait_for_map(page)
    t0 = time.perf_counter()
    click_map_point(page, *point)
    wait_for_original(page, crystal=True)
    cell = time.perf_counter() - t0
    wait_for_unit_cell(page)
    recon = time.perf_counter() - t0
    return {"map_first_paint_s": round(first_paint, 3), "click_to_unit_cell_s": round(cell, 3),
            "click_to_reconstruction_s": round(recon, 3)}