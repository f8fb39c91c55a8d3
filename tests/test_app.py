"""`slotlab app`: the Explorer's logic without a browser, then the page itself in headless Chromium (Selenium):
it loads, clicking an object selects its slot, removing it changes the picture, and the decoded image equals
`slotlab edit`'s for the same edit."""

from __future__ import annotations

import os
import shutil
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.app import Explorer
from slotlab.checkpoints import save_trained
from slotlab.config import DataConfig, ExperimentConfig
from slotlab.editing import edit_image, grow_region
from slotlab.errors import DataError
from slotlab.models import SlotAutoencoder, SlotAutoencoderConfig
from slotlab.models.base import Sampling

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    model = SlotAutoencoder(SlotAutoencoderConfig(
        resolution=32, num_slots=4, num_iterations=2, slot_dim=16, mlp_hidden=16, encoder_channels=[8, 8],
        encoder_strides=[2, 1], decoder_broadcast=8, decoder_channels=[8, 8], decoder_strides=[2, 2]))
    config = ExperimentConfig(name="tiny", model=model.config, data=DataConfig(
        dataset="tetrominoes", train_size=8, val_size=6, crop=[2, 2, 32, 32], resolution=32))
    save_trained(model, config, root / "model")
    return root / "model"


def a_pixel_of(explorer: Explorer, scene, slot: int) -> tuple[int, int]:
    """Screen (x, y) at the middle of a slot's segment."""
    ys, xs = (scene.masks.argmax(0) == slot).nonzero(as_tuple=True)
    i = len(ys) // 2
    return int(xs[i]) * explorer.scale + explorer.scale // 2, int(ys[i]) * explorer.scale + explorer.scale // 2


def largest_slot(scene) -> int:
    return int(torch.bincount(scene.masks.argmax(0).flatten(), minlength=scene.masks.shape[0]).argmax())


def test_explorer_scenes_selection_edits_and_files(model_dir, tmp_path):
    ex = Explorer(model_dir)
    scene = ex.scene(2)
    assert scene.slots.shape == (4, 16) and scene.masks.shape == (4, 32, 32) and ex.scale == 8
    k = largest_slot(scene)
    assert ex.slot_at(scene, *a_pixel_of(ex, scene, k)) == k
    edited = ex.remove(scene, k)
    assert edited.current.shape == (3, 16) and edited.history == [f"removed slot {k}"]
    # the page's decode is `slotlab edit`'s: remove the slot, keep the rest of the image (grow 2), same seed
    reference = edit_image(ex.model, scene.image, "remove", slot=k, keep_rest=True, grow=2, seed=0)
    torch.testing.assert_close(ex.decode(edited, keep_rest=True)[None], reference.kept.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(ex.decode(edited, keep_rest=False)[None], reference.after.cpu(), rtol=0, atol=0)
    kept = ex.keep(scene, [0, 1])
    assert kept.current.shape == (2, 16)
    swapped = ex.swap(scene, 0, ex.scene(3), 1)
    torch.testing.assert_close(swapped.current[0], ex.scene(3).slots[1])
    with pytest.raises(DataError, match="concept library"):
        ex.insert_concept(scene, 0)
    with pytest.raises(DataError, match="slot frames"):
        ex.move(scene, 0, 0.5, 0.5)
    with pytest.raises(DataError, match="scene 99 does not exist"):
        ex.scene(99)
    assert Image.open(ex.save_image(ex.decode(edited))).size == (32, 32)
    from safetensors.torch import load_file

    saved = load_file(str(ex.save_slots(edited)))
    assert torch.equal(saved["slots"], edited.current)
    # uploads: another size is cropped and resized as the model was trained, and says so; a non-image says so
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(big)
    uploaded = ex.upload(big)
    assert uploaded.image.shape == (3, 32, 32) and "resized 70x50 -> 32x32" in uploaded.note
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(DataError, match="not an image"):
        ex.upload(text)


def test_explorer_browses_a_folder_of_images(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 60), (32, 32), (50, 50)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    ex = Explorer(model_dir, data=tmp_path)
    assert len(ex.dataset) == 3
    scene = ex.scene(0)
    assert scene.masks.shape == (4, 32, 32)
    k = largest_slot(scene)
    assert ex.remove(scene, k).history == [f"removed slot {k}"]


def test_explorer_refuses_what_it_cannot_serve(model_dir, tmp_path):
    from slotlab.models.image_autoencoder import ImageAutoencoder, ImageAutoencoderConfig

    ae = ImageAutoencoder(ImageAutoencoderConfig(resolution=16, block_out_channels=[8, 16], norm_num_groups=4))
    ae.save_pretrained(tmp_path / "ae")
    with pytest.raises(DataError, match="slotlab app"):
        Explorer(tmp_path / "ae")


def test_concepts_from_a_library_and_libraries_that_cannot_serve(model_dir, tmp_path):
    from slotlab.concepts import ConceptLibrary, build_library

    ex = Explorer(model_dir)
    library = build_library(ex.model, ex.dataset, k=3, progress=False, mask_size=8)
    library.save(tmp_path / "lib.safetensors")
    ex = Explorer(model_dir, library=tmp_path / "lib.safetensors")
    scene = ex.scene(0)
    inserted = ex.insert_concept(scene, 1)
    row = int(library.nearest_members(1)[0])
    assert inserted.current.shape == (5, 16) and torch.equal(inserted.current[-1], library.slots[row])
    assert inserted.current_masks.shape == (5, 32, 32) and ex.decode(inserted).shape == (3, 32, 32)
    # an empty library, or a file that is not one: the scenes still serve, the page says why concepts cannot
    empty = ConceptLibrary(**{k: v[:0] for k, v in library.tensors().items()}, metadata=library.metadata)
    empty.save(tmp_path / "empty.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    for name, why in [("empty", "is empty"), ("junk", "not a readable")]:
        ex = Explorer(model_dir, library=tmp_path / f"{name}.safetensors")
        assert why in ex.library_error and ex.scene(0).slots.shape == (4, 16)
        with pytest.raises(DataError, match=why):
            ex.insert_concept(ex.scene(0), 0)


def test_lsd_models_sample_their_edits_with_the_rest_kept(tmp_path):
    from tiny import tiny_lsd

    model = tiny_lsd(tmp_path)
    save_trained(model, ExperimentConfig(name="lsd", task="lsd", model=model.config, data=DataConfig(
        dataset="tetrominoes", train_size=4, val_size=4, crop=[2, 2, 32, 32], resolution=16)), tmp_path / "lsd")
    ex = Explorer(tmp_path / "lsd")
    scene = ex.scene(1)
    assert scene.masks.shape == (3, 16, 16) and ex.edits
    edited = ex.remove(scene, 0)
    told: list[tuple[int, int]] = []
    image = ex.decode(edited, steps=3, seed=0, keep_rest=True, progress=lambda i, n: told.append((i, n)))
    reference = edit_image(ex.model, scene.image, "remove", slot=0, keep_rest=True, grow=2, sampling=Sampling(steps=3))
    torch.testing.assert_close(image[None], reference.kept.cpu())
    assert told and told[-1][0] == told[-1][1] == 3  # the page's progress bar follows the sampler
    unchanged = ~grow_region(edited.changed[None], 2)[0]
    torch.testing.assert_close(image[:, unchanged], scene.image[:, unchanged])  # keep-rest: untouched elsewhere


def test_set_prediction_models_show_their_objects(tmp_path):
    from slotlab.models.set_prediction import SlotSetPredictor, SlotSetPredictorConfig

    model = SlotSetPredictor(SlotSetPredictorConfig(resolution=32, num_slots=4, slot_dim=8, mlp_hidden=8,
                                                    encoder_channels=[4, 4], encoder_strides=[2, 2], head_hidden=8))
    save_trained(model, ExperimentConfig(name="sp", task="set_prediction", model=model.config,
                                         data=DataConfig(dataset="clevr", train_size=4, val_size=4, resolution=32)),
                 tmp_path / "sp")
    ex = Explorer(tmp_path / "sp")
    rows = ex.predictions(ex.scene(0))
    assert len(rows) == 4 and rows[0][1] >= rows[-1][1] and "xyz" in rows[0][3]
    with pytest.raises(DataError, match="does not draw scenes"):
        ex.remove(ex.scene(0), 0)


# ------------------------------------------------------------------------------------------- in a browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def _wait(condition, timeout: float = 60.0, what: str = "the page"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_page_in_a_browser(model_dir, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from slotlab.app import serve

    port = _free_port()
    page, ex = serve(str(model_dir), port=port, block=False)
    try:
        browser.get(f"http://127.0.0.1:{port}")
        _wait(lambda: "slotlab" in browser.title.lower() or browser.find_elements(By.ID, "model"), what="the title")
        img = _wait(lambda: [e for e in browser.find_elements(By.CSS_SELECTOR, "#input-image img") if e.size["width"]],
                    what="the input image")[0]
        scene = ex.scene(0)  # the page opens scene 0
        k = largest_slot(scene)
        x, y = a_pixel_of(ex, scene, k)
        # where the picture is drawn inside its element (scaled to fit, centred: object-fit contain)
        w, h = img.size["width"], img.size["height"]
        natural = ex.resolution * ex.scale
        side = min(w, h)
        dx, dy = (x + 0.5) * side / natural - side / 2, (y + 0.5) * side / natural - side / 2
        ActionChains(browser).move_to_element_with_offset(img, dx, dy).click().perform()

        def selected() -> list[int]:
            value = browser.find_element(By.CSS_SELECTOR, "#selected-slot input").get_attribute("value")
            return [int(float(value))] if value not in (None, "", "-1") else []

        assert _wait(selected, what="the selected slot") == [k]
        decoded = browser.find_element(By.CSS_SELECTOR, "#decoded img").get_attribute("src")
        browser.find_element(By.ID, "remove").click()
        _wait(lambda: f"removed slot {k}" in browser.find_element(By.ID, "message").text, what="the edit")
        _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#decoded img").get_attribute("src") != decoded,
              what="the new picture")
        # what the page decoded (its download file) is `slotlab edit`'s image for the same edit, pixel for pixel
        reference = edit_image(ex.model, scene.image, "remove", slot=k, keep_rest=True, grow=2, seed=0)
        expected = (reference.kept[0].clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 0))
        got = np.asarray(Image.open(ex.files / "edited.png"))
        np.testing.assert_array_equal(got, expected.numpy())
        # bad input stays in the page: an unknown scene is a message, and the server keeps serving
        field = browser.find_element(By.CSS_SELECTOR, "#scene-index input")
        field.clear()
        field.send_keys("999")
        browser.find_element(By.ID, "load-scene").click()
        _wait(lambda: "does not exist" in browser.find_element(By.ID, "message").text, what="the error message")
        field.clear()
        field.send_keys("1")
        browser.find_element(By.ID, "load-scene").click()
        _wait(lambda: "scene 1" in browser.find_element(By.ID, "message").text, what="the next scene")
    finally:
        page.close()


def test_a_port_out_of_range_is_one_line(capsys):
    from slotlab.cli.main import main

    assert main(["app", "--port", "70000"]) == 2
    assert capsys.readouterr().err == "slotlab: error: --port must be <= 65535, got 70000\n"
    assert main(["app", "--host", "nosuch.invalid"]) == 2  # .invalid never resolves (RFC 2606)
    err = capsys.readouterr().err
    assert err.startswith("slotlab: error: --host nosuch.invalid: cannot resolve it") and err.count("\n") == 1
