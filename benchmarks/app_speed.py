"""`slotlab app` round trips: click -> new picture, in a real browser (headless Chromium driven by Selenium), and
the server's share of it.

    python benchmarks/app_speed.py                                  # the model `slotlab demo` wrote
    python benchmarks/app_speed.py --checkpoint runs/tetro/model --rounds 30
    python benchmarks/app_speed.py --preset tetrominoes_demo        # an untrained model of a preset (same speed)

Three actions, each timed from the click to the moment the browser has the new picture (the ``<img>`` of the
page's output replaced and loaded; measured in the page with ``performance.now()``, so Selenium's own latency is
not counted):

- ``select``: click an object in the input image -> the segmentation overlay redrawn with its slot outlined;
- ``remove``: the "Remove slot" button -> the edit decoded (the rest of the image kept), the overlay, every slot's
  tile and both downloads rewritten;
- ``reset``: the "Reset edits" button -> the reconstruction decoded again, with the same outputs.

``server`` is the Python work of a ``remove`` request alone (the Explorer's edit and every output the page gets),
without Gradio or the browser. Medians over ``--rounds``; rounds during which other processes used more than
``--max-other`` of a core are dropped (see quiet.py). The target for an autoencoder model on 2 cores: <= 300 ms.
Needs the app extra and Debian's chromium + chromium-driver (``.ci/run`` installs them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quiet import Block, refuse_if_busy

# Arm a watch on an output of the page: window.__done gets the ms from the click's arrival in the page (a
# capturing listener) to the moment the output's <img> is replaced and its picture loaded. Timed in the page, so
# Selenium's own latency is not counted.
ARM = """
const selector = arguments[0];
const before = (document.querySelector(selector + " img") || {}).src;
window.__done = null;
window.__t0 = null;
document.addEventListener("click", () => { window.__t0 = performance.now(); }, {capture: true, once: true});
const observer = new MutationObserver(() => {
  const img = document.querySelector(selector + " img");
  if (!img || !img.src || img.src === before) return;
  observer.disconnect();
  const finish = () => { window.__done = performance.now() - window.__t0; };
  if (img.complete && img.naturalWidth) finish(); else img.addEventListener("load", finish, {once: true});
});
observer.observe(document.querySelector(selector), {subtree: true, childList: true, attributes: true});
"""


def untrained_model(preset: str, folder: Path) -> Path:
    from slotlab.checkpoints import save_trained
    from slotlab.config import load_config
    from slotlab.kinds import kind

    config = load_config(preset, ["data.train_size=64", "data.val_size=64"])
    torch.manual_seed(0)
    model = kind(config.task).model(config.model)
    save_trained(model, config, folder / "model")
    return folder / "model"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        raise SystemExit("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(60)
    return driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError("the page did not answer in time")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="model folder (default: the one `slotlab demo` wrote)")
    p.add_argument("--preset", help="time an untrained model of this preset instead")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-other", type=float, default=0.3, help="cores other processes (not the browser) may use")
    p.add_argument("--out", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from slotlab.app import Explorer, serve

    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint
    if args.preset:
        checkpoint = str(untrained_model(args.preset, Path(tempfile.mkdtemp(prefix="app-speed-"))))
    load = refuse_if_busy(args.max_other)
    if load is None:
        return 2
    port = free_port()
    page, ex = serve(checkpoint, port=port, block=False)
    assert isinstance(ex, Explorer), "the app could not open the model"
    driver = browser()
    try:
        driver.get(f"http://127.0.0.1:{port}")
        img = wait_for(lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, "#input-image img")
                                if e.size["width"]])[0]
        scene = ex.scene(0)
        k = int(torch.bincount(scene.masks.argmax(0).flatten(), minlength=scene.masks.shape[0]).argmax())
        ys, xs = (scene.masks.argmax(0) == k).nonzero(as_tuple=True)
        side, natural = min(img.size["width"], img.size["height"]), ex.resolution * ex.scale
        x, y = (int(xs[len(xs) // 2]) + 0.5) * ex.scale, (int(ys[len(ys) // 2]) + 0.5) * ex.scale
        offset = (x * side / natural - side / 2, y * side / natural - side / 2)

        def click_object():  # the page redraws the input image with every answer: find it again each time
            img = driver.find_element(By.CSS_SELECTOR, "#input-image img")
            ActionChains(driver).move_to_element_with_offset(img, *offset).click().perform()

        remove, reset = driver.find_element(By.ID, "remove"), driver.find_element(By.ID, "reset")

        def round_trip(selector: str, click) -> float:
            """ms from the click to the new picture of ``selector`` loaded in the page."""
            driver.execute_script(ARM, selector)
            click()
            return wait_for(lambda: driver.execute_script("return window.__done"))

        def select() -> float:
            return round_trip("#overlay", click_object)

        def edit(button) -> float:
            return round_trip("#decoded", button.click)

        for _ in range(2):  # warm-up (the browser's and the server's first requests)
            select(), edit(remove), edit(reset)
        times: dict[str, list[float]] = {"select": [], "remove": [], "reset": []}
        for _ in range(args.rounds):
            for name, ms in {"select": select(), "remove": edit(remove), "reset": edit(reset)}.items():
                times[name].append(ms)

        def server_remove():  # the Python work of one remove request, as the page's handler does it
            edited = ex.remove(scene, k)
            image = ex.decode(edited)
            ex.picture(image), ex.overlay(edited), ex.slot_tiles(edited), ex.save_image(image), ex.save_slots(edited)

        server = Block(server_remove, 5)
        server.run()
        rates, dropped = [], 0
        for _ in range(max(3, args.rounds // 4)):
            rate, others = server.run()
            if others <= args.max_other:
                rates.append(rate)
            else:
                dropped += 1
        result = {
            "model": f"{type(ex.model).__name__} ({ex.kind.name}) from {ex.checkpoint}",
            "resolution": ex.resolution,
            "threads": args.threads,
            "other_load_at_start": round(load, 2),
            "median_ms": {name: round(statistics.median(v), 1) for name, v in times.items()},
            "p90_ms": {name: round(sorted(v)[int(0.9 * (len(v) - 1))], 1) for name, v in times.items()},
            "server_remove_ms": round(1000 / statistics.median(rates), 1) if rates else float("nan"),
            "rounds": args.rounds,
            "server_blocks_dropped": dropped,
        }
    finally:
        driver.quit()
        page.close()
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
